"""An ASGI middleware that refuses request bodies over a byte limit (413) before reading them.

Without it a 50 MB chat request was read whole, decoded and only then refused
(18-24 s and about 1.1 GB of RSS each). A declared `Content-Length` over the
limit is answered at once, without reading a byte of the body; a chunked body
is counted while it arrives and answered the moment it passes the limit. The
body that was read (at most the limit) is handed on to the app unchanged.

The 413 closes the connection (`Connection: close`), so the server stops
reading a body it will never use; clients that read the answer while sending
(curl, httpx) see the 413.
"""

from __future__ import annotations

import json

from observability.logs import get_logger

log = get_logger(__name__)

SETTING = "MODEL_SERVER_MAX_BODY_BYTES"


class BodyLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == "invalid":
            await _answer(send, 400, "invalid Content-Length header")
            return
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, f"declares {declared} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending the whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send, f"passed {self.max_bytes} bytes while streaming")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope, send, how: str) -> None:
        log.warning("request body too large", path=scope.get("path"), body=how, limit=self.max_bytes)
        await _answer(send, 413, f"request body too large: it {how}; the limit is {SETTING}={self.max_bytes}")


def _content_length(scope) -> int | str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return "invalid"
            return n if n >= 0 else "invalid"
    return None


def _replay(body: bytes, receive):
    """A `receive` that yields the already-read body once, then the connection's own events
    (a disconnect while generating, which cancels the generation)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
