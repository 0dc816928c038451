"""Running one generation for a request: in a worker thread, answered whole or streamed as NDJSON.

Why a worker thread: llama.cpp holds the thread while it generates (releasing
the GIL), so the event loop stays free to answer `/api/version` and to notice a
client that went away. Every running generation has a cancel flag: a client
that disconnects (or times out) sets it and frees the model at the next token;
a stopping server sets them all (`cancel_all`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llm.api_requests import ChatRequest, GenerateRequest, parse
from llm.engine import Cancelled, EngineError, Generation
from llm.ollama_api.model_info import Limits, ModelInfo
from llm.ollama_api.responses import NDJSON, NotFound, TooLarge, error, line, now, ns
from observability import metrics
from observability.logs import get_logger

log = get_logger("llm.ollama_api")
DISCONNECT_POLL_SECONDS = 0.5  # how often a whole-answer request checks that its client is still there

#: (on_delta or None, cancel flag) -> the finished generation; runs in the worker thread
Run = Callable[[Callable[[str], None] | None, threading.Event], Generation]
#: text -> the route's part of an answer ({"message": ...} for chat, {"response": ...} for generate)
Piece = Callable[[str], dict]


class Generations:
    """The server's generations: request validation, and their cancel flags while they run."""

    def __init__(self, model: ModelInfo, limits: Limits) -> None:
        self.model = model
        self.limits = limits
        self.active: set[threading.Event] = set()  # cancel flags of running generations

    async def read(self, request: Request, schema):
        """The validated body of a generation request, for the served model and within the limits."""
        body = parse(schema, await request.body())
        if not self.model.matches(body.model):
            raise NotFound(f"model '{body.model}' not found (this server serves '{self.model.name}')")
        chars = body.prompt_chars()
        if chars > self.limits.max_prompt_chars:
            raise TooLarge(
                f"prompt too long: {chars} characters; the limit is MODEL_SERVER_MAX_PROMPT_CHARS={self.limits.max_prompt_chars}"
            )
        return body

    async def respond(
        self, request: Request, body: ChatRequest | GenerateRequest, run: Run, piece: Piece, route: str
    ) -> Response:
        """Run the generation; one JSON object, or NDJSON deltas then the final line when `body.stream`."""
        answer = _Answer(body.model, piece, route)
        if body.stream:
            return StreamingResponse(self._stream(run, answer), media_type=NDJSON)
        return await self._whole(request, run, answer)

    async def _whole(self, request: Request, run: Run, answer: _Answer) -> Response:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        self.active.add(cancel)
        job = loop.run_in_executor(None, run, None, cancel)
        try:
            while not job.done():
                # a client that gave up (timeout) frees the model for the next request
                await asyncio.wait({job}, timeout=DISCONNECT_POLL_SECONDS)
                if not job.done() and await request.is_disconnected():
                    cancel.set()
            gen = job.result()
        except Cancelled:
            log.info("generation cancelled: client went away", route=answer.route)
            return error(499, "client closed the request")
        except EngineError as exc:
            return error(400, str(exc))
        finally:
            if not job.done():  # this request was cancelled (server stopping)
                cancel.set()
            self.active.discard(cancel)
        out = answer.final(gen)
        out.update(answer.piece(gen.text))
        return JSONResponse(out)

    async def _stream(self, run: Run, answer: _Answer) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        queue: asyncio.Queue = asyncio.Queue()

        def on_delta(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        self.active.add(cancel)
        job = loop.run_in_executor(None, run, on_delta, cancel)
        job.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (text := await queue.get()) is not None:
                yield line(answer.delta(text))
            try:
                yield line(answer.final(job.result()))
            except (EngineError, Cancelled) as exc:
                yield line({"error": str(exc)})
        finally:  # also when the client disconnects mid-stream
            cancel.set()
            self.active.discard(cancel)

    def cancel_all(self) -> None:
        """Stopping: end running generations at their next token."""
        for flag in list(self.active):
            flag.set()


class _Answer:
    """The parts of one request's answer: its deltas and its final object (timings, token counts)."""

    def __init__(self, model: str, piece: Piece, route: str) -> None:
        self.received = time.monotonic()
        self.model = model
        self.piece = piece
        self.route = route

    def delta(self, text: str) -> dict:
        return {"model": self.model, "created_at": now(), **self.piece(text), "done": False}

    def final(self, gen: Generation) -> dict:
        total_ms = (time.monotonic() - self.received) * 1000
        metrics.MODEL_TOKENS.labels("prompt").inc(gen.prompt_tokens or 0)
        metrics.MODEL_TOKENS.labels("completion").inc(gen.completion_tokens or 0)
        log.info(
            "generated",
            route=self.route,
            prompt_tokens=gen.prompt_tokens,
            cached_tokens=gen.cached_tokens,
            completion_tokens=gen.completion_tokens,
            prompt_ms=round(gen.prompt_ms),
            eval_ms=round(gen.eval_ms),
            total_ms=round(total_ms),
            done_reason=gen.done_reason,
        )
        return {
            "model": self.model,
            "created_at": now(),
            **self.piece(""),
            "done": True,
            "done_reason": gen.done_reason,
            "total_duration": ns(total_ms),
            "load_duration": 0,
            "prompt_eval_count": gen.prompt_tokens,
            "prompt_eval_duration": ns(gen.prompt_ms),
            "eval_count": gen.completion_tokens,
            "eval_duration": ns(gen.eval_ms),
        }
