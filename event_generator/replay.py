"""`--replay FILE.jsonl`: validate recorded events and publish them with their own timestamps.

Each line is read as bytes and judged by `observability.schema.validate_line`
(the same function the Spark job uses). A valid event is published in its
normalised wire form (event_id generated when missing), keyed by trace id,
with its own event time as the record timestamp. A rejected line goes to the
dead-letter topic with its line number and reason; one bad line never stops
the replay. With speed "realtime" the original gaps between event times are
kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from event_generator.sinks import PublishFailed, PublishRejected
from observability.dead_letter import make_dead_letter
from observability.logs import get_logger
from observability.schema import InvalidEvent, validate_line

log = get_logger(__name__)

# A durable point (and a line to resume from) at least this often.
FLUSH_EVERY_S = 1.0
FLUSH_EVERY_LINES = 10_000


@dataclass
class ReplayResult:
    """Counts of what is durable: a line counts only once the flush after it returned."""

    published: int = 0
    rejected: int = 0
    blank: int = 0
    durable_line: int = 0  # every line up to this one is durably published or dead-lettered
    failure: str | None = None  # why the replay stopped before the end of the file

    def summary(self) -> str:
        return f"replay summary: published={self.published} rejected={self.rejected}"

    def failure_message(self, path: Path) -> str:
        return (
            f"replay: stopped before the end of {path}: could not publish ({self.failure}); "
            f"lines {self.durable_line + 1} and later are not all durable: "
            f"resume with --replay {path} --from-line {self.durable_line + 1}"
        )


@dataclass
class _Pending:
    """What was sent since the last durable flush."""

    published: int = 0
    rejected: int = 0
    last_line: int = 0


def _lines(path: Path, from_line: int = 1):
    """(line number, raw bytes without the line ending); a huge line is still one line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno < from_line:
                continue
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            yield lineno, raw


def replay(path: Path, sink, speed: str = "max", progress=None, should_stop=None, from_line: int = 1) -> ReplayResult:
    """Publish the file's valid lines, dead-letter the rest; stops early (result.failure)
    when the transport fails for longer than the sink retries."""
    path = Path(path)
    result = ReplayResult(durable_line=from_line - 1)
    pending = _Pending(last_line=from_line - 1)
    try:
        _replay_lines(path, sink, speed, progress, should_stop, from_line, result, pending)
        _flush(sink, result, pending)
    except PublishFailed as exc:
        result.failure = str(exc)
        log.error("replay: transport failed, stopping", error=str(exc), durable_line=result.durable_line)
    return result


def _flush(sink, result: ReplayResult, pending: _Pending) -> None:
    sink.flush()
    result.published += pending.published
    result.rejected += pending.rejected
    result.durable_line = pending.last_line
    pending.published = pending.rejected = 0


def _replay_lines(path, sink, speed, progress, should_stop, from_line, result, pending) -> None:
    events_topic, dead_topic = sink.events_topic, sink.dead_letter_topic
    first_ts = None
    wall0 = time.monotonic()
    last_flush = wall0
    now_ms = int(time.time() * 1000)
    for lineno, raw in _lines(path, from_line):
        if should_stop is not None and should_stop():
            log.warning("replay stopped early", line=lineno)
            break
        pending.last_line = lineno
        if not raw.strip():
            result.blank += 1  # an empty line is not an event, nor an error
            continue
        if lineno % 10000 == 0:
            now_ms = int(time.time() * 1000)
        try:
            event = validate_line(raw, now_ms=now_ms)
            value = raw if _publish_as_is(raw, event.event_id) else event.to_json().encode()
        except (InvalidEvent, ValueError, TypeError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, InvalidEvent) else f"line: {type(exc).__name__}: {exc}"
            _dead_letter(sink, dead_topic, path, lineno, reason, raw, pending)
        else:
            if speed == "realtime":
                if first_ts is None:
                    first_ts = event.timestamp_ms
                wait = wall0 + (event.timestamp_ms - first_ts) / 1000 - time.monotonic()
                if wait > 0:
                    pending.last_line = lineno - 1
                    _flush(sink, result, pending)
                    pending.last_line = lineno
                    time.sleep(wait)
            key = event.trace_id.encode() if event.trace_id else None
            try:
                sink.send(events_topic, value, key, event.timestamp_ms)
            except PublishRejected as exc:
                _dead_letter(sink, dead_topic, path, lineno, f"publish: {exc}", raw, pending)
            else:
                pending.published += 1
        if progress is not None:
            progress.update(
                len(raw) + 1,
                published=result.published + pending.published,
                rejected=result.rejected + pending.rejected,
            )
        now = time.monotonic()
        if now - last_flush >= FLUSH_EVERY_S or pending.published + pending.rejected >= FLUSH_EVERY_LINES:
            _flush(sink, result, pending)
            last_flush = now


def _publish_as_is(raw: bytes, event_id: str) -> bool:
    """A valid line that already carries its event_id is published byte for byte (the
    consumers validate with the same function); otherwise the normalised form is
    (it carries the generated event_id, and strict JSON without NaN/Infinity literals)."""
    return event_id.encode() in raw and b"NaN" not in raw and b"Infinity" not in raw


def _dead_letter(sink, topic: str, path: Path, lineno: int, reason: str, raw: bytes, pending: _Pending) -> None:
    sink.send(topic, make_dead_letter(f"replay:{path}:{lineno}", reason, raw), None, None)
    pending.rejected += 1
    log.debug("replay: line rejected", line=lineno, reason=reason)


def file_size(path: Path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
