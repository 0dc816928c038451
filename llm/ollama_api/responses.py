"""The API's wire forms: error bodies, NDJSON lines, Ollama's timestamps and durations.

A client error is raised as `NotFound` / `TooLarge` (or `llm.api_requests.BadRequest`)
from anywhere in a handler and answered by the app's exception handlers with
`{"error": ...}` (and the offending `field`), never a 500.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

NDJSON = "application/x-ndjson"


class NotFound(Exception):
    """404: a model this server does not serve."""


class TooLarge(Exception):
    """413: a prompt over MODEL_SERVER_MAX_PROMPT_CHARS."""


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ns(ms: float) -> int:
    """Milliseconds as the nanoseconds Ollama reports durations in."""
    return int(ms * 1_000_000)


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": message} | ({"field": field} if field else {})
    return JSONResponse(body, status_code=status)


def line(obj: dict) -> bytes:
    """One NDJSON line of a streamed answer."""
    return (json.dumps(obj) + "\n").encode()


async def bad_request(request: Request, exc: Exception) -> Response:
    return error(400, str(exc), getattr(exc, "field", None))


async def not_found(request: Request, exc: Exception) -> Response:
    return error(404, str(exc))


async def too_large(request: Request, exc: Exception) -> Response:
    return error(413, str(exc))
