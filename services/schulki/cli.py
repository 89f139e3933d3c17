"""The ``schulki`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from schulki.config import Config

SERVICES = ("inference", "embeddings", "transcription", "retrieval")
"""The gRPC services, in the order ``schulki up`` starts them."""


def available_services() -> list[str]:
    """The services whose code is installed here."""
    found = []
    for name in SERVICES:
        try:
            module = importlib.import_module(f"schulki.{name}")
        except ImportError:
            continue
        if hasattr(module, "build"):
            found.append(name)
    return found


def cmd_serve(args: argparse.Namespace) -> int:
    from schulki.runtime import logs
    from schulki.runtime.errors import StartupError
    from schulki.runtime.server import serve

    config = Config()
    logs.configure(config.runtime.log_level, config.runtime.log_content)
    module = importlib.import_module(f"schulki.{args.service}")
    port = args.port if args.port is not None else getattr(config, args.service).port
    if args.host:
        config.runtime.host = args.host
    try:
        service = module.build(config)
        asyncio.run(serve(service, port, config.runtime))
    except KeyboardInterrupt:
        return 0
    except (StartupError, OSError) as error:  # one line for the admin, no traceback
        print(f"schulki serve {args.service}: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from schulki.stack import run_stack

    return run_stack(Config(), available_services())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schulki", description="Private AI for school networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--port", type=int, default=None, help="port to listen on (0 picks a free one); default from the settings")
    serve.add_argument("--host", default=None, help="address to listen on; default from the settings")
    serve.set_defaults(func=cmd_serve)

    up = commands.add_parser("up", help="start every service on this machine and print the URL")
    up.set_defaults(func=cmd_up)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
