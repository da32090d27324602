"""`python -m jarvis` == `jarvis` (torchrun launches `-m jarvis`)."""

import sys

from jarvis.cli import main

sys.exit(main())
