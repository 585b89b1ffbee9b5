"""``python -m powerdrivers``: the same as the ``powerdrivers`` command."""

import sys

from powerdrivers._cli import main

sys.exit(main())
