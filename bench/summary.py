"""Collect the `GOAL |` lines of a `make bench` log into one table.

.venv/bin/python bench/summary.py bench.log
"""

from __future__ import annotations

import argparse
from pathlib import Path

from goals import PREFIX  # bench/ is on sys.path when run as a script


def goal_rows(text: str) -> list[list[str]]:
    """The goal lines of a bench log, split into their five fields."""
    rows = [
        [f.strip() for f in line[len(PREFIX) :].split("|")] for line in text.splitlines() if line.startswith(PREFIX)
    ]
    for row in rows:  # the columns name themselves: drop the words goal_line writes for a reader of one line
        for i, word in ((2, "goal "), (3, "baseline ")):
            if len(row) > i and row[i].startswith(word):
                row[i] = row[i][len(word) :]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="the output of make bench (bench.log)")
    rows = goal_rows(parser.parse_args(argv).log.read_text())
    print("\n== goals ==")
    print("| figure | measured | goal | baseline | verdict |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
