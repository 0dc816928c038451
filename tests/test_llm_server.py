"""`python -m llm.serve` with the real SmolLM2-135M model, driven by the official `ollama` client."""

import threading
import time

import httpx
import ollama
import pytest

from tests.llm_fixtures import TEST_MODEL, llm_server  # noqa: F401 (fixture)

OPTS = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def client(llm_server):  # noqa: F811
    return ollama.Client(host=llm_server, timeout=120)


def test_tags_and_version(client, llm_server):  # noqa: F811
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


def test_num_predict_caps_the_answer(client):
    r = client.chat(model=TEST_MODEL, messages=[{"role": "user", "content": "Write a long story."}], options={"num_predict": 3})
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


def test_bad_request_is_a_400(llm_server):  # noqa: F811
    r = httpx.post(f"{llm_server}/api/chat", content=b"{not json")
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]


def test_version_answers_while_a_generation_runs(client, llm_server):  # noqa: F811
    long_job = dict(
        model=TEST_MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 2000, one number per line."}],
        options={"num_predict": 400},
    )
    t = threading.Thread(target=client.chat, kwargs=long_job)
    t.start()
    try:
        deadline = time.monotonic() + 30
        busy_latencies = []
        while t.is_alive() and len(busy_latencies) < 5 and time.monotonic() < deadline:
            started = time.monotonic()
            busy = httpx.get(f"{llm_server}/api/version", timeout=5).json()["busy"]
            if busy:
                busy_latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        assert busy_latencies, "never saw the server busy"
        # answered while generating (a blocked event loop would take the whole generation)
        assert sorted(busy_latencies)[len(busy_latencies) // 2] < 2.0, busy_latencies
    finally:
        t.join()


def test_requests_are_serialised_and_all_answered(client):
    results, errors = [], []

    def ask(i):
        try:
            results.append(client.chat(model=TEST_MODEL, messages=[{"role": "user", "content": f"Say {i}."}], options=OPTS))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 and all(r.done and r.eval_count > 0 for r in results)


def test_a_client_that_times_out_frees_the_model(llm_server, client):  # noqa: F811
    impatient = ollama.Client(host=llm_server, timeout=0.5)
    with pytest.raises(httpx.TimeoutException):
        impatient.chat(
            model=TEST_MODEL,
            messages=[{"role": "user", "content": "Count from 1 to 2000, one number per line."}],
            options={"num_predict": 4000},
        )
    started = time.monotonic()
    while httpx.get(f"{llm_server}/api/version").json()["busy"]:
        assert time.monotonic() - started < 5, "the abandoned generation kept the model busy"
        time.sleep(0.1)
    r = client.chat(model=TEST_MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2})
    assert r.done
    # 4000 tokens would take minutes; the abandoned generation was cancelled instead
    assert time.monotonic() - started < 30
