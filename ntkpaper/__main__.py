import sys

from ntkpaper.cli import main

sys.exit(main())
