"""The streaming job: `python -m spark.streaming_job [--available-now]`.

Two Structured Streaming queries in one Spark application:

- `metrics`: raw-events topic -> parse/validate (once, in the source) ->
  event-time watermark -> 1-minute windows per service and per (service,
  endpoint) -> update mode -> `foreachBatch` DuckDB sink. Per batch the sink
  also writes the trace samples, dependency edges, dead letters (parse
  rejects), a stream_progress row, the updated windows' aggregated-metrics
  records (staged in the outbox) and its bronze files queued for the silver and
  gold layers, all in one transaction with its commit row; after the commit
  the outbox publisher sends those records (and any an earlier, killed run left
  unsent) and marks them sent, and the layer queue (`spark.layer_queue`)
  writes the layers while Spark runs the next batch.
- `dead_letters`: the dead-letter topic (producers' rejects) -> dead_letter.
- `logs`, `otel_metrics`: the OTLP logs and metrics topics -> validated once
  (`observability.records`) -> the `logs` / `otel_metrics` tables, their
  rejects -> dead_letter, with the batch's commit row in the same transaction.

Continuous mode triggers every TRIGGER_SECONDS and restarts a failed query
with backoff; `--available-now` processes everything available, writes it
and exits.

This module wires the queries and their batch functions; the parts live beside
it: `supervisor` (start, restart and stop the queries), `publish` (the
aggregated-metrics records and their outbox publisher), `progress` (the
terminal progress bar), `checkpoint` (what is read from Spark's checkpoint).
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC
from pathlib import Path

from observability import tables
from observability.faults import fault_point
from observability.logs import get_logger
from observability.metrics import SPARK, record_batch
from observability.metrics import serve as serve_metrics
from observability.run_loop import stop_on_signals
from observability.settings import Settings, get_settings
from observability.store import Store
from spark.layer_queue import LayerQueue
from spark.progress import BacklogProgress
from spark.publish import AggregatePublisher, aggregate_records
from spark.supervisor import QuerySupervisor, RecordArrivals

log = get_logger("spark.streaming_job")


class StreamingJob:
    def __init__(self, spark, settings: Settings, store: Store, *, owns_session: bool = False) -> None:
        from spark.side_outputs import SAMPLE_CAPS

        self.spark = spark
        # True when this job's process stops the session after run() (the CLI): only then may an
        # available-now run end Spark's planner daemons, which no later query could plan without
        self.owns_session = owns_session
        self.settings = settings
        self.store = store
        self.metrics_checkpoint = settings.checkpoint_dir / "metrics"
        self.dead_letter_checkpoint = settings.checkpoint_dir / "dead_letters"
        self.staging_dir = settings.checkpoint_dir / "staging" / settings.raw_events_topic
        self.sample_caps = SAMPLE_CAPS
        self.publisher = AggregatePublisher(store, settings)
        self.layer_queue = LayerQueue(store, settings)
        self.stop_event: threading.Event | None = None
        self._last_beat = float("-inf")  # monotonic time of the newest heartbeat written
        self._sinks: dict[str, object] = {}
        self.record_topics = {"logs": settings.logs_topic, "otel_metrics": settings.metrics_topic}
        # queries started once their topic has a record (or they ran before): an idle one costs a
        # ~120 MB Python source process and planning work every trigger (issue 17)
        self.lazy_topics = {"dead_letters": settings.dead_letter_topic, **self.record_topics}
        self.records_arrived = RecordArrivals(settings, self.lazy_topics)
        self.totals = {
            "batches": 0,
            "rows_in": 0,
            "rows_rejected": 0,
            "rows_late": 0,
            "dead_letters_ingested": 0,
            "logs": 0,
            "otel_metrics": 0,
            "records_rejected": 0,
        }
        self.progress = BacklogProgress()  # drawn only by an interactive available-now run

    # -- streams ----------------------------------------------------------------
    def _source_options(self, topic: str) -> dict[str, str]:
        from spark.source import transport_options

        opts = transport_options(self.settings)
        opts.update(topic=topic, bronze_dir=str(self.settings.bronze_dir), staging_dir=str(self.staging_dir))
        return opts

    def events_stream(self):
        """Partial window aggregates (`spark.partials`) of the raw-events topic's valid events."""
        from spark.source import RAW_FORMAT

        topic = self.settings.raw_events_topic
        if self.settings.spark_source == "native":
            from spark.source import native_kafka_events

            return native_kafka_events(self.spark, self.settings, self._source_options(topic))
        return self.spark.readStream.format(RAW_FORMAT).options(**self._source_options(topic)).load()

    def _trigger(self, available_now: bool) -> dict:
        if available_now:
            return {"availableNow": True}
        return {"processingTime": f"{self.settings.trigger_seconds} seconds"}

    def start_metrics(self, available_now: bool):
        from spark.transforms import window_metrics_from_partials

        self.staging_dir.mkdir(parents=True, exist_ok=True)
        partials = self.events_stream().withWatermark("timestamp", f"{self.settings.watermark_seconds} seconds")
        return (
            window_metrics_from_partials(partials)
            .writeStream.queryName("metrics")
            .outputMode("update")
            .foreachBatch(self.metrics_batch)
            .option("checkpointLocation", str(self.metrics_checkpoint))
            .trigger(**self._trigger(available_now))
            .start()
        )

    def start_dead_letters(self, available_now: bool):
        from spark.source import DEAD_LETTER_FORMAT

        stream = (
            self.spark.readStream.format(DEAD_LETTER_FORMAT)
            .options(**self._source_options(self.settings.dead_letter_topic))
            .load()
        )
        return (
            stream.writeStream.queryName("dead_letters")
            .foreachBatch(self.dead_letter_batch)
            .option("checkpointLocation", str(self.dead_letter_checkpoint))
            .trigger(**self._trigger(available_now))
            .start()
        )

    def start_records(self, stream_name: str, available_now: bool):
        """The logs or otel_metrics query: a record topic -> its table (stateless)."""
        from spark.source import RECORD_FORMATS

        stream = (
            self.spark.readStream.format(RECORD_FORMATS[stream_name])
            .options(**self._source_options(self.record_topics[stream_name]))
            .load()
        )
        return (
            stream.writeStream.queryName(stream_name)
            .foreachBatch(lambda df, batch_id: self.records_batch(stream_name, df, batch_id))
            .option("checkpointLocation", str(self.settings.checkpoint_dir / stream_name))
            .trigger(**self._trigger(available_now))
            .start()
        )

    # -- sinks --------------------------------------------------------------------
    def _sink(self, name: str, checkpoint: Path):
        """The sink's commit key includes the query id: a new checkpoint starts afresh."""
        from spark.checkpoint import query_id
        from spark.sink import DuckDBSink

        if name not in self._sinks:
            self._sinks[name] = DuckDBSink(self.store, f"{name}:{query_id(checkpoint) or 'unknown'}", self.sample_caps)
        return self._sinks[name]

    def metrics_batch(self, df, batch_id: int) -> None:
        """foreachBatch of the metrics query (runs in the driver)."""
        from spark.staging import clear_manifests, load_manifests

        t0 = time.monotonic()
        metrics = df.toPandas()  # runs the micro-batch: source reads + stages, stateful aggregation
        t_aggregate = time.monotonic() - t0
        staged = load_manifests(self.staging_dir)
        sink = self._sink("metrics", self.metrics_checkpoint)
        if sink.is_committed(batch_id):
            log.info("batch already committed, replay is a no-op", batch_id=batch_id)
            clear_manifests(self.staging_dir, staged)
            return
        t1 = time.monotonic()
        out = self.batch_output(batch_id, metrics, staged)
        out.layer_files = [f for s in staged for f in s.bronze_files]  # silver and gold: spark.layer_queue
        out.heartbeat = tables.SPARK_HEARTBEAT
        out.outbox_topic = self.publisher.topic
        out.outbox = aggregate_records(metrics, batch_id, sink.sink)
        t_side = time.monotonic() - t1
        written = sink.write_batch(out)
        clear_manifests(self.staging_dir, staged)
        if written:
            fault_point("spark.after_commit")
        published = self.publisher.try_publish()  # at least once, stable ids; consumers keep the latest per key
        if written:
            self.layer_queue.notify(sink.batch_key(batch_id), out.layer_files)
        t_wait = time.monotonic()
        self.layer_queue.wait_until(1, self.stop_event)  # one batch's layers beside the next batch, no more
        t_wait = time.monotonic() - t_wait
        if not written:
            self.store.heartbeat(tables.SPARK_HEARTBEAT, f"batch {batch_id}")
        self._last_beat = time.monotonic()
        if written:
            for key, value in (
                ("rows_in", out.rows_in),
                ("rows_rejected", out.rows_rejected),
                ("rows_late", out.rows_late),
            ):
                self.totals[key] += value
            self.totals["batches"] += 1
            self.progress.advance(out.rows_in)
            record_batch(
                SPARK,
                seconds=time.monotonic() - t0,
                kind="span",
                rows_in=out.rows_in,
                rows_out=len(metrics),
                out_kind="window",
                rejects={"invalid": out.rows_rejected, "late": out.rows_late},
                newest_event_time=out.max_event_time,
            )
        log.info(
            "batch committed" if written else "batch already committed",
            batch_id=batch_id,
            rows_in=out.rows_in,
            rows_rejected=out.rows_rejected,
            rows_late=out.rows_late,
            duplicates=sum(s.duplicates for s in staged),
            windows=len(metrics),
            published=published,
            samples=len(out.samples),
            edges=len(out.dependencies),
            watermark=str(out.watermark),
            seconds=round(time.monotonic() - t0, 2),
            aggregate_seconds=round(t_aggregate, 2),
            side_outputs_seconds=round(t_side, 2),
            layers_wait_seconds=round(t_wait, 2),
        )

    def batch_output(self, batch_id: int, metrics, staged):
        """Everything the batch writes, from what the source staged for its ranges."""
        import pandas as pd

        from spark import trace_index
        from spark.checkpoint import batch_watermark_ms
        from spark.side_outputs import EDGE_COLUMNS, SAMPLE_COLUMNS, late_rows
        from spark.sink import BatchOutput
        from spark.staging import read_rejects

        # Spark drops rows of windows ending at or before the previous batch's
        # watermark; windows ending at or before this batch's are final now.
        late_wm = batch_watermark_ms(self.metrics_checkpoint, batch_id - 1)
        current_wm = batch_watermark_ms(self.metrics_checkpoint, batch_id)
        samples = pd.DataFrame([r for s in staged for r in s.samples], columns=list(SAMPLE_COLUMNS))
        samples["window_start"] = pd.to_datetime(samples["window_start_ms"], unit="ms")
        edges = pd.DataFrame([r for s in staged for r in s.edges], columns=list(EDGE_COLUMNS))
        edges = edges.groupby(["window_start_ms", "parent_service", "child_service"], as_index=False).sum()
        edges["window_start"] = pd.to_datetime(edges["window_start_ms"], unit="ms")
        max_ms = [s.max_event_ms for s in staged if s.max_event_ms is not None]
        return BatchOutput(
            batch_id=batch_id,
            metrics=metrics,
            samples=samples,
            dependencies=edges,
            dead_letters=read_rejects(staged).to_pandas(),
            traces=trace_index.batch_frame(staged),
            rows_in=sum(s.valid + s.rejected for s in staged),
            rows_rejected=sum(s.rejected for s in staged),
            rows_late=sum(late_rows(s.window_counts, late_wm) for s in staged),
            max_event_time=_utc(max(max_ms)) if max_ms else None,
            watermark=_utc(current_wm) if current_wm else None,
        )

    def dead_letter_batch(self, df, batch_id: int) -> None:
        rows = df.toPandas()
        sink = self._sink("dead_letters", self.dead_letter_checkpoint)
        written = sink.write_dead_letters(batch_id, rows)
        if written:
            self.totals["dead_letters_ingested"] += len(rows)
            record_batch(SPARK, kind="dead_letter", rows_in=len(rows), rows_out=len(rows))
        log.info("dead-letter batch", batch_id=batch_id, rows=len(rows), written=written)

    def records_batch(self, stream_name: str, df, batch_id: int) -> None:
        """foreachBatch of a logs or otel_metrics query (runs in the driver)."""
        from spark.otlp_records import STREAMS, split

        stream = STREAMS[stream_name]
        sink = self._sink(stream_name, self.settings.checkpoint_dir / stream_name)
        if sink.is_committed(batch_id):
            log.info("batch already committed, replay is a no-op", query=stream_name, batch_id=batch_id)
            return
        records, dead = split(df.toArrow(), stream)
        written = sink.write_records(batch_id, stream.table, records, dead)
        if written:
            self.totals[stream_name] += records.num_rows
            self.totals["records_rejected"] += dead.num_rows
            n_in, rejects = records.num_rows + dead.num_rows, {f"{stream_name}_invalid": dead.num_rows}
            record_batch(SPARK, kind=stream_name, rows_in=n_in, rows_out=records.num_rows, rejects=rejects)
        log.info(
            "batch committed" if written else "batch already committed",
            query=stream_name,
            batch_id=batch_id,
            rows=records.num_rows,
            rejected=dead.num_rows,
        )

    def _beat_if_quiet(self) -> None:
        """The supervisor's heartbeat, unless a batch's commit wrote one within the last trigger."""
        if time.monotonic() - self._last_beat >= self.settings.trigger_seconds:
            self.store.heartbeat(tables.SPARK_HEARTBEAT, "running")
            self._last_beat = time.monotonic()

    def _free_planners(self) -> None:
        """Every started query has planned: end Spark's idle planner daemons (`spark.planners`)."""
        from spark.planners import reap

        reap()

    def drain_layers(self) -> int:
        """Wait for the queued batches' layers (an available-now run's end); returns those left."""
        t0 = time.monotonic()
        left = self.layer_queue.wait_until(0, self.stop_event)
        log.info(
            "layer queue drained", left=left, written=self.layer_queue.written, seconds=round(time.monotonic() - t0, 2)
        )
        return left

    def close(self) -> None:
        self.layer_queue.stop(timeout=60)  # the batch in progress; the rest stays queued for the next run
        self.records_arrived.close()
        self.publisher.close()
        self.progress.close()

    # -- running --------------------------------------------------------------------
    def starters(self) -> dict:
        """Each query's name -> a function starting it (`available_now` -> StreamingQuery)."""
        starters = {"metrics": self.start_metrics, "dead_letters": self.start_dead_letters}
        for stream_name in self.record_topics:
            starters[stream_name] = lambda available_now, name=stream_name: self.start_records(name, available_now)
        return starters

    def run(self, available_now: bool, stop: threading.Event) -> int:
        if available_now:
            self.progress = BacklogProgress.open(self.settings, self.metrics_checkpoint)
        self.stop_event = stop
        self.publisher.try_publish()  # what a killed run committed but did not get sent
        self.layer_queue.start()  # first what a killed run queued, then each batch's
        supervisor = QuerySupervisor(
            self.starters(),
            available_now=available_now,
            stop=stop,
            arrived=self.records_arrived,
            heartbeat=self._beat_if_quiet,
            heartbeat_every=self.settings.trigger_seconds,
            # available-now only: every query starts at once and none restarts, so no planning
            # follows. A continuous job keeps them: a lazily started or restarted query's `load()`
            # failed with "java.io.IOException: Stream closed" after its planner daemon had been
            # ended (Spark writes to the dead daemon while dropping the idle workers it forked);
            # so does any later query in the same session, hence only a job that owns its session
            settled=(
                self._free_planners
                if available_now and self.owns_session and self.settings.spark_reap_planners
                else None
            ),
        )
        # the dead-letter and record queries start once their topics have data (see RecordArrivals)
        rc = supervisor.run(eager=("metrics",), lazy=list(self.lazy_topics))
        if available_now and rc == 0:
            self.drain_layers()
        return rc


def _utc(ms: int):
    """Epoch ms -> naive UTC datetime (the form TIMESTAMP columns hold)."""
    from datetime import datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m spark.streaming_job", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--available-now",
        action="store_true",
        help="process everything available now, write it, and exit (replays, tests, backfills)",
    )
    p.add_argument(
        "--no-final-flush",
        action="store_true",
        help="with --available-now: keep the last minute open (the input continues later); by default the "
        "watermark moves to the end of the input so every window is final (spark/final_flush.py)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.from_settings(settings)
    store.migrate()
    from observability.transport import create_topics
    from spark.session import build_session

    create_topics(settings)
    stop = stop_on_signals()
    mode = "available-now" if args.available_now else f"continuous (trigger {settings.trigger_seconds:g}s)"
    log.info(
        "starting",
        mode=mode,
        transport=settings.transport,
        master=settings.spark_master,
        watermark_seconds=settings.watermark_seconds,
        source=settings.spark_source,
    )
    if not args.available_now:
        serve_metrics(SPARK, settings)
    t0 = time.monotonic()
    spark = build_session(settings)
    job = StreamingJob(spark, settings, store, owns_session=True)
    try:
        rc = job.run(args.available_now, stop)
        if args.available_now and rc == 0 and not args.no_final_flush and not stop.is_set():
            from spark.final_flush import flush

            flush(store, settings)
    finally:
        job.close()
        spark.stop()
    seconds = time.monotonic() - t0
    t = job.totals
    print(
        f"spark: {t['rows_in']} events in {t['batches']} batches, {t['rows_rejected']} rejected, "
        f"{t['rows_late']} late, {t['dead_letters_ingested']} dead letters ingested, {t['logs']} logs, "
        f"{t['otel_metrics']} metric points, {t['records_rejected']} logs/metrics rejected, {seconds:.1f}s",
        flush=True,
    )
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
