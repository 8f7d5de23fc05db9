import sys

from netoffload.cli import main

sys.exit(main())
