"""``schulki user add|import|export|delete``: accounts from the command line, for the admin.

The password and API key are printed once and never stored in clear; a class
list prints as CSV (name,role,class,password,api_key) to hand out. ``export``
writes a zip with everything schulki keeps about a user (GDPR right of
access) and ``delete`` removes all of it; both reach the retrieval service
for the user's documents, as the gateway does.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from schulki.config import Config
from schulki.gateway.accounts.database import AccountError, Accounts, database_url

if TYPE_CHECKING:
    from schulki.gateway.context import Gateway

T = TypeVar("T")


async def _with_services(config: Config, action: Callable[[Gateway], Awaitable[T]]) -> T:
    """Run ``action(gateway)`` with the gateway's clients to the services open."""
    from schulki.gateway.context import Gateway
    from schulki.runtime.local_token import local_runtime

    # the services of a running ``schulki up`` refuse calls without the token it made
    gateway = Gateway.create(config.model_copy(update={"runtime": local_runtime(config)}))
    await gateway.start()
    try:
        return await action(gateway)
    finally:
        await gateway.close()


def run_data_command(config: Config, args: argparse.Namespace, accounts: Accounts) -> int:
    """``export`` and ``delete``: one user's data everywhere."""
    import asyncio

    import grpc

    from schulki.gateway.nodes.clients import ServiceDown
    from schulki.gateway.privacy.user_data import delete_user_data, export_user_data

    account = accounts.by_name(args.name)
    if account is None:
        print(f"schulki user {args.user_command}: Den Benutzer {args.name!r} gibt es nicht. (no such user)", file=sys.stderr)
        return 2
    try:
        if args.user_command == "export":
            data = asyncio.run(_with_services(config, lambda gateway: export_user_data(gateway, account)))
            target = Path(args.output or f"schulki-daten-{account.name}.zip")
            target.touch(mode=0o600)
            target.write_bytes(data)
            print(f"Daten von {account.name} gespeichert in (data written to) {target}")
        else:
            asyncio.run(_with_services(config, lambda gateway: delete_user_data(gateway, account)))
            print(f"{account.name} und alle Daten sind gelöscht. (user and all their data deleted)")
        return 0
    except (ServiceDown, grpc.RpcError) as error:
        detail = error.details() if isinstance(error, grpc.RpcError) else str(error)
        print(
            f"schulki user {args.user_command}: Der Dokumentendienst ist nicht erreichbar; nichts wurde gelöscht oder "
            f"exportiert. (the retrieval service is not reachable: {detail})",
            file=sys.stderr,
        )
        return 1


def run_user_command(config: Config, args: argparse.Namespace) -> int:
    accounts = Accounts(database_url(config.gateway.database_url, Path(config.data_dir)))
    if args.user_command in ("export", "delete"):
        return run_data_command(config, args, accounts)
    try:
        if args.user_command == "add":
            created = accounts.add_user(args.name, args.role, args.workspace)
            print(f"Benutzer (user):  {created.account.name} ({created.account.role})")
            if created.account.classes:
                print(f"Klassen (classes): {', '.join(created.account.classes)}")
            print(f"Passwort (password): {created.password}")
            print(f"API-Key: {created.api_key}")
            return 0
        try:
            text = Path(args.csv_file).read_text(encoding="utf-8-sig")
        except OSError as error:
            print(f"schulki user import: {error}", file=sys.stderr)
            return 2
        created_all = accounts.import_csv(text)
        writer = csv.writer(sys.stdout)
        writer.writerow(["name", "role", "class", "password", "api_key"])
        for created in created_all:
            writer.writerow(
                [created.account.name, created.account.role, " ".join(created.account.classes), created.password, created.api_key]
            )
        print(f"{len(created_all)} Konten angelegt (accounts created).", file=sys.stderr)
        return 0
    except AccountError as error:
        print(f"schulki user {args.user_command}: {error}", file=sys.stderr)
        return 2
