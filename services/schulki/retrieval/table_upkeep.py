"""Index upkeep of the embedded store's tables, run in a process of its own.

Lance runs the CPU work of every operation in a process on one shared pool of
``max(1, cores - 2)`` threads (``LANCE_CPU_THREADS`` overrides it): a single
thread on a 2-core school server. An ``optimize`` that folds new rows into the
HNSW index keeps that thread busy for seconds (minutes at 100,000 chunks), and
every search in the process queues behind it, on any table handle, though no
lock is taken. In a process of its own the upkeep has its own pool, so a
search in the service never waits for it; the two processes share the cores
as the OS schedules them. The store holds its write lock while the upkeep
runs, so the upkeep is serialised with ingests and deletes, not with searches.

    python -m schulki.retrieval.table_upkeep FOLDER WORKSPACE optimize --keep-versions-s 60
    python -m schulki.retrieval.table_upkeep FOLDER WORKSPACE vector-index
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

ACTIONS = ("optimize", "vector-index")

SERVICES = Path(__file__).resolve().parents[2]
"""The folder that holds the schulki package: the upkeep process runs the same code as the store that starts it."""

NICENESS = 10
"""How much the upkeep process lowers its priority: on a busy machine the service's searches get the cores first."""

VECTOR_INDEX = "vector_idx"
"""The name of a table's vector index (the store asks for it by this name)."""

ERROR_TAIL = 2000
"""Characters of the upkeep process's error output that go into the store's error."""


def optimize(folder: Path, workspace: str, keep_versions_s: int) -> None:
    """Compact the table, fold new rows into its indexes and remove versions older than ``keep_versions_s``."""
    import lancedb

    table = lancedb.connect(folder).open_table(workspace)
    table.optimize(cleanup_older_than=timedelta(seconds=keep_versions_s))


def build_vector_index(folder: Path, workspace: str) -> None:
    """Build (or rebuild) the table's vector index: IVF with HNSW, scalar-quantised, cosine."""
    import lancedb
    from lancedb.index import HnswSq

    table = lancedb.connect(folder).open_table(workspace)
    table.create_index("vector", config=HnswSq(distance_type="cosine"), replace=True, name=VECTOR_INDEX)


def command(folder: Path, workspace: str, action: str, keep_versions_s: int) -> list[str]:
    """The command line of one upkeep process."""
    return [
        sys.executable,
        "-m",
        "schulki.retrieval.table_upkeep",
        str(folder),
        workspace,
        action,
        "--keep-versions-s",
        str(keep_versions_s),
    ]


def run(folder: Path, workspace: str, action: str, keep_versions_s: int) -> None:
    """Run one upkeep action in a process of its own and wait for it; RuntimeError with its error output when it fails."""
    if action not in ACTIONS:
        raise ValueError(f"unknown upkeep action {action!r}; expected one of {ACTIONS}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SERVICES), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        command(folder, workspace, action, keep_versions_s), env=env, capture_output=True, text=True, errors="replace", check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{action} of workspace {workspace} failed (exit status {done.returncode}): {done.stderr[-ERROR_TAIL:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the store's lance folder")
    parser.add_argument("workspace")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--keep-versions-s", type=int, default=60, help="optimize: keep table versions younger than this")
    args = parser.parse_args(argv)
    os.nice(NICENESS)
    if args.action == "optimize":
        optimize(args.folder, args.workspace, args.keep_versions_s)
    else:
        build_vector_index(args.folder, args.workspace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
