"""`python -m event_generator`: see event_generator/cli.py."""

import sys

from event_generator.cli import main

sys.exit(main())
