"""One GGUF model in llama.cpp (the prebuilt `xllamacpp` wheel), one request at a time.

xllamacpp embeds llama.cpp's server loop; we only use its in-process request
handlers (OpenAI-style JSON in, JSON or chunks out) and translate to the Ollama
API in `llm.ollama_api`. The handlers release the GIL while generating, so the HTTP
event loop stays responsive; a lock serialises generations because a small CPU
box is fastest running one at a time (and the prompt prefix stays cached in the
single slot between narrator calls).
"""

from __future__ import annotations

import os

# llama.cpp's OpenMP workers spin while waiting by default; on a small shared
# CPU a descheduled worker then stalls the others (measured 10x slower
# generation with 2 threads under load). Passive waiting must be set before
# the OpenMP runtime starts, i.e. before xllamacpp is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from observability.logs import get_logger  # noqa: E402

log = get_logger(__name__)

# Ollama option -> llama.cpp request field
_OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "typical_p": "typical_p",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}


class EngineError(RuntimeError):
    """llama.cpp rejected a request (bad parameters, context overflow, ...)."""


class Cancelled(RuntimeError):
    """The client went away (or the server is stopping) before the generation ended."""


@dataclass
class Generation:
    text: str
    done_reason: str  # stop | length
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    eval_ms: float
    total_ms: float
    cached_tokens: int = 0  # prompt tokens reused from the previous request's KV cache


def request_options(options: dict | None, fmt=None) -> dict:
    """Translate Ollama `options` (and `format`) into llama.cpp request fields."""
    out: dict = {}
    for key, value in (options or {}).items():
        if key in _OPTION_MAP and value is not None:
            out[_OPTION_MAP[key]] = value
    if out.get("max_tokens") is not None and out["max_tokens"] < 0:
        out.pop("max_tokens")  # Ollama: -1 = unlimited
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_object", "schema": fmt}
    return out


class LlamaEngine:
    """A loaded GGUF model; `chat`/`complete` run one request at a time."""

    def __init__(self, model_path: Path, *, threads: int = 2, n_ctx: int = 4096) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = -1  # llama.cpp's own logs off; we log per request
        params.warmup = False
        started = time.monotonic()
        self._server = xllamacpp.Server(params)
        self.load_ms = (time.monotonic() - started) * 1000
        self.model_path = Path(model_path)
        self.threads = threads
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self.busy = False
        log.info("model loaded", path=str(model_path), threads=threads, n_ctx=n_ctx, load_ms=round(self.load_ms))

    def _run(
        self, handler: str, body: dict, on_delta: Callable[[str], None] | None, cancel: threading.Event | None
    ) -> Generation:
        """Generate (always streamed inside, so a generation can be cancelled between tokens)."""
        cancel = cancel or threading.Event()
        started = time.monotonic()
        with self._lock:
            queued_ms = (time.monotonic() - started) * 1000
            if cancel.is_set():
                raise Cancelled("cancelled before it started")
            self.busy = True
            chunks: list[str] = []
            final: dict = {}

            def callback(chunk) -> bool:
                if isinstance(chunk, dict) and "error" in chunk:
                    final["error"] = chunk["error"]
                    return True
                choice = (chunk.get("choices") or [{}])[0]
                delta = _delta_text(choice)
                if delta:
                    chunks.append(delta)
                    if on_delta is not None:
                        on_delta(delta)
                if choice.get("finish_reason"):
                    final["finish_reason"] = choice["finish_reason"]
                if chunk.get("timings"):
                    final["timings"] = chunk["timings"]
                return cancel.is_set()  # True stops llama.cpp after this token

            try:
                getattr(self._server, handler)(dict(body, stream=True), callback)
            except (ValueError, RuntimeError) as exc:
                raise EngineError(str(exc)) from exc
            finally:
                self.busy = False
        if "error" in final:
            raise EngineError(_error_text(final["error"]))
        if cancel.is_set():
            raise Cancelled(f"cancelled after {len(chunks)} tokens")
        timings = final.get("timings", {})
        return Generation(
            text="".join(chunks),
            done_reason=_done_reason(final.get("finish_reason")),
            prompt_tokens=int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)),
            completion_tokens=int(timings.get("predicted_n", len(chunks))),
            prompt_ms=float(timings.get("prompt_ms", 0.0)),
            eval_ms=float(timings.get("predicted_ms", 0.0)),
            total_ms=(time.monotonic() - started) * 1000 - queued_ms,
            cached_tokens=int(timings.get("cache_n", 0)),
        )

    def chat(self, messages: list[dict], options: dict, on_delta=None, cancel=None) -> Generation:
        return self._run("handle_chat_completions", dict(options, messages=messages), on_delta, cancel)

    def complete(self, prompt: str, options: dict, on_delta=None, cancel=None) -> Generation:
        return self._run("handle_completions", dict(options, prompt=prompt), on_delta, cancel)


def _delta_text(choice: dict) -> str:
    if "delta" in choice:
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


def _done_reason(finish_reason: str | None) -> str:
    return "length" if finish_reason == "length" else "stop"


def _error_text(error) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
