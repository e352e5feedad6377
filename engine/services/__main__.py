"""`python -m engine.services up|down|status|env`, as the single-module launcher allowed."""

import sys

from engine.services import main

sys.exit(main(sys.argv[1:]))
