"""`python -m shared.service NAME`: run one service (acquisition, cataloging, ...)."""

import sys

from shared.contracts import SERVICES
from shared.service.app import run

if len(sys.argv) != 2 or sys.argv[1] not in SERVICES:
    sys.exit(f"usage: python -m shared.service {{{','.join(SERVICES)}}}")
run(sys.argv[1])
