import sys

from flipmoe.cli import main

sys.exit(main())
