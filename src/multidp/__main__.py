"""``python -m multidp`` is the ``multidp`` command."""

import sys

from multidp.cli.main import main

sys.exit(main())
