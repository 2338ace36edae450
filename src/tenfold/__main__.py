"""``python -m tenfold`` (and ``torchrun ... -m tenfold``) runs the CLI."""

import sys

from tenfold.cli import main

sys.exit(main())
