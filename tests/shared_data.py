"""Where the shared evaluation datasets are: `$NEZHA_DATA`, else `shared/datasets/` beside or above the checkout."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nezha_dir() -> Path | None:
    """The Nezha Train-Ticket dataset (its `rca_data/` inside), or None when it is not here."""
    if os.environ.get("NEZHA_DATA"):
        candidates = [Path(os.environ["NEZHA_DATA"])]
    else:
        candidates = [
            ROOT.parent / "shared" / "datasets" / "nezha-trainticket",
            ROOT.parent.parent / "shared" / "datasets" / "nezha-trainticket",
        ]
    return next((p for p in candidates if (p / "rca_data").is_dir()), None)
