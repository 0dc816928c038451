"""Create or migrate the DuckDB schema (idempotent): `python scripts/init_db.py`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from observability.settings import get_settings  # noqa: E402
from observability.store import Store  # noqa: E402
from observability.transport import create_topics  # noqa: E402


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help: touch nothing
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.from_settings(settings)
    applied = store.migrate()
    print(f"schema: {settings.duckdb_path} at version {store.schema_version()} (applied now: {applied or 'none'})")
    if settings.transport == "local":
        created = create_topics(settings)
        print(f"topics: {', '.join(settings.topics)} in {settings.log_dir} (created now: {created or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
