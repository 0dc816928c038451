"""Request bodies: Content-Encoding, with the size limit counted after decompression.

A gzip bomb (a few KiB that inflate to gigabytes) must not exhaust memory, so
bodies are inflated incrementally and abandoned as soon as the output passes
`OTLP_MAX_BODY_BYTES`; the limit is never exceeded by more than one chunk.
"""

from __future__ import annotations

import io
import zlib

CHUNK = 256 * 1024
ENCODINGS = ("identity", "gzip", "deflate", "zstd")


class BodyTooLarge(ValueError):
    """More than the limit, counted after decompression."""


class BadEncoding(ValueError):
    """An unknown Content-Encoding, or a body that does not decompress."""


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """Decode `data` per its Content-Encoding; BodyTooLarge past `limit`, BadEncoding when corrupt."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        if len(data) > limit:
            raise BodyTooLarge(f"body of {len(data)} bytes exceeds the {limit}-byte limit")
        return data
    if enc == "gzip":
        return _inflate(data, zlib.decompressobj(16 + zlib.MAX_WBITS), limit, enc)
    if enc == "deflate":
        # RFC 9110 deflate is the zlib format (what the SDK sends); some clients send raw deflate
        wbits = (
            zlib.MAX_WBITS
            if data[:1] and (data[0] & 0x0F) == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            else -zlib.MAX_WBITS
        )
        return _inflate(data, zlib.decompressobj(wbits), limit, enc)
    if enc == "zstd":
        return _unzstd(data, limit)
    raise BadEncoding(f"unsupported Content-Encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")


def _inflate(data: bytes, d, limit: int, enc: str) -> bytes:
    out = bytearray()
    pending = data
    try:
        while True:
            chunk = d.decompress(pending, CHUNK)
            out += chunk
            if len(out) > limit:
                raise BodyTooLarge(f"body exceeds the {limit}-byte limit after {enc} decompression")
            pending = d.unconsumed_tail
            if d.eof:
                break
            if not pending:
                if not chunk:  # no more input and no more output: truncated stream
                    raise BadEncoding(f"truncated {enc} body")
                continue
    except zlib.error as exc:
        raise BadEncoding(f"corrupt {enc} body: {exc}") from None
    return bytes(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    import zstandard

    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            out = reader.read(limit + 1)
            while len(out) <= limit:
                more = reader.read(limit + 1 - len(out))
                if not more:
                    break
                out += more
    except zstandard.ZstdError as exc:
        raise BadEncoding(f"corrupt zstd body: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"body exceeds the {limit}-byte limit after zstd decompression")
    return out
