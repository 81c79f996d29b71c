"""``python -m normkit`` runs the command line."""

import sys

from normkit.cli import main

sys.exit(main())
