"""``python -m runtime`` starts the daemon (the same as ``actorflowd``)."""

import sys

from runtime.daemon import main

sys.exit(main())
