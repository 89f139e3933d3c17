"""The ``schulki`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from schulki.config import SettingsError, load_config
from schulki.runtime import registry

SERVICES = registry.NAMES
"""The gRPC services, in the order ``schulki up`` starts them."""


def available_services() -> list[str]:
    """The services whose code and engine libraries are installed here (an image may carry only some of them)."""
    return registry.installed_services()


def cmd_serve(args: argparse.Namespace) -> int:
    from schulki.cores import apply_placement
    from schulki.runtime import logs
    from schulki.runtime.errors import StartupError
    from schulki.runtime.server import serve

    config = load_config()
    apply_placement(config.runtime)  # before the engine's threads exist: they inherit it
    logs.configure(config.runtime.log_level, config.runtime.log_content)
    module = importlib.import_module(f"schulki.{args.service}")
    port = args.port if args.port is not None else registry.spec(args.service).port(config)
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
    from schulki.cores import apply_placement
    from schulki.stack import run_stack

    services = available_services()
    if args.services:
        wanted = [name.strip() for name in args.services.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in services]
        if unknown:
            print(f"schulki up: unknown or not installed: {', '.join(unknown)} (installed: {', '.join(services)})", file=sys.stderr)
            return 2
        services = [name for name in services if name in wanted]
    config = load_config()
    apply_placement(config.runtime)  # runtime.cpu_cores given to schulki up: the split divides those
    return run_stack(config, services)


def cmd_models(args: argparse.Namespace) -> int:
    from schulki.models.defaults import models_dir
    from schulki.models.install import ModelCheckError, add_model, installed

    config = load_config()
    if args.models_command == "list":
        for entry in installed(models_dir(config)):
            print(f"{entry.name}\t{entry.file}\t{entry.size_bytes / 1e9:.2f} GB\t{entry.architecture}")
        return 0
    try:
        entry = add_model(args.file, models_dir(config), args.name)
    except (ModelCheckError, OSError) as error:  # one line for the admin, no traceback
        print(f"schulki models add: {error}", file=sys.stderr)
        return 2
    print(
        f"schulki models add: {entry.name} ({entry.file}, {entry.size_bytes / 1e9:.2f} GB) geprüft und kopiert; "
        f"schulki up startet es in wenigen Sekunden, ohne Neustart (checked and copied; schulki up serves it within seconds)"
    )
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    from schulki.gateway.accounts.users_cli import run_user_command

    return run_user_command(load_config(), args)


def cmd_backup(args: argparse.Namespace) -> int:
    from schulki.backup import BackupError, make_backup

    try:
        done = make_backup(load_config())
    except (BackupError, OSError) as error:  # one line for the admin (and the timer's journal), no traceback
        print(f"schulki backup: {error}", file=sys.stderr)
        return 2
    size = done.manifest["total_bytes"] / 1e6
    expired = f"; gelöscht (expired): {', '.join(done.expired)}" if done.expired else ""
    print(f"schulki backup: {done.folder} ({len(done.manifest['files'])} Dateien, {size:.1f} MB, {done.seconds:.1f} s){expired}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from schulki.backup import BackupError, find_backup, restore_backup

    config = load_config()
    try:
        done = restore_backup(config, find_backup(config, args.name))
    except (BackupError, OSError) as error:
        print(f"schulki restore: {error}", file=sys.stderr)
        return 2
    print(
        f"schulki restore: {done.folder} zurückgespielt (restored) in {done.seconds:.1f} s; jetzt den Gateway starten (start the gateway)"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from schulki.evaluation.planning import measurements_text, quality_floor
    from schulki.evaluation.results import RESULTS_FOLDER, load_results
    from schulki.models.catalog import CatalogError, load_catalog
    from schulki.models.fleet import FleetError, plan_inventory, plan_table

    config = load_config()
    results_dir = args.results or config.evaluation.results_dir or config.data_dir / "models" / RESULTS_FOLDER
    max_kld = args.max_kld if args.max_kld is not None else config.evaluation.max_mean_kld
    records = load_results(results_dir)
    catalog = load_catalog()
    try:
        plans = plan_inventory(args.inventory, quality_floor(records, catalog, max_kld), catalog)
    except (FleetError, CatalogError) as error:
        print(f"schulki plan: {error}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(plans, indent=2))
    else:
        print(plan_table(plans))
        measured = measurements_text(plans, records, catalog)
        if measured:
            print(measured)
    return 1 if any(p["error"] or (p["chat"] and not p["chat"]["fits"]) for p in plans) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schulki", description="Private AI for school networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--port", type=int, default=None, help="port to listen on (0 picks a free one); default from the settings")
    serve.add_argument("--host", default=None, help="address to listen on; default from the settings")
    serve.set_defaults(func=cmd_serve)

    up = commands.add_parser("up", help="start every service on this machine and print the URL")
    up.add_argument("--services", default="", metavar="A,B", help="start only these services (and the gateway), e.g. inference")
    up.set_defaults(func=cmd_up)

    models = commands.add_parser("models", help="add chat models from a USB stick or the school's mirror (no model hub is contacted)")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    models_add = model_commands.add_parser(
        "add", help="check a GGUF file (header, architecture, sha256) and copy it into the models folder"
    )
    models_add.add_argument("file", type=Path)
    models_add.add_argument("--name", default=None, help="the name users see; default: catalog id and quant, or the file name")
    model_commands.add_parser("list", help="list the chat models added to this machine")
    models.set_defaults(func=cmd_models)

    user = commands.add_parser("user", help="create, export or delete gateway accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_add = user_commands.add_parser("add", help="create one account")
    user_add.add_argument("name")
    user_add.add_argument("--role", choices=("student", "teacher", "admin"), default="student")
    user_add.add_argument(
        "--workspace", action="append", default=[], metavar="W", help="class whose workspace the user shares (repeatable)"
    )
    user_import = user_commands.add_parser("import", help="create the accounts of a class list (CSV: name,role,class,password)")
    user_import.add_argument("csv_file")
    user_export = user_commands.add_parser("export", help="write everything schulki keeps about a user into a zip (GDPR right of access)")
    user_export.add_argument("name")
    user_export.add_argument("-o", "--output", default=None, help="the zip file to write; default schulki-daten-NAME.zip")
    user_delete = user_commands.add_parser("delete", help="delete a user with all their data: account, chats, documents, transcripts")
    user_delete.add_argument("name")
    user.set_defaults(func=cmd_user)

    backup = commands.add_parser(
        "backup", help="save accounts, the gateway's files and the document store into a dated folder, while the stack runs"
    )
    backup.set_defaults(func=cmd_backup)
    restore = commands.add_parser(
        "restore", help="put a backup back (stop the gateway and retrieval first); refuses one whose files do not match its manifest"
    )
    restore.add_argument("name", help="the backup's folder name in gateway.backup_dir (schulki-YYYYMMDD-HHMMSS) or its path")
    restore.set_defaults(func=cmd_restore)

    plan = commands.add_parser(
        "plan", help="print, per host of an inventory, the model, quant, context length and GPU layers it would get, and why"
    )
    plan.add_argument("-i", "--inventory", required=True, help="the school's Ansible inventory, e.g. inventory/example")
    plan.add_argument("--json", action="store_true", help="print the full plans as JSON")
    plan.add_argument(
        "--max-kld",
        type=float,
        default=None,
        help="quality floor: no quant whose measured mean KLD is above this (default: evaluation.max_mean_kld)",
    )
    plan.add_argument(
        "--results", default=None, help="folder of schulki eval results (default: evaluation.results_dir, else var/models/eval-results)"
    )
    plan.set_defaults(func=cmd_plan)

    from schulki.compliance.cli import add_parser as add_compliance_parser

    add_compliance_parser(commands)
    from schulki.evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(commands)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as error:  # a misspelt or wrong setting: one line naming it, no traceback
        print(f"schulki {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
