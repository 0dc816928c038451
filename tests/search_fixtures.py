"""Session fixtures for search: the real embedding model (loaded once) and indexed generator traffic.

The traffic is the generator's own (`python -m event_generator --to-file`), 20 minutes at 3
requests/s with six injected scenarios, written to a bronze layer and indexed by the real
indexer with the real model; building it costs ~15 s once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = (
    "error_surge:payments@1+3",
    "cascade:database@5+3",
    "error_surge:search@9+3",
    "error_surge:inventory@13+2",
    "error_surge:checkout@16+2",
    "latency_spike:checkout@18+2",
)
START = "2026-11-30T10:00:00Z"


@pytest.fixture(scope="session")
def embedder():
    from observability import embedding_model

    return embedding_model.load(threads=1)


@dataclass
class IndexedTraffic:
    settings: object
    store: object
    events: pd.DataFrame
    result: object


def generate_events(out: Path, data_dir: Path, duration: int = 1200, rate: float = 3) -> pd.DataFrame:
    cmd = [sys.executable, "-m", "event_generator", "--speed", "max", "--duration", str(duration), "--rate", str(rate)]
    cmd += ["--start", START, "--seed", "5", "--anomaly-probability", "0", "--to-file", str(out)]
    for spec in SCENARIOS:
        cmd += ["--scenario", spec]
    env = {**os.environ, "DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    df = pd.read_json(out, lines=True, dtype=False)
    df["attributes"] = df["attributes"].map(json.dumps)
    return df


@pytest.fixture(scope="session")
def indexed_traffic(tmp_path_factory, embedder) -> IndexedTraffic:
    from llm.indexer import Indexer
    from observability import bronze
    from observability.settings import Settings
    from observability.store import Store

    root = tmp_path_factory.mktemp("search")
    data_dir = root / "data"
    settings = Settings(DATA_DIR=data_dir)
    store = Store.from_settings(settings)
    store.migrate()
    events = generate_events(root / "traffic.jsonl", data_dir)
    half = len(events) // 2  # two bronze files, indexed in one run
    bronze.write_events(settings.bronze_dir, events.iloc[:half])
    bronze.write_events(settings.bronze_dir, events.iloc[half:])
    result = Indexer(settings, embedder=embedder, store=store).run_once()
    return IndexedTraffic(settings, store, events, result)
