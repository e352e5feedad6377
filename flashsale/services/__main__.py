"""`python -m flashsale.services up|down|status|env`, as the single-module launcher allowed."""

import sys

from flashsale.services import main

sys.exit(main(sys.argv[1:]))
