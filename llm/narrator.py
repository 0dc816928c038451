"""`python -m llm.narrator [--once]`: grounded incident summaries (see llm.summary_writer).

`--once` summarises every pending incident and exits: 0 when none is left
pending, 2 when the model server could not be reached or does not serve the
model (those incidents stay pending; nothing wrong is stored). An incident
whose request the server refuses (4xx) gets the template and counts as
summarised. It prints one line:
`narrated incidents=<n> llm=<n> template=<n> pending=<n> model_server=<ok|down>`.
"""

import argparse
import sys

from llm.summary_writer import Narrator
from observability.run_loop import stop_on_signals
from observability.settings import get_settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm.narrator", description="Grounded LLM incident summaries.")
    parser.add_argument("--once", action="store_true", help="summarise every pending incident, then exit")
    args = parser.parse_args(argv)
    narrator = Narrator(get_settings())
    narrator.store.migrate()
    if not args.once:
        narrator.run_forever(stop_on_signals())  # SIGTERM/SIGINT: finish the cycle, then exit 0
        return 0
    result = narrator.cycle()
    print(result.line(), flush=True)
    return 2 if result.llm_down else 0


if __name__ == "__main__":
    sys.exit(main())
