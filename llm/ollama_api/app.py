"""The ASGI app (routes, body limit, client-error handlers) and `serve`, which runs it with uvicorn."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from llm.api_requests import BadRequest
from llm.body_limit import BodyLimit
from llm.engine import LlamaEngine
from llm.model_files import ModelFileError
from llm.ollama_api import responses
from llm.ollama_api.generation import Generations
from llm.ollama_api.handlers import OllamaHandlers
from llm.ollama_api.model_info import Limits, ModelInfo
from observability import metrics
from observability.logs import get_logger

log = get_logger("llm.ollama_api")


def create_app(engine: LlamaEngine, model: ModelInfo, limits: Limits = Limits()) -> Starlette:
    """The ASGI app serving `model` from `engine`."""
    generations = Generations(model, limits)
    h = OllamaHandlers(engine, model, generations)
    routes = [
        Route("/", h.root, methods=["GET", "HEAD"]),
        Route("/api/version", h.version, methods=["GET"]),
        Route("/api/tags", h.tags, methods=["GET"]),
        Route("/api/ps", h.ps, methods=["GET"]),
        Route("/api/show", h.show, methods=["POST"]),
        Route("/api/pull", h.pull, methods=["POST"]),
        Route("/api/chat", h.chat, methods=["POST"]),
        Route("/api/generate", h.generate, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        generations.cancel_all()  # stopping: end running generations at the next token

    return Starlette(
        routes=routes,
        middleware=[
            Middleware(metrics.RequestMetrics, paths=tuple(r.path for r in routes)),
            Middleware(BodyLimit, max_bytes=limits.max_body_bytes),
        ],
        exception_handlers={
            BadRequest: responses.bad_request,
            responses.NotFound: responses.not_found,
            responses.TooLarge: responses.too_large,
        },
        lifespan=lifespan,
    )


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
