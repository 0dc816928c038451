"""The request bodies the model server accepts, with every field's type checked.

A wrongly typed field (`"model": 123`, `"options": "fast"`, `"num_predict": "abc"`,
`"messages": {}`) is the client's mistake: `parse` raises `BadRequest` naming the
field (the server answers 400), instead of the value reaching llama.cpp and
failing there as a 500. Types are strict (no "5" for 5, no true for 1, no NaN).
Fields Ollama defines but this server ignores (`keep_alive`, `tools`, ...) are
type-checked too; fields nobody defines are ignored, as Ollama does.

JSON nesting is bounded before validation: Python's decoder raises
RecursionError (not ValueError) around 1,000 levels, and a deep `format`
schema would reach llama.cpp's recursive grammar builder.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

MAX_JSON_DEPTH = 32  # a JSON schema in `format` needs a handful of levels


class BadRequest(ValueError):
    """The body is not what the API accepts; `field` names the offending field (dotted path)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# -- field types ----------------------------------------------------------------------
Int = Annotated[int, Field(strict=True, ge=-(2**31), le=2**32 - 1)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]


def _plain(check, expected: str):
    """A field accepting null or what `check` accepts; otherwise the error says what was `expected`."""

    def validate(value: Any) -> Any:
        if value is not None and not check(value):
            raise PydanticCustomError("type", f"must be {expected}, got {type(value).__name__}")
        return value

    return PlainValidator(validate)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


Stop = Annotated[
    Any, _plain(lambda v: _is_str(v) or (isinstance(v, list) and all(map(_is_str, v))), "a string or a list of strings")
]
Format = Annotated[Any, _plain(lambda v: v in ("", "json") or isinstance(v, dict), '"json" or a JSON schema object')]
KeepAlive = Annotated[Any, _plain(lambda v: _is_str(v) or _is_number(v), "a duration string or a number of seconds")]
Think = Annotated[
    Any, _plain(lambda v: isinstance(v, bool) or v in ("low", "medium", "high"), 'a boolean or "low", "medium", "high"')
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class Options(_Body):
    """Ollama's `options`: the ones llama.cpp gets (see llm.engine) and the ones ignored here."""

    temperature: Float | None = None
    top_p: Float | None = None
    top_k: Int | None = None
    min_p: Float | None = None
    typical_p: Float | None = None
    seed: Int | None = None
    num_predict: Int | None = None
    stop: Stop = None
    repeat_penalty: Float | None = None
    repeat_last_n: Int | None = None
    presence_penalty: Float | None = None
    frequency_penalty: Float | None = None
    mirostat: Int | None = None
    mirostat_tau: Float | None = None
    mirostat_eta: Float | None = None
    # accepted and ignored (the server's own settings decide them)
    num_ctx: Int | None = None
    num_batch: Int | None = None
    num_gpu: Int | None = None
    main_gpu: Int | None = None
    num_thread: Int | None = None
    num_keep: Int | None = None
    use_mmap: Bool | None = None
    use_mlock: Bool | None = None
    numa: Bool | None = None
    low_vram: Bool | None = None
    vocab_only: Bool | None = None
    penalize_newline: Bool | None = None

    def given(self) -> dict:
        """The options the client set (for llm.engine.request_options)."""
        return self.model_dump(exclude_none=True)


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: Str | None = None
    images: list[Str] | None = None
    thinking: Str | None = None
    tool_calls: list[dict] | None = None
    tool_name: Str | None = None


class _Generation(_Body):
    model: Annotated[str, Field(strict=True, min_length=1)]
    stream: Bool = True  # Ollama streams unless told otherwise
    format: Format = None
    options: Options | None = None
    keep_alive: KeepAlive = None
    think: Think = None

    def option_values(self) -> dict:
        return self.options.given() if self.options else {}


class ChatRequest(_Generation):
    messages: list[Message] = []
    tools: list[dict] | None = None

    def prompt_chars(self) -> int:
        return sum(len(m.content or "") for m in self.messages)


class GenerateRequest(_Generation):
    prompt: Str = ""
    system: Str | None = None
    raw: Bool = False
    suffix: Str | None = None
    template: Str | None = None
    context: list[Int] | None = None
    images: list[Str] | None = None

    def prompt_chars(self) -> int:
        return len(self.prompt) + len(self.system or "")


class ModelRequest(_Body):
    """/api/show and /api/pull: the model by `model` (or its older name, `name`)."""

    model: Str | None = None
    name: Str | None = None
    stream: Bool = True
    verbose: Bool | None = None
    insecure: Bool | None = None

    def requested(self) -> str:
        if not (self.model or self.name):
            raise BadRequest("field 'model': Field required", "model")
        return self.model or self.name


# -- parsing ----------------------------------------------------------------------------
def decode(raw: bytes) -> dict:
    """The JSON object in `raw` (an empty body is `{}`); BadRequest for anything else."""
    try:
        body = json.loads(raw or b"{}")
    except RecursionError as exc:
        raise BadRequest(f"JSON nested too deeply (at most {MAX_JSON_DEPTH} levels)") from exc
    except ValueError as exc:  # includes UnicodeDecodeError
        raise BadRequest(f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    too_deep = _field_deeper_than(body, MAX_JSON_DEPTH)
    if too_deep is not None:
        raise BadRequest(f"field '{too_deep}' nests JSON deeper than {MAX_JSON_DEPTH} levels", too_deep)
    return body


def _field_deeper_than(body: dict, limit: int) -> str | None:
    """The top-level field holding a container deeper than `limit` levels, or None (iterative)."""
    stack: list[tuple[Any, int, str]] = [(child, 2, key) for key, child in body.items()]
    while stack:
        node, depth, field = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if depth > limit:
            return field
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1, field) for child in children)
    return None


def parse(model: type[_Body], raw: bytes):
    """Decode and validate `raw` as `model`; BadRequest naming the first wrong field."""
    body = decode(raw)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        where = f"field '{field}'" if field else "the request body"
        raise BadRequest(f"{where}: {first['msg']}", field) from exc
