"""The publish step of the metrics query: updated windows -> aggregated-metrics records -> topic.

A batch stages its records in the outbox inside its DuckDB transaction
(`aggregate_records`, written by the sink); after the commit the publisher
sends every unsent record (this batch's and any an earlier, killed run left)
and marks them sent (`observability.outbox`). Delivery is at least once with
stable ids, so consumers keep the latest value per id.
"""

from __future__ import annotations

import math
import uuid

from observability import tables
from observability.logs import get_logger
from observability.outbox import OutboxPublisher
from observability.settings import Settings
from observability.store import Store

log = get_logger("spark.publish")
_AGGREGATE_NS = uuid.UUID("5b0e7a52-8d3c-4f0e-9a43-2f7c1d9b6e21")


class AggregatePublisher:
    """Sends the committed aggregated-metrics records of the outbox to `aggregated_topic`."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.topic = settings.aggregated_topic
        self._settings = settings
        self._outbox = OutboxPublisher(store, [self.topic], self._connect)

    def _connect(self):
        from observability.transport import create_producer

        return create_producer(self._settings)

    def try_publish(self) -> int:
        """Send what is unsent; how many were sent (a transport outage leaves them for later)."""
        return self._outbox.try_publish()

    def close(self) -> None:
        """A last attempt, then release the producer; what stays unsent goes first on the next run."""
        self._outbox.try_publish()
        try:
            self._outbox.close()
        except Exception as exc:  # noqa: BLE001 - the outbox still holds whatever was not confirmed
            log.warning("closing the aggregated-metrics producer failed", error=str(exc)[:300])


def aggregate_records(metrics, batch_id: int, sink: str) -> list[tuple[str, str, dict]]:
    """Each updated window row as an (id, key, value) aggregated-metrics record for the outbox.

    The id is derived from (sink, batch, window, service, endpoint): a batch is
    committed once per sink, so each record is staged once and keeps its id
    however often it is resent."""
    records = []
    for row in metrics.to_dict("records"):
        endpoint = row["endpoint"] if isinstance(row["endpoint"], str) else None
        window_start = row["window_start"].strftime("%Y-%m-%dT%H:%M:%SZ")
        value = {
            "window_start": window_start,
            "window_end": row["window_end"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "service": row["service"],
            "endpoint": endpoint,
            **{k: _jsonable(row[k]) for k in tables.METRIC_VALUE_COLUMNS},
            "batch_id": batch_id,
        }
        record_id = str(uuid.uuid5(_AGGREGATE_NS, f"{sink}|{batch_id}|{window_start}|{row['service']}|{endpoint!r}"))
        records.append((record_id, f"{row['service']}|{endpoint or '*'}", value))
    return records


def _jsonable(v):
    """A pandas/numpy cell as a JSON value (NaN -> null, numpy scalars -> Python)."""
    try:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if hasattr(v, "item") else v
    except (TypeError, ValueError):
        return v
