"""``python -m activator``; see ``activator.main``."""

import sys

from activator.main import main

sys.exit(main())
