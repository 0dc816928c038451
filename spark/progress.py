"""The progress bar of an interactive `--available-now` run: raw events committed of the backlog.

Why a module of its own: drawing progress is a terminal concern; the job only
reports how many events each committed batch took in (`advance`). The bar is
shown only when stderr is a terminal, so logs and CI output stay plain.
"""

from __future__ import annotations

import sys
from pathlib import Path

from observability.settings import Settings
from spark.checkpoint import committed_offsets


def backlog(settings: Settings, checkpoint: Path) -> int:
    """Raw events on the topic that the metrics query (its `checkpoint`) has not committed yet."""
    from observability.transport import create_reader

    with create_reader(settings) as reader:
        end = sum(reader.end_offsets(settings.raw_events_topic).values())
    return max(0, end - committed_offsets(checkpoint))


class BacklogProgress:
    """A tqdm bar over the backlog, or nothing at all when stderr is not a terminal."""

    def __init__(self, bar=None) -> None:
        self._bar = bar

    @classmethod
    def open(cls, settings: Settings, checkpoint: Path) -> BacklogProgress:
        if not sys.stderr.isatty():
            return cls()
        from tqdm import tqdm

        return cls(tqdm(total=backlog(settings, checkpoint), unit="ev", unit_scale=True, desc="spark"))

    def advance(self, events: int) -> None:
        if self._bar is not None:
            self._bar.update(events)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
