"""Ground-truth labels of injected scenarios: DuckDB `scenario_labels` + a JSONL file.

One row per (scenario, service that shows it), with the service where the
fault was injected as `root_service`. The file sits beside `--to-file
FILE.jsonl` as `FILE.labels.jsonl`, otherwise it is
`$DATA_DIR/labels/scenario_labels.jsonl` (appended to). File rows also carry
the scenario's magnitude and the measured evidence (error rate rise, p95 and
request-count ratios against the fault-free counterfactual).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from event_generator.scenarios import Scenario
from observability import tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store, utcnow

log = get_logger(__name__)


def labels_path(settings: Settings, to_file: Path | None) -> Path:
    if to_file is not None:
        name = to_file.name
        stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
        return to_file.with_name(f"{stem}.labels.jsonl")
    return settings.data_dir / "labels" / "scenario_labels.jsonl"


def _naive_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


class LabelSink:
    def __init__(self, settings: Settings, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.store = Store.from_settings(settings, max_wait_seconds=30)
        self.rows_written = 0
        self._migrated = False

    def _write_table(self, rows: list[dict]) -> None:
        """Best effort: a busy or broken database must not stop the generator (the file has it)."""
        try:
            if not self._migrated:
                self.store.migrate()
                self._migrated = True
            self.store.executemany(
                f"""INSERT OR REPLACE INTO {tables.SCENARIO_LABELS}
                    (id, scenario_type, service, root_service, start_time, end_time, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [
                    [
                        r["id"],
                        r["scenario_type"],
                        r["service"],
                        r["root_service"],
                        _naive_utc(r["start_ms"]),
                        _naive_utc(r["end_ms"]),
                        utcnow(),
                    ]
                    for r in rows
                ],
            )
        except Exception as exc:
            log.error(
                "scenario labels: database write failed (kept in the file)",
                error=str(exc)[:300],
                path=str(self.store.path),
            )

    def started(self, sc: Scenario) -> None:
        """The injected service is known at once: record it so live consumers see it."""
        self._write_table([self._row(sc, sc.service, sc.end_ms)])
        log.info(
            "scenario started",
            id=sc.id,
            type=sc.type,
            service=sc.service,
            origin=sc.origin,
            start=_naive_utc(sc.start_ms).isoformat(),
            end=_naive_utc(sc.end_ms).isoformat(),
            **sc.magnitude(),
        )

    def finished(self, sc: Scenario, shown: list[dict], end_ms: int) -> None:
        """Final rows: every service that showed the scenario, measured over its window."""
        rows = [self._row(sc, ev["service"], end_ms) for ev in shown]
        self._write_table(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC).isoformat()
        with open(self.path, "a", encoding="utf-8") as f:
            for row, ev in zip(rows, shown, strict=True):
                f.write(
                    json.dumps(
                        {
                            "id": row["id"],
                            "scenario_id": sc.id,
                            "scenario_type": sc.type,
                            "service": row["service"],
                            "root_service": sc.service,
                            "start_time": _naive_utc(sc.start_ms).isoformat(),
                            "end_time": _naive_utc(end_ms).isoformat(),
                            "created_at": now,
                            "origin": sc.origin,
                            "run_id": self.run_id,
                            "magnitude": sc.magnitude(),
                            "evidence": {k: v for k, v in ev.items() if k != "service"},
                        }
                    )
                    + "\n"
                )
        self.rows_written += len(rows)
        log.info("scenario labelled", id=sc.id, services=",".join(ev["service"] for ev in shown))

    @staticmethod
    def _row(sc: Scenario, service: str, end_ms: int) -> dict:
        return {
            "id": f"{sc.id}:{service}",
            "scenario_type": sc.type,
            "service": service,
            "root_service": sc.service,
            "start_ms": sc.start_ms,
            "end_ms": end_ms,
        }
