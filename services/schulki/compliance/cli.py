"""``schulki compliance [-o FOLDER]``: write the compliance pack from the live settings and list its files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    """Add the ``compliance`` subcommand to schulki's command line (``commands``: argparse's subparsers)."""
    compliance = commands.add_parser(
        "compliance",
        help="write the DSFA draft, record of processing, TOMs, deletion concept and parents' letter "
        "(German, Markdown and PDF) from the live settings",
    )
    compliance.add_argument(
        "-o", "--output", type=Path, default=Path("schulki-datenschutz"), help="folder to write into (default: ./schulki-datenschutz)"
    )
    compliance.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from schulki.compliance.write import write_pack
    from schulki.config import load_config

    try:
        written = write_pack(load_config(), args.output)
    except OSError as error:  # a folder that cannot be written: one line, no traceback
        print(f"schulki compliance: {error}", file=sys.stderr)
        return 2
    print(
        f"schulki compliance: {len(written)} Dateien in {args.output} (aus den aktuellen Einstellungen; Entwürfe für die Datenschutzbeauftragten):"
    )
    for path in written:
        print(f"  {path}")
    return 0
