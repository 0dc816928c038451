"""One handler per route of the Ollama API, over the served model and its engine."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from llm.api_requests import ChatRequest, GenerateRequest, ModelRequest, parse
from llm.engine import LlamaEngine, request_options
from llm.model_files import MODELS
from llm.ollama_api.generation import Generations
from llm.ollama_api.model_info import SERVER_VERSION, ModelInfo
from llm.ollama_api.responses import NDJSON, NotFound, line, now


class OllamaHandlers:
    """The route handlers (Starlette endpoints) of one served model."""

    def __init__(self, engine: LlamaEngine, model: ModelInfo, generations: Generations) -> None:
        self.engine = engine
        self.model = model
        self.generations = generations

    async def chat(self, request: Request) -> Response:
        body = await self.generations.read(request, ChatRequest)
        messages = [{"role": m.role, "content": m.content or ""} for m in body.messages]
        if not messages:  # Ollama: an empty chat just loads the model
            return JSONResponse(
                {
                    "model": body.model,
                    "created_at": now(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "load",
                }
            )
        options = request_options(body.option_values(), body.format)

        def run(on_delta, cancel):
            return self.engine.chat(messages, options, on_delta, cancel)

        return await self.generations.respond(
            request, body, run, lambda text: {"message": {"role": "assistant", "content": text}}, "chat"
        )

    async def generate(self, request: Request) -> Response:
        body = await self.generations.read(request, GenerateRequest)
        prompt = body.prompt
        if not prompt:  # Ollama: an empty prompt just loads the model
            return JSONResponse(
                {"model": body.model, "created_at": now(), "response": "", "done": True, "done_reason": "load"}
            )
        options = request_options(body.option_values(), body.format)
        if body.raw:

            def run(on_delta, cancel):
                return self.engine.complete(prompt, options, on_delta, cancel)

        else:
            messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
                {"role": "user", "content": prompt}
            ]

            def run(on_delta, cancel):
                return self.engine.chat(messages, options, on_delta, cancel)

        return await self.generations.respond(request, body, run, lambda text: {"response": text}, "generate")

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [self.model.listing()]})

    async def ps(self, request: Request) -> Response:
        listing = self.model.listing()
        return JSONResponse({"models": [{**listing, "expires_at": "0001-01-01T00:00:00Z", "size_vram": 0}]})

    async def show(self, request: Request) -> Response:
        model = self.model
        name = parse(ModelRequest, await request.body()).requested()
        if not model.matches(name):
            raise NotFound(f"model '{name}' not found")
        return JSONResponse(
            {
                "license": model.spec.license if model.spec else "",
                "modelfile": f"FROM {model.path}",
                "parameters": f"num_ctx {self.engine.n_ctx}",
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": {"general.file": model.path.name, "general.size": model.size},
                "capabilities": ["completion"],
                "modified_at": model.modified_at,
            }
        )

    async def pull(self, request: Request) -> Response:
        body = parse(ModelRequest, await request.body())
        name = body.requested()
        if not self.model.matches(name):
            known = ", ".join(sorted(MODELS))
            raise NotFound(
                f"model '{name}' is not served here; restart llm.serve with OLLAMA_MODEL set to it ({known})"
            )
        status = {"status": "success"}
        if body.stream:
            return StreamingResponse(iter([line(status)]), media_type=NDJSON)
        return JSONResponse(status)

    async def version(self, request: Request) -> Response:
        return JSONResponse(
            {"version": SERVER_VERSION, "server": "llm.serve", "model": self.model.name, "busy": self.engine.busy}
        )

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")
