"""`python -m service.cli`: the `entitlements` command without its console script."""

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())
