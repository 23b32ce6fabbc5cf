"""`python -m server.runner FD`: one runner process (see server/runner/process.py)."""

import sys

from server.runner.process import main

sys.exit(main())
