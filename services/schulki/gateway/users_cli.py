"""``schulki user add`` and ``schulki user import``: accounts from the command line, for the admin.

The password and API key are printed once and never stored in clear; a class
list prints as CSV (name,role,class,password,api_key) to hand out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from schulki.config import Config
from schulki.gateway.accounts import AccountError, Accounts, database_url


def run_user_command(config: Config, args: argparse.Namespace) -> int:
    accounts = Accounts(database_url(config.gateway.database_url, Path(config.data_dir)))
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
            writer.writerow([created.account.name, created.account.role, " ".join(created.account.classes), created.password, created.api_key])
        print(f"{len(created_all)} Konten angelegt (accounts created).", file=sys.stderr)
        return 0
    except AccountError as error:
        print(f"schulki user {args.user_command}: {error}", file=sys.stderr)
        return 2
