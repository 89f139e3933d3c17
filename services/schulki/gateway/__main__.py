"""``python -m schulki.gateway``: serve the gateway in the foreground (``schulki up`` starts it this way)."""

import sys

from schulki.config import Config
from schulki.gateway.app import serve

if __name__ == "__main__":
    try:
        serve(Config())
    except KeyboardInterrupt:
        sys.exit(0)
