import sys

from netoffload import textio
from netoffload.cli import main

textio.utf8_process()  # UTF-8 argv and stdio on any dom0 locale
sys.exit(main())
