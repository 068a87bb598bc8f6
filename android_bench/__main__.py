"""``python -m android_bench`` = ``android-bench``."""

import sys

from android_bench.cli import main

sys.exit(main())
