"""Where ``schulki up`` keeps the service token of this machine, and the runtime settings that send it.

The stack makes the token (stack.py); a command on the same machine that calls
its services (``schulki users``, ``schulki eval``) only reads it, so both find
the file here, below the stack, and no such command imports the stack.
"""

from __future__ import annotations

from pathlib import Path

from schulki.config import Config, RuntimeConfig


def stack_token_file(config: Config) -> Path:
    return Path(config.data_dir) / "runtime" / "service_token"


def local_runtime(config: Config) -> RuntimeConfig:
    """The runtime settings a command on this machine calls ``schulki up``'s services with: with the stack's token when it made one."""
    path = stack_token_file(config)
    if config.runtime.resolved_service_token() is None and path.exists():
        return config.runtime.model_copy(update={"service_token_file": path})
    return config.runtime
