import sys

from icae.cli import main

sys.exit(main())
