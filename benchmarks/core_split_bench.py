"""Core split: a 100-page PDF's ingest and the students' time to first token, with and without ``schulki up``'s core split.

For each mode the real ``schulki up`` runs (every service its own process, as
on a school's single machine; the gateway on plain HTTP on loopback) and:

1. ingests a 100-page PDF (fpdf2) on the quiet stack, through the retrieval service;
2. lets N simulated students chat through the gateway (benchmarks/gateway_load_bench.py's
   students) for --duration seconds: their time to first token without an ingest;
3. lets them chat again and ingests the PDF once more meanwhile: the ingest time under
   load, and the students' time to first token while it ran (requests from its start to its end).

Modes: ``before`` is ``cores.split = false`` (every engine sizes its threads to
the whole machine and runs on every core, as before the split); ``after`` the
derived split (threads per engine, each service pinned to its share of the
CPUs, the bursty engines at a lower priority); ``unpinned`` the split without
CPU affinity (``cores.pin = false``);
``nonice`` the split without the lower priority; ``noyield`` the split with an
ingest that never waits for the class's line (``retrieval.yield_to_class =
false``: full speed, as where embeddings have their own node); ``yield`` the
split with an ingest that waits for it even so (``true``; left empty, an ingest
pinned apart from the chat by the split does not wait); ``unsplit-waiting``
no split and every ingest step waiting up to its full ``yield_max_wait_s`` (an
upload's waits together unbounded, as before ``retrieval.yield_share``);
``unsplit-noyield`` no split and no waiting. Everything is printed side by side at the end, with the load average.

    .venv/bin/python benchmarks/core_split_bench.py                           # 100 pages, 30 students, before and after
    .venv/bin/python benchmarks/core_split_bench.py --pages 30 --duration 30 --modes before,after,unpinned,nonice
    .venv/bin/python benchmarks/core_split_bench.py --pages 20 --students 10 --duration 30 --modes yield,after     # ingest waiting for the class's line or not
    .venv/bin/python benchmarks/core_split_bench.py --modes unsplit-waiting,before,unsplit-noyield  # no split: each step's full wait, the share, none
    .venv/bin/python benchmarks/core_split_bench.py --smoke    # 2 pages, 2 students for 4 s, the split only: does it still run?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.config import Config  # noqa: E402
from schulki.gateway.accounts.database import Accounts, database_url  # noqa: E402
from schulki.retrieval.v1 import retrieval_service_pb2 as pb  # noqa: E402
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc  # noqa: E402

from benchmarks.gateway_load_bench import STUDENT_REQUESTS_PER_MINUTE, Student, one_request, percentile  # noqa: E402
from benchmarks.smoke import parse_args  # noqa: E402
from tests.retrieval_documents import pdf_bytes  # noqa: E402
from tests.retrieval_support import requests  # noqa: E402
from tests.up_stack import UpProcess  # noqa: E402

MODES = {
    "before": {"SCHULKI_CORES__SPLIT": "false"},
    "after": {},
    "unpinned": {"SCHULKI_CORES__PIN": "false"},
    "nonice": {"SCHULKI_CORES__BACKGROUND_NICE": "0"},
    "noyield": {"SCHULKI_RETRIEVAL__YIELD_TO_CLASS": "false"},
    "yield": {"SCHULKI_RETRIEVAL__YIELD_TO_CLASS": "true"},
    "unsplit-waiting": {"SCHULKI_CORES__SPLIT": "false", "SCHULKI_RETRIEVAL__YIELD_SHARE": "1000"},
    "unsplit-noyield": {"SCHULKI_CORES__SPLIT": "false", "SCHULKI_RETRIEVAL__YIELD_TO_CLASS": "false"},
}
"""The settings of each mode, on top of the defaults (no thread setting is given, so the split derives them all)."""

WORDS = [
    "Zelle",
    "Atom",
    "Energie",
    "Fluss",
    "Berg",
    "Stadt",
    "König",
    "Licht",
    "Strom",
    "Wasser",
    "Pflanze",
    "Sprache",
    "Gedicht",
    "Klima",
    "Planet",
    "Schule",
    "Aufgabe",
    "Lösung",
]


def book(pages: int) -> bytes:
    rng = random.Random(1)
    return pdf_bytes([" ".join(" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(12)) for _ in range(pages)])


def ingest(address: str, workspace: str, data: bytes, data_dir: Path) -> float:
    """Seconds to ingest data as one PDF into a new workspace, through the retrieval service (with the token ``schulki up`` made)."""
    token = [("authorization", "Bearer " + (data_dir / "runtime" / "service_token").read_text().strip())]
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]) as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=workspace), timeout=60, metadata=token)
        started = time.perf_counter()
        for _ in stub.IngestDocument(requests(workspace, "buch.pdf", data), timeout=3600, metadata=token):
            pass
        return time.perf_counter() - started


def chat_phase(
    url: str, keys: list[str], args: argparse.Namespace, work: Callable[[], float] | None = None
) -> tuple[dict[str, float], float | None]:
    """Students chat; after a warm-up their times are counted until --duration passes, or while work (an ingest) runs.
    Returns TTFT p50/p95, requests and errors of the counted part, and work's result."""
    stop = threading.Event()
    result: dict[str, float] = {}
    ttfts: list[float] = []
    students: list[Student] = []
    first_errors: list[str] = []

    def conductor() -> None:
        try:
            time.sleep(args.warmup)
            for student in students:  # count only what happens from here on
                student.ttfts.clear()
                student.errors.clear()
            if work is None:
                time.sleep(args.duration)
            else:
                result["work"] = work()
            for student in students:
                ttfts.extend(student.ttfts)
                result["errors"] = result.get("errors", 0) + len(student.errors)
                first_errors.extend(student.errors[: 3 - len(first_errors)])
        finally:
            stop.set()  # a failed ingest ends the students' chat too, instead of leaving them chatting for ever

    async def run() -> list[Student]:
        made = [Student(key) for key in keys]
        students.extend(made)  # the conductor clears and reads their times

        async def simulate(student: Student) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0)) as client:
                await asyncio.sleep(random.uniform(0, 2))
                while not stop.is_set():
                    try:
                        await one_request(client, student, args.max_tokens, {})  # schulki's default sampling
                    except httpx.HTTPError as error:
                        student.errors.append(type(error).__name__)
                    await asyncio.sleep(random.uniform(0, args.think))

        await asyncio.gather(*(simulate(s) for s in made))
        return made

    thread = threading.Thread(target=conductor)
    thread.start()
    asyncio.run(run())
    thread.join()
    if first_errors:
        print(f"   the students' first errors: {first_errors}", flush=True)
    return {
        "p50": percentile(ttfts, 50),
        "p95": percentile(ttfts, 95),
        "answers": len(ttfts),
        "errors": result.get("errors", 0),
    }, result.get("work")


def run_mode(mode: str, args: argparse.Namespace, data: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        accounts = Accounts(database_url(None, data_dir))
        keys = [accounts.add_user(f"schueler-{i:02d}", "student", []).api_key for i in range(args.students)]
        env = {
            **MODES[mode],
            "SCHULKI_INFERENCE__MAX_QUEUED": str(max(64, 2 * args.students)),
            "SCHULKI_RUNTIME__LOG_LEVEL": "WARNING",
            "SCHULKI_GATEWAY__REQUESTS_PER_MINUTE": json.dumps(
                {**Config().gateway.requests_per_minute, "student": STUDENT_REQUESTS_PER_MINUTE}
            ),
        }
        with UpProcess(data_dir, env=env) as up:
            up.wait_until_running()
            print(f"[{mode}] " + next((line.strip() for line in up.output if "cores" in line or "chat on" in line), "?"), flush=True)
            quiet = ingest(up.address("retrieval"), "ruhig", data, data_dir)
            print(f"[{mode}] quiet ingest {quiet:.1f} s   (load {os.getloadavg()[0]:.1f})", flush=True)
            alone, _ = chat_phase(up.url, keys, args)
            print(
                f"[{mode}] chat alone: TTFT p50 {alone['p50']:.2f} s p95 {alone['p95']:.2f} s   (load {os.getloadavg()[0]:.1f})", flush=True
            )
            during, loaded = chat_phase(up.url, keys, args, work=lambda: ingest(up.address("retrieval"), "unterricht", data, data_dir))
            if loaded is None:
                raise RuntimeError("the ingest during the chat returned no time")
            print(
                f"[{mode}] ingest during chat {loaded:.1f} s; chat during ingest: TTFT p50 {during['p50']:.2f} s p95 {during['p95']:.2f} s"
                f"   (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            return {
                "quiet": quiet,
                "loaded": loaded,
                "alone_p50": alone["p50"],
                "alone_p95": alone["p95"],
                "during_p50": during["p50"],
                "during_p95": during["p95"],
                "answers": alone["answers"] + during["answers"],
                "errors": alone["errors"] + during["errors"],
                "load": os.getloadavg()[0],
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds the students' chat alone is counted")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of chat before counting starts")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--think", type=float, default=3.0, help="most seconds a student waits between answers")
    parser.add_argument("--modes", default="before,after", help=f"comma-separated, of {', '.join(MODES)}")
    args = parse_args(parser, pages=2, students=2, duration=4.0, warmup=1.0, max_tokens=8, think=1.0, modes="after")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        raise SystemExit(f"unknown modes: {', '.join(unknown)}")
    data = book(args.pages)
    cpus = len(os.sched_getaffinity(0))
    print(
        f"{args.pages}-page PDF ({len(data) / 1e6:.1f} MB), {args.students} students, {cpus} CPUs; uptime: {os.popen('uptime').read().strip()}"
    )
    print(Config().cores)
    rows = {mode: run_mode(mode, args, data) for mode in modes}
    print(
        f"\n{'mode':<9} {'ingest quiet':>12} {'under chat':>10} {'ratio':>6}  {'TTFT p50/p95 alone':>19}  {'during ingest':>14} {'p95 ratio':>9}  {'answers':>7} {'errors':>6} {'load':>5}"
    )
    for mode, r in rows.items():
        print(
            f"{mode:<9} {r['quiet']:>11.1f}s {r['loaded']:>9.1f}s {r['loaded'] / r['quiet']:>6.2f}  "
            f"{r['alone_p50']:>8.2f}s /{r['alone_p95']:>6.2f}s  {r['during_p50']:>5.2f}s /{r['during_p95']:>6.2f}s {r['during_p95'] / r['alone_p95']:>9.2f}  "
            f"{r['answers']:>7.0f} {r['errors']:>6.0f} {r['load']:>5.1f}"
        )
    print("ratio: ingest under chat / quiet (target <= 2); p95 ratio: the chat's TTFT p95 during the ingest / alone (target <= 1.2)")
    if "before" in rows and "after" in rows:
        b, a = rows["before"], rows["after"]
        print(
            f"after / before: ingest under chat {a['loaded'] / b['loaded']:.2f}, TTFT p95 during ingest {a['during_p95'] / b['during_p95']:.2f}, "
            f"quiet ingest {a['quiet'] / b['quiet']:.2f}"
        )
    print(f"uptime: {os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
