"""A full disk under DATA_DIR never reports success for what was not written (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observability.schema import validate_line
from tests.event_samples import good_event
from tests.transport_fixtures import summary_counts

ROOT = Path(__file__).resolve().parents[1]


def _env(data_dir: Path) -> dict:
    env = dict(os.environ, DATA_DIR=str(data_dir), TRANSPORT="local", PYTHONPATH=str(ROOT))
    env.pop("DUCKDB_PATH", None)
    return env


def _logged_event_ids(data_dir: Path) -> list[str]:
    from observability.transport.local_log import LocalLogReader

    reader = LocalLogReader(data_dir / "log")
    ends = reader.end_offsets("raw_events")
    return [validate_line(r.value).event_id for p, end in ends.items() for r in reader.read("raw_events", p, 0, end)]


def _replay(path: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "event_generator", "--replay", str(path), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.disk_size("9m")  # room for the first durable point (10,000 lines), not the second
def test_replay_on_a_full_disk_counts_only_durable_lines_exits_1_and_resumes(small_disk, tmp_path):
    path = tmp_path / "day.jsonl"
    pad = "x" * 300
    events = [dict(good_event(i), attributes={"pad": pad}) for i in range(20_000)]  # ~12.5 MB for a 9 MB disk
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    env = _env(small_disk.path / "data")

    first = _replay(path, env, "--retry-seconds", "1")
    assert first.returncode == 1, first.stderr[-2000:]
    assert "No space left on device" in first.stderr
    durable = summary_counts(first.stdout, "replay summary")
    resume = int(first.stderr.rsplit("--from-line", 1)[1].split()[0])
    assert 0 < durable["published"] < len(events) and durable["rejected"] == 0
    assert resume == durable["published"] + 1  # no bad lines: the next line to publish
    logged = set(_logged_event_ids(small_disk.path / "data"))
    # what the summary counted is really there (it may hold more: at-least-once across a failure)
    assert {e["event_id"] for e in events[: resume - 1]} <= logged

    small_disk.resize("64m")  # space comes back
    second = _replay(path, env, "--from-line", str(resume))
    assert second.returncode == 0, second.stderr[-2000:]
    assert summary_counts(second.stdout, "replay summary")["published"] == len(events) - (resume - 1)
    assert set(_logged_event_ids(small_disk.path / "data")) == {e["event_id"] for e in events}


def test_the_generator_backs_off_on_a_full_disk_and_resumes_when_space_returns(small_disk, tmp_path):
    env = _env(small_disk.path / "data")
    err_path = tmp_path / "generator.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "event_generator",
                "--speed",
                "max",
                "--duration",
                "900",
                "--seed",
                "3",
                "--anomaly-probability",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "transport error, retrying" not in err_path.read_text():  # the disk filled up
            assert proc.poll() is None, err_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the generator never hit the full disk"
            time.sleep(0.2)
        assert "No space left on device" in err_path.read_text()
        small_disk.resize("128m")
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err_path.read_text()[-2000:]
    published = summary_counts(out, "generator summary")["published"]
    ids = _logged_event_ids(small_disk.path / "data")
    assert len(set(ids)) == published  # every event once it resumed; nothing lost to the full disk
