"""``python -m keybound.cli``: the same as the ``keybound`` command."""

import sys

from keybound.cli import main

sys.exit(main())
