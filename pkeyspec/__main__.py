"""``python -m pkeyspec``: the same as the ``pkeyspec`` command (:mod:`pkeyspec.cli`)."""

import sys

from .cli import main

sys.exit(main())
