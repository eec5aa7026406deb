"""`python -m serving` = `perucast-model-server`."""

import sys

from serving.server import main

sys.exit(main())
