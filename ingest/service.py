"""`python -m ingest`: the OTLP receiver (HTTP on OTLP_HTTP_PORT, gRPC on OTLP_GRPC_PORT).

Both servers share one `Publisher` (one producer, one publisher thread). A
heartbeat thread records `heartbeats('ingest')` in DuckDB, like the other
long-running services, so `make health` and the dashboard see it alive; the
receiver's own `GET /health` says whether it can publish.
"""

from __future__ import annotations

import argparse
import logging
import threading

import uvicorn

from ingest.grpc_server import create_server
from ingest.http_server import create_app
from ingest.publish import Publisher
from ingest.workers import Mapper
from observability import metrics, tables
from observability.logs import configure_logging, get_logger
from observability.settings import Settings, get_settings

log = get_logger("ingest")

HEARTBEAT_INTERVAL_S = 15.0


class Heartbeat:
    """Writes the `ingest` heartbeat row every interval; a busy or missing DuckDB costs a log line, not the receiver."""

    def __init__(self, settings: Settings, publisher: Publisher, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        from observability.store import Store

        self.store = Store.from_settings(settings, max_wait_seconds=10)
        self.publisher = publisher
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def detail(self) -> str:
        s = self.publisher.stats
        state = "publishing" if self.publisher.healthy else f"transport unavailable: {s.last_error}"
        return f"{state}; records={s.records} dead_letters={s.dead_letters} flushes={s.flushes} failures={s.failures}"

    def _run(self) -> None:
        try:
            self.store.migrate()  # the heartbeats table may not exist yet on a fresh DATA_DIR
        except Exception as exc:
            log.warning("schema migration failed", error=str(exc)[:300])
        while True:
            try:
                self.store.heartbeat(tables.INGEST_HEARTBEAT, self.detail())
            except Exception as exc:
                log.warning("heartbeat failed", error=str(exc)[:300])
            if self._stop.wait(self.interval_s):
                return


class _Uvicorn(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill the process
    before the gRPC server and the publisher close: stop serving, and let `serve()` finish."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(settings: Settings) -> int:
    mapper = Mapper(settings.otlp_workers)  # spawned before any server thread exists
    publisher = Publisher.from_settings(settings)
    try:
        grpc_server, grpc_port = create_server(settings, publisher, mapper)
    except (OSError, RuntimeError) as exc:
        log.error("cannot listen for OTLP/gRPC", host=settings.otlp_host, port=settings.otlp_grpc_port, error=str(exc))
        publisher.close()
        mapper.close()
        return 1
    grpc_server.start()
    metrics.serve(metrics.INGEST, settings)
    heartbeat = Heartbeat(settings, publisher).start()
    config = uvicorn.Config(
        create_app(settings, publisher, mapper),
        host=settings.otlp_host,
        port=settings.otlp_http_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    server = _Uvicorn(config)
    log.info(
        "receiver starting",
        host=settings.otlp_host,
        http_port=settings.otlp_http_port,
        grpc_port=grpc_port,
        workers=settings.otlp_workers,
        transport=settings.transport,
        max_body_bytes=settings.otlp_max_body_bytes,
    )
    try:
        server.run()  # returns on SIGINT/SIGTERM
    finally:
        grpc_server.stop(grace=5).wait(10)
        heartbeat.stop()
        publisher.close()
        mapper.close()
        log.info("receiver stopped", records=publisher.stats.records, failures=publisher.stats.failures)
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m ingest",
        description="OTLP receiver: OTLP/HTTP (protobuf and JSON) on OTLP_HTTP_PORT and OTLP/gRPC on OTLP_GRPC_PORT, "
        "bound to OTLP_HOST; spans go to KAFKA_RAW_EVENTS_TOPIC, logs to KAFKA_LOGS_TOPIC, metrics to "
        "KAFKA_METRICS_TOPIC, rejects to KAFKA_DEAD_LETTER_TOPIC.",
    ).parse_args(argv)
    configure_logging()
    logging.getLogger("kafka").setLevel(logging.WARNING)
    return serve(get_settings())
