"""One line per benchmark goal, so `make bench` ends with a table a reader can scan.

Every bench script calls `goal_line(...)` for each figure that has a goal; the
line starts with `GOAL |` so `bench/summary.py` (run last by `make bench`) can
collect them from the scripts' output. Figures stay printed in each script's
own detail above; this is only the verdict beside the goal and the same-run
baseline.
"""

from __future__ import annotations

PREFIX = "GOAL |"


def goal_line(figure: str, measured: str, goal: str, baseline: str, met: bool | None) -> str:
    """Print and return `GOAL | figure | measured | goal | baseline | met`.

    `met` is None when the figure could not be measured in this run (say why in `measured`).
    """
    verdict = "n/a" if met is None else ("met" if met else "NOT MET")
    line = f"{PREFIX} {figure} | {measured} | goal {goal} | baseline {baseline} | {verdict}"
    print(line, flush=True)
    return line
