"""Fault injection as a user's bad day would bring it (issue 12): each fault for real, then a
comparison with ground truth. Full disks: tests/test_full_disk.py, tests/test_spark_full_disk.py;
a Spark kill -9: tests/test_spark_job.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from observability.schema import format_timestamp, parse_timestamp, validate_line
from observability.settings import Settings
from tests.kafka_broker import PAD_SERVICE, TansuBroker, _port_free, _ports, consume, fresh_topics, pad_partitions
from tests.spark_fixtures import ROOT, expected_metrics, job_env, run_job
from tests.transport_fixtures import summary_counts

OUTAGE_S = 120.0
GEN_START = "2026-03-02T00:00:00Z"


def _dedicated_broker(tmp_path: Path) -> TansuBroker:
    port = next((p for p in reversed(_ports()) if _port_free(p)), None)
    assert port is not None, "no free port in KAFKA_TEST_PORTS for the outage broker"
    broker = TansuBroker(port, tmp_path)
    broker.start()
    assert broker.wait_ready(), broker.log_tail()
    return broker


def _records_on(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts]) if parts else {}
        return sum(ends.values())
    finally:
        consumer.close()


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.timeout(900)
def test_a_two_minute_broker_outage_under_load_loses_and_doubles_nothing(data_dir, tmp_path):
    """The broker hangs for two minutes (SIGSTOP: connections stay open, nothing answers; Tansu's
    storage is in memory, so a hang, unlike a restart, keeps what it had) while the generator
    publishes flat out. Requests that timed out on the client are still written when the broker
    wakes, and the client sends them again: the lost-acknowledgement case. Every event of the
    generator's summary must arrive, and every window's count must be exact after the Spark job."""
    broker = _dedicated_broker(tmp_path)
    topics = fresh_topics()
    env = job_env(data_dir, TRANSPORT="kafka", KAFKA_BROKER=broker.bootstrap, TOPIC_PARTITIONS=3, **topics)
    raw_topic = topics["KAFKA_RAW_EVENTS_TOPIC"]
    err_path = tmp_path / "generator.err"
    try:
        with open(err_path, "w") as err:
            gen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "event_generator",
                    "--speed",
                    "max",
                    "--duration",
                    "5400",
                    "--start",
                    GEN_START,
                    "--seed",
                    "4",
                    "--anomaly-probability",
                    "0",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        deadline = time.monotonic() + 120
        while _records_on(broker.bootstrap, raw_topic) == 0:  # under load: records are flowing
            assert gen.poll() is None, err_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "no record reached the broker"
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            outage_ends = time.monotonic() + OUTAGE_S  # the fault's length, not a synchronisation
            while time.monotonic() < outage_ends:
                assert gen.poll() is None, "the generator gave up during the outage:\n" + err_path.read_text()[-2000:]
                time.sleep(1)
            noticed = err_path.read_text()
            assert "retrying" in noticed or "timed out" in noticed.lower(), noticed[-2000:]  # it noticed, kept trying
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        out, _ = gen.communicate(timeout=400)
        assert gen.returncode == 0, err_path.read_text()[-3000:]
        published = summary_counts(out, "generator summary")["published"]

        records = consume(broker.bootstrap, raw_topic, published, timeout_s=180)
        events = {}
        for rec in records:
            ev = validate_line(rec.value)
            events[ev.event_id] = ev
        assert len(events) == published  # nothing the generator counted is missing
        duplicates = len(records) - len(events)

        settings = Settings(
            DATA_DIR=data_dir, TRANSPORT="kafka", KAFKA_BROKER=broker.bootstrap, TOPIC_PARTITIONS=3, **topics
        )
        pad_partitions(settings, raw_topic, 3, parse_timestamp(GEN_START))  # Tansu hides each partition's last batch
        run_job(env, "--available-now", timeout=600)
        from observability.store import Store

        store = Store(Path(env["DATA_DIR"]) / "observability.duckdb")
        got = store.fetch_df(
            "SELECT window_start, service, request_count FROM service_metrics "
            f"WHERE service <> '{PAD_SERVICE}' ORDER BY ALL"
        )
        rows = [
            {
                "timestamp": format_timestamp(e.timestamp_ms),
                "service": e.service,
                "endpoint": e.endpoint,
                "status_code": e.status_code,
                "latency_ms": e.latency_ms,
            }
            for e in events.values()
        ]
        want = expected_metrics(rows)[["window_start", "service", "request_count"]]
        # the windows the watermark closed (the newest minute stays open in a bounded run)
        watermark = store.fetch_one("SELECT max(watermark) FROM stream_progress")[0]
        closed = lambda df: df[df.window_start + pd.Timedelta(minutes=1) <= watermark].reset_index(drop=True)  # noqa: E731
        got, want = closed(got), closed(want)
        assert want.window_start.nunique() >= 85  # of the run's 90 minutes
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        print(f"outage: published={published} records={len(records)} duplicates={duplicates}")
    finally:
        broker.stop()


GEN_ARGS = (
    "--speed",
    "max",
    "--duration",
    "7200",
    "--start",
    "2026-03-02T00:00:00Z",
    "--seed",
    "8",
    "--anomaly-probability",
    "0",
)


@pytest.mark.e2e
def test_the_generator_killed_mid_run_leaves_only_whole_events_of_its_stream(data_dir, tmp_path):
    """kill -9 of the generator while it publishes: every record in the log is a whole event of
    the stream an undisturbed run makes (same seed), each partition a prefix of that run's, nothing
    torn, doubled or invented; a restarted generator appends after it."""
    from observability.transport.local_log import LocalLogReader

    reference = tmp_path / "reference.jsonl"
    env = dict(os.environ, DATA_DIR=str(data_dir), TRANSPORT="local", PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "event_generator", *GEN_ARGS, "--to-file", str(reference)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    stream = reference.read_bytes().splitlines()

    gen = subprocess.Popen(
        [sys.executable, "-m", "event_generator", *GEN_ARGS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log_root = data_dir / "log"
    deadline = time.monotonic() + 120
    while _log_records(log_root) < len(stream) // 4:  # mid-run: a quarter is written
        assert gen.poll() is None, "the generator finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gen.kill()
    gen.wait(timeout=30)

    from observability.transport.base import partition_for

    reader = LocalLogReader(log_root)
    ends = reader.end_offsets("raw_events")
    by_partition = {p: [] for p in ends}
    for line in stream:  # the reference run, split as the producer partitions it (key = trace id)
        trace_id = validate_line(line).trace_id.encode()
        by_partition[partition_for(trace_id, len(ends))].append(line)
    logged = 0
    for p, end in ends.items():
        values = [r.value for r in reader.read("raw_events", p, 0, end)]
        assert values == by_partition[p][: len(values)], f"partition {p} is not a prefix of the undisturbed stream"
        logged += len(values)
    assert 0 < logged < len(stream)

    again = subprocess.run(
        [sys.executable, "-m", "event_generator", "--speed", "max", "--duration", "60", "--seed", "9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    added = summary_counts(again.stdout, "generator summary")["published"]
    assert _log_records(log_root) == logged + added  # appended after the cut, nothing lost either side


def _log_records(log_root: Path) -> int:
    from observability.transport.local_log import LocalLogReader

    if not (log_root / "raw_events" / "meta.json").exists():
        return 0
    return sum(LocalLogReader(log_root).end_offsets("raw_events").values())


DETECTOR_COLUMNS = "id, service, window_start, anomaly_type, severity, round(score, 9) AS score"
INCIDENT_COLUMNS = "id, service, started_at, ended_at, status, peak_severity, root_cause_service"


def _detector(data_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, DATA_DIR=str(data_dir), TRANSPORT="local", PYTHONPATH=str(ROOT))
    env.pop("DUCKDB_PATH", None)
    return subprocess.Popen(
        [sys.executable, "-m", "anomaly_detection.detector", "--once"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _detected(data_dir: Path):
    from observability.store import Store

    store = Store(data_dir / "observability.duckdb")
    return (
        store.fetch_df(f"SELECT {DETECTOR_COLUMNS} FROM anomalies ORDER BY ALL"),
        store.fetch_df(f"SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY ALL"),
    )


def _published_ids(data_dir: Path) -> set[str]:
    import json

    from observability.transport.local_log import LocalLogReader

    reader = LocalLogReader(data_dir / "log")
    return {
        json.loads(r.value)["id"]
        for p, end in reader.end_offsets("anomalies").items()
        for r in reader.read("anomalies", p, 0, end)
    }


@pytest.mark.e2e
def test_the_detector_killed_mid_backlog_then_restarted_finds_what_an_undisturbed_run_finds(tmp_path, monkeypatch):
    """kill -9 of `detector --once` part-way through a backlog of several chunks, at whatever point
    it has reached (once a first chunk is committed), then a restart: anomalies and incidents
    identical to an undisturbed run over a copy of the same store, and every anomaly on the topic."""
    import shutil

    from observability.store import Store
    from tests.detection_fixtures import seed_cascade

    calm, faulty = tmp_path / "undisturbed", tmp_path / "killed"
    calm.mkdir()
    seeded = Store(calm / "observability.duckdb")
    seeded.migrate()
    seed_cascade(seeded, minutes=1200, fault=(1000, 1010))
    shutil.copytree(calm, faulty)

    undisturbed = _detector(calm)
    assert undisturbed.wait(timeout=600) == 0, undisturbed.stderr.read()[-3000:]

    store = Store(faulty / "observability.duckdb")
    run = _detector(faulty)
    deadline = time.monotonic() + 300
    while store.fetch_one("SELECT count(*) FROM detector_progress")[0] == 0:  # a first chunk committed
        assert run.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run.kill()
    run.wait(timeout=30)
    restarted = _detector(faulty)
    assert restarted.wait(timeout=600) == 0, restarted.stderr.read()[-3000:]

    want_anomalies, want_incidents = _detected(calm)
    got_anomalies, got_incidents = _detected(faulty)
    assert len(want_anomalies) > 0 and len(want_incidents) > 0
    pd.testing.assert_frame_equal(got_anomalies, want_anomalies)
    pd.testing.assert_frame_equal(got_incidents, want_incidents)
    assert _published_ids(faulty) == set(got_anomalies.id)


@pytest.mark.e2e
def test_narrator_and_model_server_killed_mid_work_narrate_every_incident_exactly_once(store, settings, tmp_path):
    """kill -9 of the narrator once it has written a first summary, and kill -9 of the model server
    while incidents are still pending; both restarted: every incident ends with exactly one summary."""
    from tests.llm_fixtures import TEST_MODEL, free_port, model_server_process, seed_scenario

    # four incidents: each kill below still leaves incidents pending (asserted), and every one
    # more is a ~10 s generation on CI's 2 cores (six took 80 s)
    ids = [
        seed_scenario(store, settings.bronze_dir, "payments", minutes_ago=300 - 40 * i, metrics=i == 0)
        for i in range(4)
    ]
    port = free_port()
    env = dict(
        os.environ,
        DATA_DIR=str(settings.data_dir),
        OLLAMA_URL=f"http://127.0.0.1:{port}",
        OLLAMA_MODEL=TEST_MODEL,
        NARRATE_INTERVAL_SECONDS="1",
        PYTHONPATH=str(ROOT),
    )
    env.pop("DUCKDB_PATH", None)

    def summaries() -> dict[str, int]:
        return dict(store.fetch_all("SELECT incident_id, count(*) FROM incident_summaries GROUP BY ALL"))

    def narrator() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "llm.narrator"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_for(predicate, what: str, timeout_s: float = 300):
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {summaries()}"
            time.sleep(0.1)

    first = narrator()
    try:
        with model_server_process(port, TEST_MODEL, data_dir=tmp_path / "serve1") as server:
            wait_for(lambda: len(summaries()) >= 1, "a first summary")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            assert len(summaries()) < len(ids), "the kill came too late to leave work pending"
            second = narrator()
            wait_for(lambda: len(summaries()) >= 2, "a summary from the restarted narrator")
            os.killpg(server.pid, signal.SIGKILL)  # the model server dies with incidents still pending
        assert len(summaries()) < len(ids)
        with model_server_process(port, TEST_MODEL, data_dir=tmp_path / "serve2"):
            wait_for(lambda: len(summaries()) == len(ids), "every incident narrated")
            assert second.poll() is None, "the narrator must ride out the model server's death"
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert summaries() == {i: 1 for i in ids}


@pytest.mark.e2e
def test_the_otlp_receiver_killed_under_load_loses_nothing_it_acknowledged(data_dir):
    """Clients post span batches while the receiver is killed (`kill -9`) twice and restarted on
    the same ports: every span of every request answered 200 is on the raw-events topic."""
    import threading

    import httpx

    from tests.otlp_fixtures import start_receiver, stop_receiver
    from tests.otlp_samples import span, traces

    rec = start_receiver(data_dir)
    ports = {"OTLP_HTTP_PORT": str(rec.http_port), "OTLP_GRPC_PORT": str(rec.grpc_port)}
    acked: set[str] = set()
    answers: dict[str, int] = {}
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while not stop.is_set():
                n += 1
                trace_id = uuid.uuid4().bytes
                spans = [span(f"GET /w{worker}", trace_id=trace_id, span_id=os.urandom(8)) for _ in range(50)]
                body = traces(*spans).SerializeToString()
                try:
                    r = http.post(
                        rec.http_url + "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
                    )
                except httpx.HTTPError:
                    answers["error"] = answers.get("error", 0) + 1
                    stop.wait(0.5)  # back off while the receiver is away, as the SDK's exporter does
                    continue
                answers[str(r.status_code)] = answers.get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    acked.update(s.span_id.hex() for s in spans)
                stop.wait(0.01)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            target = len(acked) + 2000
            deadline = time.monotonic() + 120
            while len(acked) < target:  # under load: requests are being acknowledged
                assert time.monotonic() < deadline, answers
                time.sleep(0.05)
            rec.proc.kill()  # with requests in flight
            rec.proc.wait(timeout=30)
            rec = start_receiver(data_dir, env_extra=ports)
        target = len(acked) + 2000
        deadline = time.monotonic() + 120
        while len(acked) < target:
            assert time.monotonic() < deadline, answers
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        stop_receiver(rec)

    from observability.transport.local_log import LocalLogReader

    reader = LocalLogReader(data_dir / "log")
    logged = {
        validate_line(r.value).span_id
        for p, end in reader.end_offsets("raw_events").items()
        for r in reader.read("raw_events", p, 0, end)
    }
    assert answers.get("error", 0) > 0, "no request was cut off by a kill"
    assert acked <= logged, f"{len(acked - logged)} acknowledged spans missing"
