"""Nezha's Train-Ticket day (CSV traces + logs) -> the platform's telemetry events (JSONL).

The evaluation feeds the day through the platform's own ingest path, so this
module only translates the recording into `observability.schema` events (one
per span) and reads the fault list. Mapping:

- service = pod name without its two last `-`-separated parts
  (`ts-basic-service-5dc8d4f9fd-llznp` -> `ts-basic-service`); endpoint =
  `OperationName`; timestamp = span start; latency = `Duration` (µs) / 1000.
- status_code: Nezha records none; a span that wrote an ERROR log line (same
  trace and span id) is 500 with the log's message as `error_message`, else 200.
- kind: "server" for a root span or one whose parent is in another service,
  "client" for a span with a child in another service, "internal" otherwise.
- event_id: derived from trace and span id, so a reload is byte-for-byte the same.

Recording blocks: minutes are recorded in blocks of ~3 that do not start on a
minute boundary, with unrecorded gaps between. A window only partly covered by
its block would read as a traffic drop, so a trace is kept only when its
1-minute window is covered for at least `MIN_COVERAGE` of its length by the
recording (judged by the first and last trace start of the block). Gaps produce
no windows at all, which the detector does not read as zero traffic.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from observability.schema import format_timestamp

MIN_COVERAGE = 0.75  # share of a 1-minute window the recording must cover for its traces to be kept
FAULT_DURATION = timedelta(minutes=3)  # Nezha's README: each fault lasts 3 minutes
_FILE = re.compile(r"^(\d\d)_(\d\d)_trace\.csv$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_LOG_PREFIX = re.compile(r"^.*?SpanID:\s*[0-9a-fA-F]+\s*")
MAX_ERROR_MESSAGE = 300


@dataclass(frozen=True)
class Fault:
    """One injected fault: the true root-cause service and its time range (UTC, naive)."""

    start: datetime
    end: datetime
    service: str
    fault_type: str


def service_of(pod: str) -> str:
    """Pod name -> service: drop the ReplicaSet hash and the pod suffix."""
    parts = pod.split("-")
    return "-".join(parts[:-2]) if len(parts) > 2 else pod


def read_faults(day_dir: Path) -> list[Fault]:
    """The day's fault list (`inject_time` is on the traces' clock, UTC), by start time."""
    day_dir = Path(day_dir)
    files = sorted(day_dir.glob("*fault_list.json"))
    if not files:
        raise FileNotFoundError(f"no *fault_list.json in {day_dir}")
    out = []
    for group in json.loads(files[0].read_text()).values():
        for f in group:
            start = datetime.strptime(f["inject_time"], "%Y-%m-%d %H:%M:%S")
            out.append(Fault(start, start + FAULT_DURATION, service_of(f["inject_pod"]), f["inject_type"]))
    return sorted(out, key=lambda f: f.start)


def _minute_files(trace_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in Path(trace_dir).glob("*_trace.csv"):
        m = _FILE.match(p.name)
        if m:
            out.append((int(m.group(1)) * 60 + int(m.group(2)), p))
    return sorted(out)


def blocks(trace_dir: Path) -> list[list[Path]]:
    """Trace files grouped into recording blocks (consecutive minutes)."""
    out: list[list[Path]] = []
    last = None
    for minute, path in _minute_files(trace_dir):
        if last is None or minute != last + 1:
            out.append([])
        out[-1].append(path)
        last = minute
    return out


def _read_rows(paths: Iterable[Path]) -> list[dict]:
    rows = []
    for p in paths:
        with open(p, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def error_logs(log_dir: Path | None) -> dict[tuple[str, str], str]:
    """(trace id, span id) -> message of the first ERROR log line of that span."""
    out: dict[tuple[str, str], str] = {}
    if log_dir is None or not Path(log_dir).is_dir():
        return out
    for p in sorted(Path(log_dir).glob("*_log.csv")):
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                text = r.get("Log") or ""
                with contextlib.suppress(ValueError, AttributeError):
                    text = json.loads(text).get("log", text)
                if " ERROR " not in text:
                    continue
                key = ((r.get("TraceID") or "").lower(), (r.get("SpanID") or "").lower())
                out.setdefault(key, _LOG_PREFIX.sub("", text.strip())[:MAX_ERROR_MESSAGE] or "ERROR log")
    return out


def _kept_minutes(trace_starts_ns: list[int]) -> set[int]:
    """Epoch minutes covered for at least MIN_COVERAGE by [first, last] trace start."""
    if not trace_starts_ns:
        return set()
    lo, hi = min(trace_starts_ns) / 1e9, max(trace_starts_ns) / 1e9
    kept = set()
    for m in range(int(lo // 60), int(hi // 60) + 1):
        covered = min(hi, (m + 1) * 60) - max(lo, m * 60)
        if covered >= MIN_COVERAGE * 60:
            kept.add(m)
    return kept


def _event_id(trace_id: str, span_id: str) -> str:
    return hashlib.blake2b(f"{trace_id}|{span_id}".encode(), digest_size=16).hexdigest()


def block_events(rows: list[dict], errors: dict[tuple[str, str], str]) -> list[dict]:
    """Events of one recording block: whole traces of sufficiently covered minutes."""
    spans = {}
    for r in rows:
        tid, sid = r["TraceID"].lower(), r["SpanID"].lower()
        if not _HEX32.match(tid) or not _HEX16.match(sid):
            continue
        spans[(tid, sid)] = r
    trace_start: dict[str, int] = {}
    for (tid, _), r in spans.items():
        s = int(r["StartTimeUnixNano"])
        trace_start[tid] = min(trace_start.get(tid, s), s)
    kept = _kept_minutes(list(trace_start.values()))
    cross_child: set[tuple[str, str]] = set()  # spans with a child in another service
    for (tid, _), r in spans.items():
        parent = spans.get((tid, r["ParentID"].lower()))
        if parent is not None and service_of(parent["PodName"]) != service_of(r["PodName"]):
            cross_child.add((tid, r["ParentID"].lower()))
    out = []
    for (tid, sid), r in spans.items():
        if int(trace_start[tid] // 1_000_000_000 // 60) not in kept:
            continue
        service = service_of(r["PodName"])
        pid = r["ParentID"].lower()
        parent = spans.get((tid, pid))
        if parent is None or service_of(parent["PodName"]) != service:
            kind = "server"
        elif (tid, sid) in cross_child:
            kind = "client"
        else:
            kind = "internal"
        err = errors.get((tid, sid))
        out.append(
            {
                "event_id": _event_id(tid, sid),
                "timestamp": format_timestamp(int(r["StartTimeUnixNano"]) // 1_000_000),
                "service": service,
                "endpoint": r["OperationName"] or None,
                "status_code": 500 if err is not None else 200,
                "latency_ms": round(int(r["Duration"]) / 1000.0, 3),
                "trace_id": tid,
                "span_id": sid,
                "parent_span_id": pid if _HEX16.match(pid) else None,
                "error_message": err,
                "attributes": {"pod": r["PodName"]},
                "kind": kind,
            }
        )
    out.sort(key=lambda e: (e["timestamp"], e["trace_id"], e["span_id"]))
    return out


def day_events(
    day_dir: Path, construct_dir: Path | None = None, only_blocks: set[int] | None = None
) -> Iterator[list[dict]]:
    """Events of the fault-free minutes (construct_data), then of each fault block, in time order.

    `only_blocks`: indices of the fault blocks to keep (a subset for quick runs).
    """
    day_dir = Path(day_dir)
    if construct_dir is not None and (Path(construct_dir) / "trace").is_dir():
        errors = error_logs(Path(construct_dir) / "log")
        for paths in blocks(Path(construct_dir) / "trace"):
            yield block_events(_read_rows(paths), errors)
    errors = error_logs(day_dir / "log")
    for i, paths in enumerate(blocks(day_dir / "trace")):
        if only_blocks is None or i in only_blocks:
            yield block_events(_read_rows(paths), errors)


def write_jsonl(batches: Iterable[list[dict]], path: Path) -> tuple[int, datetime | None, datetime | None]:
    """Write events one JSON object a line; returns (count, first, last timestamp)."""
    n, first, last = 0, None, None
    with open(path, "w") as f:
        for batch in batches:
            for e in batch:
                f.write(json.dumps(e, separators=(",", ":")) + "\n")
                n += 1
            if batch:
                first = first or batch[0]["timestamp"]
                last = batch[-1]["timestamp"]
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)  # noqa: E731
    return n, (parse(first) if first else None), (parse(last) if last else None)


def last_trace_start(path: Path) -> datetime | None:
    """Timestamp of the last root span in an events file (the recording's last trace start)."""
    last = None
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            if e.get("parent_span_id") is None and (last is None or e["timestamp"] > last):
                last = e["timestamp"]
    return datetime.fromisoformat(last.replace("Z", "+00:00")).replace(tzinfo=None) if last else None


def construct_dir_for(data: Path, day: str) -> Path:
    return Path(data) / "construct_data" / day
