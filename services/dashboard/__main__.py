"""``python -m services.dashboard [--port 8088]``: the dashboard without the ``emotion`` CLI."""

from __future__ import annotations

import argparse
import sys

from shared.settings import load_settings

from .server import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m services.dashboard", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args(), load_settings()))
