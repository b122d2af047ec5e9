"""`python -m sandbox`: run the Wiraya sandbox (see `sandbox.cli`)."""

import sys

from sandbox.cli import main

sys.exit(main(prog="python -m sandbox"))
