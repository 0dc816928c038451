"""`--replay`: valid lines are all published with their own timestamps, bad ones go to the dead-letter topic."""

from __future__ import annotations

import json
import time

from observability.dead_letter import parse_dead_letter
from observability.schema import validate_line
from tests.event_samples import BAD_LINES, NOW_MS, good_event
from tests.transport_fixtures import read_topic, record_ts, run_cli, summary_counts


def test_bad_lines_rejected_with_reason_good_lines_around_them_published(backend_settings, tmp_path):
    settings = backend_settings
    path = tmp_path / "mixed.jsonl"
    good, bad_at = [], {}
    with open(path, "wb") as f:
        lineno = 0
        for i, (kind, raw, field) in enumerate(BAD_LINES):
            for j in range(3):  # good lines around every bad one
                ev = good_event(1000 * i + j)
                if j == 1:
                    del ev["event_id"]  # generated on publish
                good.append(ev)
                f.write(json.dumps(ev).encode() + b"\n")
                lineno += 1
            f.write(raw + b"\n")
            lineno += 1
            bad_at[lineno] = (kind, field)
        f.write(b"\n")  # a blank line is neither
        ev = good_event(99_999, ts_ms=NOW_MS - 5000)
        good.append(ev)
        f.write(json.dumps(ev).encode())  # last line without a newline

    proc = run_cli("--replay", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary_counts(proc.stdout, "replay summary") == {"published": len(good), "rejected": len(BAD_LINES)}

    records = read_topic(settings, settings.raw_events_topic, len(good))
    assert len(records) == len(good)
    published = [validate_line(r.value) for r in records]
    assert all(len(e.event_id) == 32 for e in published)
    # every good line made it, with its own timestamp as event time and record time
    by_trace = {e.trace_id: (e, r) for e, r in zip(published, records, strict=True)}
    assert len(by_trace) == len(good)
    for ev in good:
        got, rec = by_trace[ev["trace_id"]]
        assert got.timestamp_ms == ev["timestamp"] == record_ts(rec)
        assert rec.key == ev["trace_id"].encode()
        if "event_id" in ev:
            assert got.event_id == ev["event_id"]

    dead = [parse_dead_letter(r.value) for r in read_topic(settings, settings.dead_letter_topic, len(BAD_LINES))]
    assert len(dead) == len(BAD_LINES)
    seen = {}
    for d in dead:
        prefix, file_part, line = d["source"].rsplit(":", 2)
        assert prefix == "replay" and file_part == str(path)
        seen[int(line)] = d["reason"]
    assert set(seen) == set(bad_at)
    for line, (kind, field) in bad_at.items():
        assert field in seen[line], f"line {line} ({kind}): reason {seen[line]!r} lacks {field!r}"


def test_replay_of_200k_events_publishes_them_all(backend_settings, tmp_path):
    """200,000 into the local log; 20,000 into the Kafka test broker (same code path, less test time)."""
    settings = backend_settings
    count = 200_000 if settings.transport == "local" else 20_000
    path = tmp_path / "big.jsonl"
    t0 = NOW_MS - 2 * 3_600_000
    with open(path, "wb") as f:
        f.writelines(
            json.dumps(good_event(i, ts_ms=t0 + i // 20, attributes=None)).encode() + b"\n" for i in range(count)
        )
    started = time.monotonic()
    proc = run_cli("--replay", str(path), "--speed", "max", timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary_counts(proc.stdout, "replay summary") == {"published": count, "rejected": 0}

    records = read_topic(settings, settings.raw_events_topic, count, timeout_s=120)
    assert len(records) == count
    ids = {int(json.loads(r.value)["event_id"], 16) for r in records}
    assert ids == set(range(count))
    print(f"replay of {count} events via {settings.transport}: {elapsed:.1f}s")


def test_realtime_replay_keeps_the_original_gaps(data_dir, settings, tmp_path):
    path = tmp_path / "paced.jsonl"
    base = NOW_MS - 60_000
    path.write_bytes(b"".join(json.dumps(good_event(i, ts_ms=base + 700 * i)).encode() + b"\n" for i in range(4)))
    started = time.monotonic()
    proc = run_cli("--replay", str(path), "--speed", "realtime")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary_counts(proc.stdout, "replay summary") == {"published": 4, "rejected": 0}
    assert elapsed >= 2.0  # 3 gaps of 0.7 s
    recs = sorted(read_topic(settings, settings.raw_events_topic, 4), key=record_ts)
    assert [record_ts(r) for r in recs] == [base + 700 * i for i in range(4)]


def test_replay_of_a_missing_file_fails_clearly(data_dir, tmp_path):
    proc = run_cli("--replay", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
