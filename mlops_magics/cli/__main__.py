"""``python -m mlops_magics.cli``: the ``mlops`` command."""

import sys

from mlops_magics.cli.app import main

sys.exit(main())
