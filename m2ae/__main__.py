import sys

from m2ae.cli import main

sys.exit(main())
