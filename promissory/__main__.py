"""``python -m promissory`` runs the ``promissory`` command."""

import sys

from .cli import main

sys.exit(main())
