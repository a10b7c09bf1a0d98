"""Container entrypoint: ``python -m queueproxy``."""

import sys

from queueproxy.main import main

sys.exit(main())
