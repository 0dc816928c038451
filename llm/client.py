"""Calling the model through the official `ollama` client, with timeout and retries.

The same code path talks to a real Ollama (compose) and to `python -m llm.serve`.
Two kinds of failure, handled differently by the narrator:

- the server is unavailable (global): transport failures, timeouts, 5xx, 408 and
  429 are retried with exponential backoff; when they persist, and at once for
  404 (the model is not served there: nothing about this incident), the caller
  gets `LLMUnavailable`, leaves the incident pending and backs off;
- the server refused this request (per incident): any other 4xx (a field it
  rejects, a prompt over its limit or its context) is never retried, because the
  same request gets the same answer; the caller gets `LLMRefused` and moves on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx
import ollama
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from llm.prompt import OPTIONS
from observability.logs import get_logger

log = get_logger(__name__)


class LLMUnavailable(RuntimeError):
    """The model server could not answer (down, too slow, or missing the model)."""


class LLMRefused(RuntimeError):
    """The model server refused this request (4xx): the same request would be refused again."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class LLMReply:
    text: str
    model: str
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None


def drop_unfinished_sentence(text: str) -> str:
    """A reply cut off at num_predict ends mid-sentence (often mid trace id): keep whole sentences."""
    match = re.search(r"^(.*[.!?])(?:\s|$)", text, re.S)
    return match.group(1).strip() if match else text


MODEL_NOT_SERVED = 404
RETRYABLE_4XX = (408, 429)  # request timeout, too many requests: the server is busy, not refusing


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code >= 500 or exc.status_code == -1 or exc.status_code in RETRYABLE_4XX
    return isinstance(exc, (ConnectionError, httpx.TransportError, httpx.TimeoutException))


class NarratorLLM:
    """`chat(messages)` against OLLAMA_URL / OLLAMA_MODEL."""

    def __init__(self, url: str, model: str, timeout: float, *, attempts: int = 3, backoff_max: float = 8.0) -> None:
        self.url = url
        self.model = model
        self.attempts = attempts
        self.backoff_max = backoff_max
        self.client = ollama.Client(host=url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings, **kwargs) -> NarratorLLM:
        return cls(settings.ollama_url, settings.ollama_model, settings.llm_timeout_seconds, **kwargs)

    def chat(self, messages: list[dict], format: dict | str | None = None) -> LLMReply:  # noqa: A002 (Ollama's name)
        """One reply; `format` ("json" or a JSON schema) constrains generation (Ollama's field)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=1, min=1, max=self.backoff_max),
            retry=retry_if_exception(_transient),
            before_sleep=lambda rs: log.warning(
                "model call failed; retrying",
                url=self.url,
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception()) if rs.outcome else "",
            ),
            reraise=False,
        )
        started = time.monotonic()
        try:
            response = retrying(self._call, messages, format)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise LLMUnavailable(f"{self.url} did not answer after {self.attempts} attempts: {cause}") from cause
        except ollama.ResponseError as exc:  # 4xx: retrying will not help
            if exc.status_code == MODEL_NOT_SERVED:
                raise LLMUnavailable(
                    f"{self.url} does not serve {self.model} ({exc.status_code}): {exc.error}"
                ) from exc
            raise LLMRefused(
                f"{self.url} refused the request ({exc.status_code}): {exc.error}", exc.status_code
            ) from exc
        except Exception as exc:
            if _transient(exc):
                raise LLMUnavailable(f"{self.url}: {exc}") from exc
            raise
        text = (response.message.content or "").strip()
        if response.done_reason == "length":
            text = drop_unfinished_sentence(text)
        return LLMReply(
            text=text,
            model=response.model or self.model,
            latency_ms=(time.monotonic() - started) * 1000,
            prompt_tokens=response.prompt_eval_count,
            completion_tokens=response.eval_count,
        )

    def _call(self, messages: list[dict], format=None):  # noqa: A002
        return self.client.chat(model=self.model, messages=messages, options=OPTIONS, stream=False, format=format)
