"""``python -m schulki.gateway``: serve the gateway in the foreground (``schulki up`` starts it this way)."""

import sys

from schulki.config import SettingsError, load_config
from schulki.gateway.app import serve
from schulki.runtime.errors import StartupError

if __name__ == "__main__":
    try:
        serve(load_config())
    except KeyboardInterrupt:
        sys.exit(0)
    except (StartupError, SettingsError) as error:  # one line for the admin, no traceback
        print(f"schulki gateway: {error}", file=sys.stderr)
        sys.exit(2)
