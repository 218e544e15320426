import sys

from nlstudio.cli import main

sys.exit(main())
