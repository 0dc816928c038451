"""`python -m anomaly_detection.detector [--once]`: score final windows, group incidents."""

from __future__ import annotations

import argparse

from observability.settings import get_settings

from anomaly_detection.service import DetectionService, run_forever


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.detector", description=__doc__)
    p.add_argument("--once", action="store_true", help="score every final window not yet scored, then exit")
    p.add_argument("--no-bootstrap", action="store_true", help="never train a first model (rules and statistics only until one is promoted)")
    p.add_argument("--no-publish", action="store_true", help="do not publish anomalies to the anomalies topic")
    args = p.parse_args(argv)
    settings = get_settings()
    service = DetectionService(settings, bootstrap_models=not args.no_bootstrap, publish=not args.no_publish)
    if args.once:
        r = service.run_once()
        service.close()
        print(f"detector summary: windows={r.windows} anomalies={r.anomalies} incidents_changed={r.incidents_changed} watermark={r.watermark}")
        return 0
    run_forever(service, settings.detect_interval_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
