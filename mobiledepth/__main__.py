import sys

from mobiledepth.cli import main

sys.exit(main())
