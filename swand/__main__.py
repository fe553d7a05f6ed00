import sys

from swand.cli import main

sys.exit(main())
