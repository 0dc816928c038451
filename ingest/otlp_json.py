"""OTLP/JSON <-> protobuf messages, as the OTLP specification defines the JSON encoding.

protobuf's own `json_format` implements the proto3 JSON mapping, which OTLP
follows except in one place: trace and span ids are hex strings (any case),
not base64. So decoding walks the decoded JSON along the message descriptor,
turns the hex ids into base64 (the only change), and hands the result to
`json_format.ParseDict`, which already takes lowerCamelCase or snake_case keys,
enums as integers or names, 64-bit integers as strings or numbers, and ignores
unknown fields. Encoding is the reverse: `MessageToDict`, then base64 ids back
to hex. Any other `bytes` field (an AnyValue's `bytesValue`) stays base64.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# bytes fields that OTLP/JSON writes as hex: spans, links, log records, exemplars
ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
MAX_DEPTH = 64  # AnyValue nests (arrays, kvlists); a hostile body must not blow the stack


class OtlpJsonError(ValueError):
    """The body is not OTLP/JSON for this message; `str(exc)` says where."""


def parse(data: bytes, message: Message) -> Message:
    """Decode an OTLP/JSON body into `message` (filled in place and returned)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OtlpJsonError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise OtlpJsonError(f"the body must be a JSON object, got {type(obj).__name__}")
    _hex_ids_to_base64(obj, message.DESCRIPTOR, "", 0)
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True, max_recursion_depth=MAX_DEPTH)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise OtlpJsonError(str(exc)[:500]) from None
    return message


def to_dict(message: Message) -> dict[str, Any]:
    """A message -> its OTLP/JSON object (lowerCamelCase, hex ids, enums as integers)."""
    obj = json_format.MessageToDict(message, use_integers_for_enums=True)
    _base64_ids_to_hex(obj, message.DESCRIPTOR)
    return obj


def to_json(message: Message) -> bytes:
    return orjson.dumps(to_dict(message))


def _fields(desc: Descriptor) -> dict[str, FieldDescriptor]:
    cached = _FIELD_CACHE.get(desc.full_name)
    if cached is None:
        cached = {}
        for f in desc.fields:
            cached[f.name] = f
            cached[f.json_name] = f
        _FIELD_CACHE[desc.full_name] = cached
    return cached


_FIELD_CACHE: dict[str, dict[str, FieldDescriptor]] = {}


def _hex_ids_to_base64(obj: dict, desc: Descriptor, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise OtlpJsonError(f"{path or 'body'}: nested deeper than {MAX_DEPTH} levels")
    fields = _fields(desc)
    for key, value in obj.items():
        f = fields.get(key)
        if f is None or value is None:
            continue
        where = f"{path}.{key}" if path else key
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            sub = f.message_type
            if f.is_repeated:
                if not isinstance(value, list):
                    raise OtlpJsonError(f"{where}: must be an array")
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        _hex_ids_to_base64(item, sub, f"{where}[{i}]", depth + 1)
            elif isinstance(value, dict):
                _hex_ids_to_base64(value, sub, where, depth + 1)
        elif f.type == FieldDescriptor.TYPE_BYTES and f.name in ID_FIELDS:
            obj[key] = _hex_to_base64(value, where)


def _hex_to_base64(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise OtlpJsonError(f"{where}: must be a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpJsonError(f"{where}: {value[:40]!r} is not a hex string") from None
    return base64.b64encode(raw).decode("ascii")


def _base64_ids_to_hex(obj: dict, desc: Descriptor) -> None:
    fields = _fields(desc)
    for key, value in obj.items():
        f = fields.get(key)
        if f is None:
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    _base64_ids_to_hex(item, f.message_type)
        elif f.type == FieldDescriptor.TYPE_BYTES and f.name in ID_FIELDS:
            with contextlib.suppress(binascii.Error, ValueError):
                obj[key] = base64.b64decode(value).hex()
