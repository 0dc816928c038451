"""The receiver on a real full disk (a small tmpfs): 503 while the local log cannot write, nothing
acknowledged is lost, and it accepts again once space is freed, without a restart."""

from __future__ import annotations

import json

import httpx
import pytest

from observability.settings import Settings
from tests import otlp_samples as S
from tests.otlp_fixtures import read_values, start_receiver, stop_receiver, wait_for

PB = {"Content-Type": "application/x-protobuf"}


def _request(n: int) -> tuple[bytes, set[str]]:
    spans = [
        S.span(f"GET /fill/{n}", span_id=(n * 1000 + i + 1).to_bytes(8, "big"), http__route="/fill/" + "z" * 200)
        for i in range(256)
    ]
    return S.traces(*spans).SerializeToString(), {s.span_id.hex() for s in spans}


@pytest.mark.disk_size("3m")
def test_full_disk_is_503_then_recovers_with_nothing_acknowledged_lost(small_disk, tmp_path):
    data = small_disk.path / "data"
    data.mkdir()
    rec = start_receiver(data, {"DUCKDB_PATH": str(tmp_path / "db.duckdb")})
    acked: set[str] = set()
    try:
        statuses = []
        pending = None
        for n in range(200):
            body, ids = _request(n)
            resp = httpx.post(rec.http_url + "/v1/traces", content=body, headers=PB, timeout=30)
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                acked |= ids
                continue
            assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
            pending = (body, ids)
            break
        assert pending is not None, f"the 3 MiB disk never filled: {statuses[-3:]}"
        assert acked, "nothing fitted before the disk was full"
        assert rec.health().status_code == 503
        small_disk.resize("64m")  # the operator frees space
        body, ids = pending

        def retried() -> bool:
            return httpx.post(rec.http_url + "/v1/traces", content=body, headers=PB, timeout=30).status_code == 200

        wait_for(retried, 30, "the receiver to accept again")
        acked |= ids
        assert rec.health().status_code == 200 and rec.proc.poll() is None
    finally:
        stop_receiver(rec)
    settings = Settings(DATA_DIR=str(data))
    got = [json.loads(v)["span_id"] for v in read_values(settings, settings.raw_events_topic)]
    assert acked <= set(got)  # every acknowledged span is in the log
    sent = acked  # nothing else was ever posted
    assert set(got) <= sent
