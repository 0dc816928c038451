"""`evaluate rca` end to end on the first faults of the shared Nezha day (replay, Spark, detector)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.shared_data import nezha_dir
from tests.spark_fixtures import ROOT, job_env

DATA = nezha_dir()
LINE = re.compile(r"^rca recall=(\d\.\d{3}) precision=(\d\.\d{3}) as1=(\d\.\d{3}) as3=(\d\.\d{3})$", re.M)


@pytest.mark.e2e
@pytest.mark.skipif(DATA is None, reason="the shared Nezha dataset is not here (set NEZHA_DATA)")
def test_evaluate_rca_on_two_faults(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "anomaly_detection.evaluate",
            "rca",
            "--data",
            str(DATA),
            "--faults",
            "2",
            "--workdir",
            str(tmp_path / "eval"),
        ],
        cwd=ROOT,
        env=job_env(tmp_path / "unused"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = LINE.search(proc.stdout)
    assert m, proc.stdout[-2000:]
    recall, precision, as1, as3 = map(float, m.groups())
    assert recall > 0
    assert 0 <= precision <= 1 and 0 <= as1 <= as3 <= 1
    assert proc.stdout.count("\nfault ") + proc.stdout.startswith("fault ") == 2
    assert "ranking: 1. ts-" in proc.stdout  # candidates come from the spans in bronze
