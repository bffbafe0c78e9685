"""`python -m otel_ai` runs the CLI."""

import sys

from otel_ai.cli import main

sys.exit(main())
