"""`python -m llm.serve`: the local Ollama-compatible model server (see llm.server)."""

import sys

from llm.server import serve
from observability.settings import get_settings

if __name__ == "__main__":
    sys.exit(serve(get_settings()))
