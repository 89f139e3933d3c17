"""The ``--smoke`` option every benchmark has: the same code path end to end at tiny sizes, in seconds.

A smoke run measures nothing worth quoting; it shows that the benchmark still runs against
today's services and prints its table. tests/test_benchmarks_smoke.py runs every benchmark so.
"""

from __future__ import annotations

import argparse


def parse_args(parser: argparse.ArgumentParser, **smoke: object) -> argparse.Namespace:
    """Parse the command line, with ``--smoke`` added: it makes ``smoke`` (option destinations and their tiny values) the
    defaults. Options given on the command line still win, so ``--smoke --students 5`` runs five students."""
    shown = " ".join(f"--{name.replace('_', '-')}" + _shown(value) for name, value in smoke.items())
    parser.add_argument("--smoke", action="store_true", help=f"a quick run at tiny sizes, to see that the benchmark still works ({shown})")
    args = parser.parse_args()
    if args.smoke:
        unknown = [name for name in smoke if name not in vars(args)]
        if unknown:
            raise ValueError(f"smoke sizes for options the parser does not have: {', '.join(unknown)}")
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args


def _shown(value: object) -> str:
    """A smoke value as one would type it after its option."""
    if value is True:
        return ""
    if isinstance(value, list | tuple):
        return " " + " ".join(str(v) for v in value)
    return f" {value}"
