"""``python -m multidp`` is the ``multidp`` command."""

import sys

from multidp.cli import main

sys.exit(main())
