"""`python -m llm.serve` with the real SmolLM2-135M model, driven by the official `ollama` client."""

import json
import random
import select
import socket
import string
import threading
import time

import httpx
import ollama
import psutil
import pytest

from tests.llm_fixtures import TEST_MODEL

OPTS = {"temperature": 0, "num_predict": 12}
# a raw completion SmolLM2 continues for thousands of tokens at temperature 0 (a chat prompt like
# "count to 2000" often ends after 20-150 tokens, which made the long-generation tests flaky)
LONG_JOB = dict(model=TEST_MODEL, prompt="1, 2, 3, 4, 5, 6, 7, 8,", raw=True)


def wait_for(condition, timeout: float) -> bool:
    """Poll `condition` until it holds; the deadline only stops a hung test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture(scope="module")
def client(llm_server):
    return ollama.Client(host=llm_server, timeout=120)


def test_tags_and_version(client, llm_server):
    models = client.list().models
    assert [m.model for m in models] == [TEST_MODEL]
    assert models[0].details.format == "gguf" and models[0].size > 50_000_000
    assert models[0].digest == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    version = httpx.get(f"{llm_server}/api/version").json()
    assert version["version"]
    assert httpx.get(llm_server).text == "Ollama is running"


def test_chat_reports_text_tokens_and_durations(client):
    r = client.chat(model=TEST_MODEL, messages=[{"role": "user", "content": "Name a colour."}], options=OPTS)
    assert r.done and r.message.role == "assistant" and r.message.content.strip()
    assert r.done_reason in ("stop", "length")
    assert 0 < r.eval_count <= 12 and r.prompt_eval_count > 5
    assert r.total_duration >= r.eval_duration > 0 and r.prompt_eval_duration > 0


SCHEMA = {
    "type": "object",
    "properties": {"severity": {"type": "string", "enum": ["low", "critical"]}, "minutes": {"type": "integer"}},
    "required": ["severity", "minutes"],
}


def test_a_json_schema_format_constrains_generation(client):
    # Ollama's `format` reaches llama.cpp's grammar sampler: the 135M model, which answers this
    # prompt in prose, must produce an object of exactly this schema (an enum value it never
    # saw, an integer); "json" alone gives some JSON object
    messages = [{"role": "user", "content": "Tell me about the weather."}]
    free = client.chat(model=TEST_MODEL, messages=messages, options={"temperature": 0, "num_predict": 40})
    with pytest.raises(ValueError):
        json.loads(free.message.content)
    constrained = client.chat(
        model=TEST_MODEL, messages=messages, format=SCHEMA, options={"temperature": 0, "num_predict": 40}
    )
    answer = json.loads(constrained.message.content)
    assert set(answer) == {"severity", "minutes"}
    assert answer["severity"] in ("low", "critical") and isinstance(answer["minutes"], int)
    streamed = "".join(
        c.message.content
        for c in client.chat(
            model=TEST_MODEL,
            messages=messages,
            format=SCHEMA,
            options={"temperature": 0, "num_predict": 40},
            stream=True,
        )
    )
    assert json.loads(streamed) == answer
    anything = client.chat(
        model=TEST_MODEL, messages=messages, format="json", options={"temperature": 0, "num_predict": 40}
    )
    assert anything.message.content.lstrip().startswith("{")


def test_num_predict_caps_the_answer(client):
    r = client.chat(
        model=TEST_MODEL, messages=[{"role": "user", "content": "Write a long story."}], options={"num_predict": 3}
    )
    assert r.eval_count == 3 and r.done_reason == "length"


def test_chat_streams_the_same_text(client):
    msgs = [{"role": "user", "content": "Name a fruit."}]
    whole = client.chat(model=TEST_MODEL, messages=msgs, options=OPTS).message.content
    parts = list(client.chat(model=TEST_MODEL, messages=msgs, options=OPTS, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole  # temperature 0: same tokens
    assert parts[-1].eval_count > 0 and parts[-1].prompt_eval_count > 0


def test_generate_plain_and_streaming(client):
    r = client.generate(model=TEST_MODEL, prompt="The sky is", system="Answer briefly.", options=OPTS)
    assert r.done and r.response.strip() and r.eval_count > 0
    raw = list(client.generate(model=TEST_MODEL, prompt="1, 2, 3,", raw=True, options=OPTS, stream=True))
    assert raw[-1].done and "".join(p.response for p in raw).strip()


def test_unknown_model_is_a_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3:70b", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and "not found" in err.value.error


def test_bad_request_is_a_400(llm_server):
    r = httpx.post(f"{llm_server}/api/chat", content=b"{not json")
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]


def test_version_answers_while_a_generation_runs(llm_server):
    long_job = dict(LONG_JOB, options={"temperature": 0, "num_predict": 1500})
    with httpx.stream("POST", f"{llm_server}/api/generate", json=long_job, timeout=120) as stream:
        lines = stream.iter_lines()
        assert json.loads(next(lines))["done"] is False  # the generation is running
        busy = [httpx.get(f"{llm_server}/api/version", timeout=60).json()["busy"] for _ in range(3)]
        after = json.loads(next(lines))
    # answered while generating (a blocked event loop would answer after the generation, not busy),
    # and the generation went on producing tokens after those answers
    assert busy == [True, True, True]
    assert after["done"] is False and "response" in after
    # leaving the stream early cancelled the rest: the model is free again
    assert wait_for(lambda: not httpx.get(f"{llm_server}/api/version").json()["busy"], 60)


def test_requests_are_serialised_and_all_answered(client):
    results, errors = [], []

    def ask(i):
        try:
            results.append(
                client.chat(model=TEST_MODEL, messages=[{"role": "user", "content": f"Say {i}."}], options=OPTS)
            )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 and all(r.done and r.eval_count > 0 for r in results)


def test_a_client_that_times_out_frees_the_model(llm_server_process, client):
    url = llm_server_process.url
    cancelled_before = llm_server_process.log().count("generation cancelled")
    impatient = ollama.Client(host=url, timeout=0.5)
    with pytest.raises(httpx.TimeoutException):
        impatient.generate(**LONG_JOB, options={"temperature": 0, "num_predict": 4000})
    # the server noticed the client was gone and cancelled the generation (not ran it to 4000 tokens)
    assert wait_for(lambda: llm_server_process.log().count("generation cancelled") > cancelled_before, 120)
    assert "completion_tokens=4000" not in llm_server_process.log()
    assert not httpx.get(f"{url}/api/version").json()["busy"]
    r = client.chat(model=TEST_MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2})
    assert r.done and r.eval_count == 2


def test_show_ps_and_pull_describe_the_served_model(client):
    listed = client.list().models[0]
    shown = client.show(TEST_MODEL)
    assert shown.details.format == "gguf" and shown.details.family == listed.details.family != ""
    assert shown.modelinfo["general.file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert shown.modelinfo["general.size"] == listed.size
    assert "num_ctx 4096" in shown.parameters
    assert client.show(f"{TEST_MODEL}:latest").details == shown.details
    (running,) = client.ps().models
    assert running.model == TEST_MODEL and running.size == listed.size and running.digest == listed.digest
    assert [p.status for p in client.pull(TEST_MODEL, stream=True)] == ["success"]
    assert client.pull(TEST_MODEL).status == "success"


@pytest.mark.parametrize("call", ["show", "pull"])
def test_show_and_pull_of_another_model_are_a_404(client, call):
    with pytest.raises(ollama.ResponseError) as err:
        getattr(client, call)("llama3:70b")
    assert err.value.status_code == 404 and "llama3:70b" in err.value.error
    if call == "pull":  # says how to serve it instead
        assert "OLLAMA_MODEL" in err.value.error


def test_an_empty_chat_or_prompt_only_loads_the_model(client):
    chat = client.chat(model=TEST_MODEL, messages=[])
    assert chat.done and chat.done_reason == "load" and chat.message.content == "" and not chat.eval_count
    gen = client.generate(model=TEST_MODEL, prompt="")
    assert gen.done and gen.done_reason == "load" and gen.response == ""


def test_an_engine_error_in_a_stream_is_an_error_line(client, llm_server):
    # under the character limit, but more tokens than the 4096-token context: llama.cpp refuses it
    # after the 200 and the headers went out, so the stream ends with an error line
    rng = random.Random(7)
    words = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8))) for _ in range(4000))
    assert len(words) < 32_768
    body = {"model": TEST_MODEL, "messages": [{"role": "user", "content": words}], "options": {"num_predict": 3}}
    with httpx.stream("POST", f"{llm_server}/api/chat", json=body, timeout=120) as stream:
        assert stream.status_code == 200
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert "exceeds the available context size" in lines[-1]["error"]
    assert all(not line.get("done") for line in lines)
    with pytest.raises(ollama.ResponseError, match="context size"):
        list(client.chat(model=TEST_MODEL, messages=body["messages"], options=body["options"], stream=True))
    # the same request without streaming is a plain 400
    r = httpx.post(f"{llm_server}/api/chat", json={**body, "stream": False}, timeout=120)
    assert r.status_code == 400 and "context size" in r.json()["error"]


# -- hostile and broken requests: the client's error (4xx), never a 500 ----------------------
M = TEST_MODEL
HI = [{"role": "user", "content": "hi"}]
WRONG_TYPES = [
    ("/api/chat", {"model": 123, "messages": HI}, "model"),
    ("/api/chat", {"model": "", "messages": HI}, "model"),
    ("/api/chat", {"messages": HI}, "model"),
    ("/api/chat", {"model": M, "messages": {}}, "messages"),
    ("/api/chat", {"model": M, "messages": ["hi"]}, "messages.0"),
    ("/api/chat", {"model": M, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ("/api/chat", {"model": M, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ("/api/chat", {"model": M, "messages": HI, "options": "fast"}, "options"),
    ("/api/chat", {"model": M, "messages": HI, "options": {"num_predict": "abc"}}, "options.num_predict"),
    ("/api/chat", {"model": M, "messages": HI, "options": {"num_predict": 2**40}}, "options.num_predict"),
    ("/api/chat", {"model": M, "messages": HI, "options": {"temperature": True}}, "options.temperature"),
    ("/api/chat", {"model": M, "messages": HI, "options": {"stop": [1]}}, "options.stop"),
    ("/api/chat", {"model": M, "messages": HI, "options": {"num_ctx": "big"}}, "options.num_ctx"),
    ("/api/chat", {"model": M, "messages": HI, "stream": "no"}, "stream"),
    ("/api/chat", {"model": M, "messages": HI, "format": "xml"}, "format"),
    ("/api/chat", {"model": M, "messages": HI, "keep_alive": [5]}, "keep_alive"),
    ("/api/generate", {"model": M, "prompt": ["x"]}, "prompt"),
    ("/api/generate", {"model": M, "prompt": "x", "system": 5}, "system"),
    ("/api/generate", {"model": M, "prompt": "x", "raw": "yes"}, "raw"),
    ("/api/generate", {"model": M, "prompt": "x", "options": {"seed": 1.5}}, "options.seed"),
    ("/api/generate", {"model": M, "prompt": "x", "context": ["a"]}, "context.0"),
    ("/api/show", {"model": 5}, "model"),
    ("/api/show", {}, "model"),
    ("/api/pull", {"model": M, "stream": 1}, "stream"),
]


@pytest.mark.parametrize("path,body,field", WRONG_TYPES, ids=[f"{p}:{f}" for p, _, f in WRONG_TYPES])
def test_a_wrongly_typed_field_is_a_400_naming_it(llm_server, path, body, field):
    r = httpx.post(f"{llm_server}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and f"'{field}'" in r.json()["error"]


def test_not_a_number_is_a_400(llm_server):
    raw = b'{"model": "%s", "messages": [], "options": {"temperature": NaN}}' % M.encode()
    r = httpx.post(f"{llm_server}/api/chat", content=raw)
    assert r.status_code == 400 and r.json()["field"] == "options.temperature"


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_a_400(llm_server, depth):
    # 100,000 levels make Python's decoder raise RecursionError; 40 decode but are refused
    nested = "[" * depth + "]" * depth
    raw = f'{{"model": "{M}", "messages": [], "format": {{"type": "object", "x": {nested}}}}}'.encode()
    r = httpx.post(f"{llm_server}/api/chat", content=raw, timeout=60)
    assert r.status_code == 400 and "nest" in r.json()["error"]
    if depth == 40:
        assert r.json()["field"] == "format"
    assert httpx.get(f"{llm_server}/api/version").status_code == 200  # still serving


def test_a_prompt_over_the_limit_is_a_413_naming_it(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=TEST_MODEL, prompt="word " * 7000, options={"num_predict": 1})
    assert err.value.status_code == 413 and "MODEL_SERVER_MAX_PROMPT_CHARS=32768" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(
            model=TEST_MODEL,
            messages=[{"role": "system", "content": "x" * 20_000}, {"role": "user", "content": "y" * 20_000}],
        )
    assert err.value.status_code == 413


FIFTY_MB = 50 * 1024 * 1024


def _send_until_answered(url: str, head: bytes, chunks) -> tuple[int, bytes]:
    """Send `head`, then body chunks while the server has not answered; (body bytes sent, answer)."""
    host, port = url.rsplit("//", 1)[1].split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        pending = b""
        while True:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable:
                break
            if not writable:
                raise AssertionError("the server neither read the body nor answered")
            if not pending:
                pending = next(chunks, b"")
                if not pending:
                    readable, _, _ = select.select([sock], [], [], 120)  # all sent: wait for the answer
                    break
            n = sock.send(pending)
            sent += n
            pending = pending[n:]
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except TimeoutError:
            pass  # no (complete) answer: the caller's assertions say what arrived
    return sent, answer


def _body_chunks(total: int, size: int = 256 * 1024, chunked: bool = False):
    prefix, suffix = b'{"model": "%s", "messages": [{"role": "user", "content": "' % M.encode(), b'"}]}'
    data = prefix + b"a" * (total - len(prefix) - len(suffix)) + suffix  # valid JSON, as a client would send
    for i in range(0, total, size):
        part = data[i : i + size]
        yield (b"%x\r\n%s\r\n" % (len(part), part)) if chunked else part
    if chunked:
        yield b"0\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_body_is_refused_with_413_before_it_is_sent(llm_server_process, chunked):
    server = psutil.Process(llm_server_process.pid)
    rss_before = server.memory_info().rss
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % FIFTY_MB
    head = b"POST /api/chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n%s\r\n\r\n" % framing
    sent, answer = _send_until_answered(llm_server_process.url, head, _body_chunks(FIFTY_MB, chunked=chunked))
    assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:300])
    assert b"MODEL_SERVER_MAX_BODY_BYTES=1048576" in answer
    assert sent < FIFTY_MB / 2  # answered while the client was still sending
    assert server.memory_info().rss - rss_before < 16 * 1024 * 1024  # the body was never held
    assert httpx.get(f"{llm_server_process.url}/api/version").status_code == 200


def test_a_body_under_the_limit_reaches_the_prompt_check(llm_server):
    content = "hello " * ((1024 * 1024 - 200) // 6)
    r = httpx.post(
        f"{llm_server}/api/chat", json={"model": M, "messages": [{"role": "user", "content": content}]}, timeout=60
    )
    assert (
        r.status_code == 413 and "MODEL_SERVER_MAX_PROMPT_CHARS" in r.json()["error"]
    )  # the prompt limit, not the body's
