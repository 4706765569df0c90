"""``python -m hub`` behaves like ``notifyhub serve`` (or any subcommand given)."""

import sys

from hub.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["serve"]))
