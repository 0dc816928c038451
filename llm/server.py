"""The Ollama HTTP API over one local llama.cpp model (what `python -m llm.serve` runs).

Only what this platform and the official `ollama` Python client need:
`/api/chat`, `/api/generate` (streaming NDJSON or one JSON object),
`/api/tags`, `/api/ps`, `/api/show`, `/api/pull` (a no-op for the served
model), `/api/version` and `/`. Generation runs in a worker thread; the event
loop only shuttles bytes, so `/api/version` answers while a summary is being
written. Durations are nanoseconds and token counts come from llama.cpp, as
Ollama reports them.

Hostile or broken requests are the client's error, never a 500: bodies over
MODEL_SERVER_MAX_BODY_BYTES get 413 before they are read (llm.body_limit), every
field's type is checked (400 naming the field, llm.api_requests), and prompts
over MODEL_SERVER_MAX_PROMPT_CHARS get 413 before llama.cpp tokenises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from llm.api_requests import BadRequest, ChatRequest, GenerateRequest, ModelRequest, parse
from llm.body_limit import BodyLimit
from llm.engine import Cancelled, EngineError, Generation, LlamaEngine, request_options
from llm.model_files import MODELS, ModelFileError, get_spec
from observability import metrics
from observability.logs import get_logger

log = get_logger(__name__)

SERVER_VERSION = "0.1.0"
NDJSON = "application/x-ndjson"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": message} | ({"field": field} if field else {})
    return JSONResponse(body, status_code=status)


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (MODEL_SERVER_* settings)."""

    max_body_bytes: int = 1024 * 1024
    max_prompt_chars: int = 32_768

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(settings.model_server_max_body_bytes, settings.model_server_max_prompt_chars)


class ModelInfo:
    """What /api/tags, /api/ps and /api/show say about the served model."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = Path(path)
        try:
            self.spec = get_spec(name)
        except ModelFileError:
            self.spec = None
        stat = self.path.stat()
        self.size = stat.st_size
        self.modified_at = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat().replace("+00:00", "Z")
        self.digest = self.spec.sha256 if self.spec and self.path.name == self.spec.file_name else ""

    def matches(self, requested: str) -> bool:
        requested = (requested or "").strip()
        bare = requested[: -len(":latest")] if requested.endswith(":latest") else requested
        return bare in (self.name, self.name.removesuffix(":latest"))

    def details(self) -> dict:
        spec = self.spec
        return {
            "parent_model": "",
            "format": "gguf",
            "family": spec.family if spec else "",
            "families": [spec.family] if spec else [],
            "parameter_size": spec.parameter_size if spec else "",
            "quantization_level": spec.quantization if spec else "",
        }

    def listing(self) -> dict:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }


def create_app(engine: LlamaEngine, model: ModelInfo, limits: Limits = Limits()) -> Starlette:
    """The ASGI app serving `model` from `engine`."""

    async def read(request: Request, schema):
        """The validated body of a generation request, for the served model and within the limits."""
        body = parse(schema, await request.body())
        if not model.matches(body.model):
            raise _NotFound(f"model '{body.model}' not found (this server serves '{model.name}')")
        chars = body.prompt_chars()
        if chars > limits.max_prompt_chars:
            raise _TooLarge(
                f"prompt too long: {chars} characters; the limit is MODEL_SERVER_MAX_PROMPT_CHARS={limits.max_prompt_chars}"
            )
        return body

    active: set[threading.Event] = set()  # cancel flags of running generations

    async def respond(
        request: Request,
        body: ChatRequest | GenerateRequest,
        run: Callable[[Callable[[str], None] | None, threading.Event], Generation],
        piece: Callable[[str], dict],
        route: str,
    ) -> Response:
        received = time.monotonic()
        base = {"model": body.model}
        stream = body.stream
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        def final(gen: Generation) -> dict:
            total_ms = (time.monotonic() - received) * 1000
            metrics.MODEL_TOKENS.labels("prompt").inc(gen.prompt_tokens or 0)
            metrics.MODEL_TOKENS.labels("completion").inc(gen.completion_tokens or 0)
            log.info(
                "generated",
                route=route,
                prompt_tokens=gen.prompt_tokens,
                cached_tokens=gen.cached_tokens,
                completion_tokens=gen.completion_tokens,
                prompt_ms=round(gen.prompt_ms),
                eval_ms=round(gen.eval_ms),
                total_ms=round(total_ms),
                done_reason=gen.done_reason,
            )
            return {
                **base,
                "created_at": _now(),
                **piece(""),
                "done": True,
                "done_reason": gen.done_reason,
                "total_duration": _ns(total_ms),
                "load_duration": 0,
                "prompt_eval_count": gen.prompt_tokens,
                "prompt_eval_duration": _ns(gen.prompt_ms),
                "eval_count": gen.completion_tokens,
                "eval_duration": _ns(gen.eval_ms),
            }

        if not stream:
            active.add(cancel)
            job = loop.run_in_executor(None, run, None, cancel)
            try:
                while not job.done():
                    # a client that gave up (timeout) frees the model for the next request
                    await asyncio.wait({job}, timeout=0.5)
                    if not job.done() and await request.is_disconnected():
                        cancel.set()
                gen = job.result()
            except Cancelled:
                log.info("generation cancelled: client went away", route=route)
                return _error(499, "client closed the request")
            except EngineError as exc:
                return _error(400, str(exc))
            finally:
                if not job.done():  # this request was cancelled (server stopping)
                    cancel.set()
                active.discard(cancel)
            out = final(gen)
            out.update(piece(gen.text))
            return JSONResponse(out)

        async def lines() -> AsyncIterator[bytes]:
            queue: asyncio.Queue = asyncio.Queue()

            def on_delta(text: str) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, text)

            active.add(cancel)
            job = loop.run_in_executor(None, run, on_delta, cancel)
            job.add_done_callback(lambda _: queue.put_nowait(None))
            try:
                while (text := await queue.get()) is not None:
                    yield _line({**base, "created_at": _now(), **piece(text), "done": False})
                try:
                    yield _line(final(job.result()))
                except (EngineError, Cancelled) as exc:
                    yield _line({"error": str(exc)})
            finally:  # also when the client disconnects mid-stream
                cancel.set()
                active.discard(cancel)

        return StreamingResponse(lines(), media_type=NDJSON)

    async def chat(request: Request) -> Response:
        body = await read(request, ChatRequest)
        messages = [{"role": m.role, "content": m.content or ""} for m in body.messages]
        if not messages:  # Ollama: an empty chat just loads the model
            return JSONResponse(
                {
                    "model": body.model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "load",
                }
            )
        options = request_options(body.option_values(), body.format)
        return await respond(
            request,
            body,
            lambda on_delta, cancel: engine.chat(messages, options, on_delta, cancel),
            lambda text: {"message": {"role": "assistant", "content": text}},
            "chat",
        )

    async def generate(request: Request) -> Response:
        body = await read(request, GenerateRequest)
        prompt = body.prompt
        if not prompt:  # Ollama: an empty prompt just loads the model
            return JSONResponse(
                {"model": body.model, "created_at": _now(), "response": "", "done": True, "done_reason": "load"}
            )
        options = request_options(body.option_values(), body.format)
        if body.raw:
            run = lambda on_delta, cancel: engine.complete(prompt, options, on_delta, cancel)  # noqa: E731
        else:
            messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
                {"role": "user", "content": prompt}
            ]
            run = lambda on_delta, cancel: engine.chat(messages, options, on_delta, cancel)  # noqa: E731
        return await respond(request, body, run, lambda text: {"response": text}, "generate")

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [model.listing()]})

    async def ps(request: Request) -> Response:
        return JSONResponse({"models": [{**model.listing(), "expires_at": "0001-01-01T00:00:00Z", "size_vram": 0}]})

    async def show(request: Request) -> Response:
        name = parse(ModelRequest, await request.body()).requested()
        if not model.matches(name):
            raise _NotFound(f"model '{name}' not found")
        return JSONResponse(
            {
                "license": model.spec.license if model.spec else "",
                "modelfile": f"FROM {model.path}",
                "parameters": f"num_ctx {engine.n_ctx}",
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": {"general.file": model.path.name, "general.size": model.size},
                "capabilities": ["completion"],
                "modified_at": model.modified_at,
            }
        )

    async def pull(request: Request) -> Response:
        body = parse(ModelRequest, await request.body())
        name = body.requested()
        if not model.matches(name):
            known = ", ".join(sorted(MODELS))
            raise _NotFound(
                f"model '{name}' is not served here; restart llm.serve with OLLAMA_MODEL set to it ({known})"
            )
        status = {"status": "success"}
        if body.stream:
            return StreamingResponse(iter([_line(status)]), media_type=NDJSON)
        return JSONResponse(status)

    async def version(request: Request) -> Response:
        return JSONResponse(
            {"version": SERVER_VERSION, "server": "llm.serve", "model": model.name, "busy": engine.busy}
        )

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc), getattr(exc, "field", None))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, str(exc))

    async def too_large(request: Request, exc: Exception) -> Response:
        return _error(413, str(exc))

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for flag in list(active):  # stopping: end running generations at the next token
            flag.set()

    return Starlette(
        routes=routes,
        middleware=[
            Middleware(metrics.RequestMetrics, paths=tuple(r.path for r in routes)),
            Middleware(BodyLimit, max_bytes=limits.max_body_bytes),
        ],
        exception_handlers={BadRequest: bad_request, _NotFound: not_found, _TooLarge: too_large},
        lifespan=lifespan,
    )


class _NotFound(Exception):
    pass


class _TooLarge(Exception):
    pass


def _line(obj: dict) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def serve(settings) -> int:
    """Load the model for `settings` and serve until interrupted (returns the exit code)."""
    import uvicorn

    from llm.model_files import resolve_model_file

    host, port = settings.ollama_host_port
    try:
        path = resolve_model_file(settings)
    except ModelFileError as exc:
        log.error("no model file", error=str(exc))
        print(f"llm.serve: {exc}", flush=True)
        return 1
    engine = LlamaEngine(path, threads=settings.llm_threads)
    app = create_app(engine, ModelInfo(settings.ollama_model, path), Limits.from_settings(settings))
    metrics.serve(metrics.MODEL_SERVER, settings)
    log.info("serving", host=host, port=port, model=settings.ollama_model, file=str(path))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    log.info("stopped")
    return 0
