"""`python -m llm.serve`: the local Ollama-compatible model server (see llm.ollama_api).

Everything it needs comes from the settings (environment or `.env`); the only
arguments are `--help`, which prints them and starts nothing.
"""

import argparse
import sys

DESCRIPTION = """Serve OLLAMA_MODEL (or the GGUF at LLM_MODEL_FILE) over the Ollama HTTP API on the
host:port of OLLAMA_URL, with LLM_THREADS threads. Request bodies over MODEL_SERVER_MAX_BODY_BYTES
and prompts over MODEL_SERVER_MAX_PROMPT_CHARS are refused with 413. Runs until interrupted."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm.serve", description=DESCRIPTION)
    parser.parse_args(argv)
    # imported only now: `--help` must not load llama.cpp
    from llm.ollama_api import serve
    from observability.settings import get_settings

    return serve(get_settings())


if __name__ == "__main__":
    sys.exit(main())
