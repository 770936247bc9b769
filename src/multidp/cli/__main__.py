"""``python -m multidp.cli``: the same as the ``multidp`` command."""

import sys

from multidp.cli.main import main

sys.exit(main())
