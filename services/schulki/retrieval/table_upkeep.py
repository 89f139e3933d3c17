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

The store keeps its upkeep process between actions (``UpkeepWorker``): the
process imports lancedb once (3.4 s of CPU on a school server) instead of once
per document, which a workspace with a vector index folds in after every
document. It leaves after ``IDLE_S`` without work and starts again for the next.

    python -m schulki.retrieval.table_upkeep FOLDER WORKSPACE optimize --keep-versions-s 60
    python -m schulki.retrieval.table_upkeep FOLDER WORKSPACE vector-index
    python -m schulki.retrieval.table_upkeep --serve    (the store's worker: one JSON request per line on stdin)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import IO

SERVICES = Path(__file__).resolve().parents[2]
"""The folder that holds the schulki package: the upkeep process runs the same code as the store that starts it."""

NICENESS = 10
"""How much the upkeep process lowers its priority: on a busy machine the service's searches get the cores first."""

VECTOR_INDEX = "vector_idx"
"""The name of a table's vector index (the store asks for it by this name)."""

ERROR_TAIL = 2000
"""Characters of the upkeep process's error output that go into the store's error."""

IDLE_S = 60.0
"""How long the upkeep process waits for its next action before it leaves (and its Lance caches with it): the
documents of a class's upload follow one another within seconds."""


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


ACTION_FUNCTIONS: dict[str, Callable[[Path, str, int], None]] = {
    "optimize": optimize,
    "vector-index": lambda folder, workspace, _keep_versions_s: build_vector_index(folder, workspace),
}
ACTIONS = tuple(ACTION_FUNCTIONS)


def command() -> list[str]:
    """The command line of the upkeep process the store keeps."""
    return [sys.executable, "-m", "schulki.retrieval.table_upkeep", "--serve"]


class UpkeepWorker:
    """The store's upkeep process, kept between actions and started when the first one comes.

    It runs one action at a time (callers wait their turn), leaves IDLE_S after its last one, and is started anew
    for the next. When it dies during an action (killed, out of memory), that action fails with its exit status
    and error output, and the next action starts a new process.
    """

    def __init__(self, idle_s: float = IDLE_S):
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._idle: threading.Timer | None = None

    @property
    def pid(self) -> int | None:
        """The running upkeep process's id; None when none runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def run(self, folder: Path, workspace: str, action: str, keep_versions_s: int) -> None:
        """Run one upkeep action in the upkeep process and wait for it; RuntimeError with its error when it fails."""
        if action not in ACTIONS:
            raise ValueError(f"unknown upkeep action {action!r}; expected one of {ACTIONS}")
        request = {"folder": str(folder), "workspace": workspace, "action": action, "keep_versions_s": keep_versions_s}
        with self._lock:
            self._cancel_idle()
            line, status, errors = b"", None, ""
            for _attempt in range(2):
                process = self._process if self._process is not None and self._process.poll() is None else self._start()
                assert process.stdin is not None and process.stdout is not None, "both are pipes (_start)"
                try:
                    process.stdin.write(json.dumps(request).encode() + b"\n")
                    process.stdin.flush()
                    taken = process.stdout.readline()
                except BrokenPipeError:
                    taken = b""
                if not taken:
                    # It ended before it took the request (killed or out of memory after its last action, or still
                    # dying when the request came): a new process takes it, once.
                    status, errors = self._stop()
                    continue
                line = process.stdout.readline()
                if not line:  # it died during the action
                    status, errors = self._stop()
                break
            if not line:
                raise RuntimeError(f"{action} of workspace {workspace} failed (exit status {status}): {errors}")
            self._idle = threading.Timer(self.idle_s, self._leave_if_idle)
            self._idle.daemon = True
            self._idle.start()
        error = json.loads(line).get("error")
        if error:
            raise RuntimeError(f"{action} of workspace {workspace} failed (in the upkeep process): {error}")

    def close(self) -> None:
        """End the upkeep process (after the action it runs, if any)."""
        with self._lock:
            self._cancel_idle()
            self._stop()

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _leave_if_idle(self) -> None:
        with self._lock:
            if self._idle is not None and self._idle is threading.current_thread():
                self._idle = None
                self._stop()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SERVICES), env.get("PYTHONPATH", "")) if p)
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - open for the process's life, closed in _stop
        self._process = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, env=env)
        return self._process

    def _stop(self) -> tuple[int | None, str]:
        """Close the process's input, so it leaves after its action; its exit status and the end of its error output."""
        process, errors = self._process, self._errors
        if process is None:
            return None, ""
        assert process.stdin is not None and process.stdout is not None, "both are pipes (_start)"
        with contextlib.suppress(OSError):  # it died: nothing to close
            process.stdin.close()
        try:
            status = process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        process.stdout.close()
        self._process = self._errors = None  # only now: pid stays the process's own until it has ended
        tail = ""
        if errors is not None:
            errors.seek(0, os.SEEK_END)
            errors.seek(max(0, errors.tell() - ERROR_TAIL))
            tail = errors.read().decode(errors="replace")
            errors.close()
        return status, tail


def serve() -> int:
    """The upkeep process: one JSON request per line on stdin, answered by two lines, until stdin closes: that it took
    the request (so a process that dies before it is replaced, and one that dies during an action fails only it),
    then the outcome."""
    import lancedb  # noqa: F401 - once, for every action that follows (the reason this process is kept)

    # The answers get a descriptor of their own: whatever a library prints goes to the error output, not into them.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        request = json.loads(line)
        answers.write('{"taken": true}\n')  # first: the store knows this process took the request
        answers.flush()
        try:
            ACTION_FUNCTIONS[request["action"]](Path(request["folder"]), request["workspace"], int(request["keep_versions_s"]))
            answer: dict[str, str] = {}
        except Exception:
            answer = {"error": traceback.format_exc()[-ERROR_TAIL:]}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:
        os.nice(NICENESS)
        return serve()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the store's lance folder")
    parser.add_argument("workspace")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--keep-versions-s", type=int, default=60, help="optimize: keep table versions younger than this")
    args = parser.parse_args(argv)
    os.nice(NICENESS)
    ACTION_FUNCTIONS[args.action](args.folder, args.workspace, args.keep_versions_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
