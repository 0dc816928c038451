"""spark.dedupe: a retried batch (same event_ids, later offsets) is counted once, also across ranges and restarts."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from spark import dedupe
from spark.source import RangePartition, RawEventsStreamReader, transport_options
from spark.staging import load_manifests
from tests.spark_fixtures import make_events

TOPIC = "raw_events"


def table(ids):
    return pa.table({"event_id": pa.array(ids, pa.string()), "n": list(range(len(ids)))})


def test_drop_duplicates_keeps_first_occurrences_not_seen_before():
    kept, dropped = dedupe.drop_duplicates(table(["a", "b", "a", "c", "b", "d"]), pa.array(["d"]))
    assert kept.column("event_id").to_pylist() == ["a", "b", "c"] and kept.column("n").to_pylist() == [0, 1, 3]
    assert dropped == 3
    same, none = dedupe.drop_duplicates(table(["x", "y"]), pa.array([], pa.string()))
    assert none == 0 and same.num_rows == 2


def publish_lines(settings, lines):
    from observability.transport.local_log import LocalLogProducer, ensure_topic

    ensure_topic(settings.log_dir, TOPIC, 1)
    with LocalLogProducer(settings.log_dir, partitions=1) as producer:
        for line in lines:
            producer.send(TOPIC, line)
        producer.flush()


def read_range(settings, start, end, horizon):
    opts = transport_options(settings)
    opts.update(
        topic=TOPIC,
        bronze_dir=str(settings.bronze_dir),
        staging_dir=str(settings.checkpoint_dir / "staging"),
        dedup_horizon=str(horizon),
    )
    batches = list(RawEventsStreamReader(opts).read(RangePartition(0, start, end)))
    staged = {(s.start, s.end): s for s in load_manifests(settings.checkpoint_dir / "staging")}[(start, end)]
    # the events Spark is handed, as the requests its service-level partials count (all are entry spans)
    counted = sum(pc.sum(pc.filter(b["request_count"], pc.is_null(b["endpoint"]))).as_py() or 0 for b in batches)
    return counted, staged


@pytest.fixture
def retried_log(settings):
    """300 events, then a retry of events 250-299 (a lost ack), then 100 more events."""
    events = make_events(400, 1_700_000_000_000, seed=3)[:400]
    lines = [json.dumps(e).encode() for e in events]
    publish_lines(settings, lines[:300] + lines[250:300] + lines[300:])
    return events


def test_a_retried_batch_in_the_next_range_is_dropped_and_the_replay_agrees(settings, retried_log):
    # batch 1 ends just before the retry; batch 2 holds the retried copies and the new events
    assert read_range(settings, 0, 300, horizon=1000)[0] == 300
    rows, staged = read_range(settings, 300, 450, horizon=1000)
    assert (rows, staged.valid, staged.duplicates) == (100, 100, 50)

    # a replay of the range after a restart that lost the saved ids reads the horizon back from the log
    shutil.rmtree(dedupe.ids_dir(settings.checkpoint_dir / "staging"))
    rows, staged = read_range(settings, 300, 450, horizon=1000)
    assert (rows, staged.duplicates) == (100, 50)


def test_duplicates_within_one_range_and_the_horizon_bound(settings, retried_log):
    rows, staged = read_range(settings, 0, 450, horizon=1000)
    assert (rows, staged.duplicates) == (400, 50)
    # the copies sit 50 offsets after the originals: a 40-offset horizon no longer sees most of them
    for p in settings.checkpoint_dir.glob("staging/**/*"):
        p.unlink() if p.is_file() else None
    assert read_range(settings, 0, 300, horizon=40)[0] == 300
    rows, staged = read_range(settings, 300, 450, horizon=40)
    assert staged.duplicates == 40 and rows == 110, "only the copies within 40 offsets of an original"


def test_saved_ids_are_bounded_by_the_horizon(settings, retried_log):
    for start, end in ((0, 150), (150, 300), (300, 450)):
        read_range(settings, start, end, horizon=100)
    directory = dedupe.ids_dir(settings.checkpoint_dir / "staging")
    files = sorted(p.name for p in directory.iterdir())
    # [0, 150) is below the horizon of every range from 300 on; [150, 300) a replay of [300, 450) still needs
    assert files == [f"{TOPIC}-p0-000000000150-000000000300.arrow", f"{TOPIC}-p0-000000000300-000000000450.arrow"]
    saved = dedupe._read(directory / files[1])
    assert saved.column("offset").to_pylist() == list(range(350, 450)), "a range keeps only its last `horizon` offsets"


def test_a_range_is_parsed_and_staged_with_the_cyclic_collector_paused(settings, retried_log, monkeypatch):
    """The source worker pauses the collector while it builds the range's objects (issue 17:
    observability.memory.gc_paused) and runs it again before it hands Spark the partials."""
    import gc

    from spark import staging

    seen = []
    stage = staging.stage_range

    def recording_stage(*args, **kwargs):
        seen.append(gc.isenabled())
        return stage(*args, **kwargs)

    monkeypatch.setattr(staging, "stage_range", recording_stage)
    reader = RawEventsStreamReader(
        {
            **transport_options(settings),
            "topic": TOPIC,
            "bronze_dir": str(settings.bronze_dir),
            "staging_dir": str(settings.checkpoint_dir / "staging"),
        }
    )
    batches = reader.read(RangePartition(0, 0, 300))
    first = next(batches)
    assert seen == [False] and gc.isenabled(), "paused while staging, running again when Spark gets rows"
    assert first.num_rows > 0
    list(batches)
    assert gc.isenabled()


def test_bronze_files_dictionary_encode_only_the_few_valued_columns(settings, retried_log):
    import pyarrow.parquet as pq

    from observability.bronze import BRONZE_DICTIONARY_COLUMNS

    read_range(settings, 0, 300, horizon=0)
    files = sorted(settings.bronze_dir.rglob("*.parquet"))
    assert files
    meta = pq.ParquetFile(files[0]).metadata
    encoded = {
        meta.schema.column(i).name: any("DICTIONARY" in e for e in meta.row_group(0).column(i).encodings)
        for i in range(meta.num_columns)
    }
    assert {c for c, d in encoded.items() if d} == set(BRONZE_DICTIONARY_COLUMNS)
    assert pq.read_table(files[0]).num_rows > 0
