import sys

from cvflow.cli import main

sys.exit(main())
