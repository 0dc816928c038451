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

Modules: `model_info` (what the API says about the served model; the request
limits), `responses` (error bodies, NDJSON lines, the client errors),
`generation` (a generation in a worker thread, answered whole or streamed),
`handlers` (one method per route), `app` (routes and error handlers -> the ASGI
app; `serve`).
"""

from llm.ollama_api.app import create_app, serve
from llm.ollama_api.model_info import SERVER_VERSION, Limits, ModelInfo

__all__ = ["SERVER_VERSION", "Limits", "ModelInfo", "create_app", "serve"]
