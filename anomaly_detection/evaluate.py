"""`python -m anomaly_detection.evaluate scenarios|nab|rca ...`: detection and root-cause quality figures.

The entry point only; the code is under `anomaly_detection/evaluation/` (the command line in `evaluation/cli.py`).
"""

from anomaly_detection.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
