"""``python -m remediate.cli``: the same as the ``remediate`` command."""

import sys

from remediate.cli import main

sys.exit(main())
