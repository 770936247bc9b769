"""The ``multidp`` command: ``run``, ``devices``, ``drivers``, ``config`` and ``demo``."""
