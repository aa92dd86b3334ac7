"""`python -m cli`: the `agentwatch` command."""

import sys

from .app import main

sys.exit(main())
