"""OTLP/HTTP: `POST /v1/traces|logs|metrics` (protobuf or JSON) and `GET /health` (Starlette on uvicorn).

Answers, as the OTLP specification and issue 11 list them, each in the
request's content type:
- 200 with an empty Export*ServiceResponse once everything is durably published;
- 200 with partial_success (rejected count, English message) when some items could not be mapped;
- 400 (google.rpc.Status body) for a body that does not decode or an unknown Content-Encoding;
- 405 for another method, 415 for another content type, 413 past OTLP_MAX_BODY_BYTES after decompression;
- 503 with Retry-After when the transport cannot accept: the exporter retries, nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
import time

from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest import otlp_json
from ingest.bodies import BadEncoding, BodyTooLarge, decompress
from ingest.publish import Publisher, TransportUnavailable
from ingest.signals import SIGNALS, Signal
from ingest.workers import Mapper
from observability import metrics
from observability.logs import get_logger
from observability.settings import Settings

log = get_logger(__name__)

PROTOBUF, JSON = "application/x-protobuf", "application/json"
RETRY_AFTER_SECONDS = 1
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # 405 comes from us, with a Status body
MIN_FREE_BYTES = 1024 * 1024  # the local log needs room to append


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _encode(message: Message, media: str) -> bytes:
    return otlp_json.to_json(message) if media == JSON else message.SerializeToString()


def status_response(http_status: int, code: int, message: str, media: str, headers: dict | None = None) -> Response:
    """A google.rpc.Status body, as the OTLP spec asks for every 4xx and 5xx answer."""
    media = media if media in (PROTOBUF, JSON) else JSON
    metrics.REJECTS.labels(metrics.INGEST, f"http_{http_status}").inc()
    body = _encode(status_pb2.Status(code=code, message=message), media)
    return Response(body, status_code=http_status, media_type=media, headers=headers)


class Receiver:
    """The request handling shared by the routes; CPU work runs on the event loop, publishing on the publisher thread."""

    def __init__(self, settings: Settings, publisher: Publisher, mapper: Mapper) -> None:
        self.settings = settings
        self.publisher = publisher
        self.mapper = mapper
        self.limit = settings.otlp_max_body_bytes
        self.requests = 0

    async def export(self, request: Request, signal: Signal) -> Response:
        media = _media_type(request.headers.get("content-type"))
        if request.method != "POST":
            return status_response(
                405,
                code_pb2.UNIMPLEMENTED,
                f"{request.method} is not allowed on {signal.path}: use POST",
                media,
                {"Allow": "POST"},
            )
        if media not in (PROTOBUF, JSON):
            return status_response(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"unsupported Content-Type {media or '(none)'!r}: use {PROTOBUF} or {JSON}",
                JSON,
            )
        try:
            raw = await self._read(request)
            body = decompress(raw, request.headers.get("content-encoding", "identity"), self.limit)
        except BodyTooLarge as exc:
            return status_response(413, code_pb2.RESOURCE_EXHAUSTED, str(exc), media)
        except BadEncoding as exc:
            return status_response(400, code_pb2.INVALID_ARGUMENT, str(exc), media)
        except ClientDisconnect:
            return Response(status_code=400)
        with self.publisher.expecting() as expected:  # the publisher may wait for it (group commit)
            return await self._map_and_publish(signal, media, body, expected)

    async def _map_and_publish(self, signal: Signal, media: str, body: bytes, expected) -> Response:
        try:
            mapped = await asyncio.wrap_future(
                self.mapper.submit(signal.name, media, body, signal.topic_of(self.settings))
            )
        except (DecodeError, otlp_json.OtlpJsonError) as exc:
            return status_response(
                400,
                code_pb2.INVALID_ARGUMENT,
                f"cannot decode the body as {signal.request_type.DESCRIPTOR.name} ({media}): {exc}",
                media,
            )
        except Exception as exc:  # a mapping bug or a dead worker must cost one request, never the receiver
            log.exception("mapping failed", signal=signal.name)
            return status_response(500, code_pb2.INTERNAL, f"internal error mapping the request: {exc}", media)
        if mapped.records or mapped.dead_letters:
            try:
                await asyncio.wrap_future(self.publisher.publish(mapped.records, mapped.dead_letters, expected))
            except TransportUnavailable as exc:
                return status_response(
                    503,
                    code_pb2.UNAVAILABLE,
                    f"the transport cannot accept data now: {exc}",
                    media,
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
        self.requests += 1
        return Response(_encode(signal.response(mapped), media), status_code=200, media_type=media)

    async def _read(self, request: Request) -> bytes:
        """The raw body, refusing early what is over the limit even before decompression."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            raise BodyTooLarge(f"body of {declared} bytes exceeds the {self.limit}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLarge(f"body exceeds the {self.limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def health(self) -> tuple[bool, str]:
        """Can the receiver publish? The last flush succeeded, and the local log has room."""
        if not self.publisher.healthy:
            return False, f"transport unavailable: {self.publisher.stats.last_error}"
        if self.settings.transport == "local":
            root = self.settings.log_dir
            try:
                st = os.statvfs(root)
            except OSError as exc:
                return False, f"local log {root} unusable: {exc}"
            free = st.f_bavail * st.f_frsize
            if free < MIN_FREE_BYTES or not os.access(root, os.W_OK):
                return False, f"local log {root} is not writable ({free} bytes free)"
        return True, "ok"


def create_app(settings: Settings, publisher: Publisher, mapper: Mapper) -> Starlette:
    receiver = Receiver(settings, publisher, mapper)
    started = time.monotonic()

    def route(signal: Signal) -> Route:
        async def endpoint(request: Request) -> Response:
            return await receiver.export(request, signal)

        return Route(signal.path, endpoint, methods=ANY_METHOD, name=signal.name)

    async def health(request: Request) -> Response:
        ok, detail = receiver.health()
        s = publisher.stats
        body = {
            "status": "ok" if ok else "unavailable",
            "detail": detail,
            "transport": settings.transport,
            "records": s.records,
            "dead_letters": s.dead_letters,
            "flushes": s.flushes,
            "failures": s.failures,
            "uptime_s": round(time.monotonic() - started, 1),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    app = Starlette(routes=[*(route(s) for s in SIGNALS), Route("/health", health, methods=["GET"])])
    app.state.receiver = receiver
    return app
