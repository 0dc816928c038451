"""Every command-line entry point of the platform answers `--help`: usage, exit 0, nothing started.

The entry points are found, not listed: each `__main__.py` of a package
(`python -m pkg`), each module of a package with an `if __name__ == "__main__"`
block (`python -m pkg.mod`), and each such script in a plain folder such as
scripts/ and bench/ (`python path`). A new one is covered without editing this
file. `python -m llm.serve --help` used to start a model server and
`bench/bench_local.py --help` ran `make local`; "nothing started" is checked as
DATA_DIR (pointed at a folder that does not exist) still not existing, and the
command ending on its own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SCANNED = {"tests", "data", "build", "dist", "node_modules", "test-artifacts", "spark-warehouse"}
MAIN_GUARD = re.compile(r"""^if __name__ == ["']__main__["']:""", re.M)


def entry_points() -> list[tuple[str, list[str]]]:
    """(name, argv after the interpreter) for every entry point under the repository root."""
    found: dict[str, list[str]] = {}
    for folder in sorted(
        p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_SCANNED
    ):
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(ROOT)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            is_package = (path.parent / "__init__.py").is_file()
            if path.name == "__main__.py" and is_package:
                module = ".".join(rel.parent.parts)
                found[module] = ["-m", module]
            elif MAIN_GUARD.search(path.read_text(errors="replace")):
                if is_package:
                    module = ".".join(rel.with_suffix("").parts)
                    found[module] = ["-m", module]
                else:
                    found[str(rel)] = [str(path)]
    return sorted(found.items())


ENTRY_POINTS = entry_points()


def test_the_entry_points_are_found():
    names = {name for name, _ in ENTRY_POINTS}
    assert {
        "llm.serve",
        "llm.narrator",
        "event_generator",
        "spark",
        "dashboard",
        "scripts/init_db.py",
        "bench/bench_local.py",
    } <= names
    assert "llm" not in names  # a package without __main__.py is no entry point


@pytest.mark.parametrize("argv", [argv for _, argv in ENTRY_POINTS], ids=[name for name, _ in ENTRY_POINTS])
def test_help_prints_usage_and_starts_nothing(argv, tmp_path):
    data_dir = tmp_path / "data"  # must stay absent: --help reads and writes nothing
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATA_DIR=str(data_dir))
    env.pop("DUCKDB_PATH", None)
    proc = subprocess.Popen(
        [sys.executable, *argv, "--help"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)  # a hang guard: --help returns in seconds
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it started, too
        proc.communicate()
        pytest.fail(f"{' '.join(argv)} --help did not return: it started something")
    assert proc.returncode == 0, stderr[-2000:]
    assert re.match(r"usage: ", stdout), stdout[:500]
    assert not data_dir.exists(), f"--help wrote {sorted(p.name for p in data_dir.iterdir())}"
