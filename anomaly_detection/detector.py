"""`python -m anomaly_detection.detector [--once]`: score final windows, group incidents.

The entry point only; the command line is `anomaly_detection.cli`, the cycle `anomaly_detection.service`.
"""

from anomaly_detection.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
