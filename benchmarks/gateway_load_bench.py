"""Load benchmark: N simulated students chat at once through the gateway's /v1/chat/completions.

Each student sends a streamed chat request, reads the answer to the end,
thinks for a moment, and asks again, until the time is up. Printed: requests
and errors, time to first token (p50, p95), and fairness: the slowest
student's tokens per second against the fastest's (1.0 is perfectly fair).

    .venv/bin/python benchmarks/gateway_load_bench.py                 # 30 students, 120 s, the real stack in this process
    .venv/bin/python benchmarks/gateway_load_bench.py --students 10 --duration 60
    .venv/bin/python benchmarks/gateway_load_bench.py --url http://gateway:7860 --keys keys.txt   # a running gateway, one API key per line
    .venv/bin/python benchmarks/gateway_load_bench.py --students 30 --duration 90 --threads 2 --peer
    .venv/bin/python benchmarks/gateway_load_bench.py --students 30 --duration 60 --page
    .venv/bin/python benchmarks/gateway_load_bench.py --smoke   # 2 students for 5 s, /v1 and the page, the peer only if already built

--page then runs the same students against the web page's Chat tab, through
Gradio's own API as the browser's page does (``/gradio_api/call/chat_send`` and
its event stream, logged in with the same keys), and prints /v1 and the page
side by side. The page's answers come with the Chat tab's system prompt, so the
/v1 students send the same one in this mode, and the page's answer tokens are
counted by tokenizing the answer with the model's own vocabulary.

--peer then runs the same load against llama.cpp's own llama-server (same
model file, threads and context per sequence, ``-np`` equal to schulki's
parallel sequences) and prints both side by side. llama-server is a measuring
instrument, not a dependency: ../shared/tools/build-llama-peer builds it from
the llama.cpp sources in the pinned llama-cpp-python sdist and caches it in
~/.cache/llama-peer/VERSION (or set --peer-server).

schulki's inference service runs in its own process, as ``schulki up`` runs
it (``--same-process`` puts it beside the gateway and the students, to measure
what sharing one interpreter costs). On a machine whose cores are
oversubscribed, use ``--threads 1``: two llama.cpp threads wait for each other
at every barrier of the graph, and llama-server at ``-t 2`` then fell from
8 to 0.4 tokens/s for a single request here (load 25 on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from schulki.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.smoke import parse_args

QUESTIONS = [
    "Erkläre mir die Photosynthese in zwei Sätzen.",
    "Was ist der Satz des Pythagoras?",
    "Nenne drei Nebenflüsse des Rheins.",
    "Wie funktioniert eine for-Schleife in Python?",
    "Warum ist der Himmel blau?",
    "Übersetze ins Englische: Der Hund spielt im Garten.",
]

STUDENT_REQUESTS_PER_MINUTE = 100_000
"""The benchmarks' students ask again soon after an answer ends, more often than a school lets a student ask in a
minute (gateway.requests_per_minute, 20): the benchmarks measure the machine, not that limit, so the stacks they start
raise it for students. With the limit, the core split benchmark's smoke run got HTTP 429 whenever the machine answered
quickly enough (at no thinking time: 680 errors with it, 0 without)."""


@dataclass
class Student:
    key: str
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0
    decode_s: float = 0.0
    """Seconds from each answer's first token to its end, summed: the speed a student sees once the answer runs."""


async def one_request(client: httpx.AsyncClient, student: Student, max_tokens: int, sampling: dict[str, float], system: str = "") -> None:
    """``system``: a system prompt to send first (--page gives the /v1 students the Chat tab's)."""
    system_turn = [{"role": "system", "content": system}] if system else []
    body = {
        "model": "schulki-chat",
        "stream": True,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
        "messages": [*system_turn, {"role": "user", "content": random.choice(QUESTIONS)}],
        **sampling,
    }
    start = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {student.key}"}) as response:
        if response.status_code != 200:
            student.errors.append(f"HTTP {response.status_code}: {(await response.aread())[:120]!r}")
            return
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                student.errors.append(event["error"]["message"])
                return
            if event.get("usage"):
                student.tokens += event["usage"]["completion_tokens"]
                student.prompt_tokens += event["usage"]["prompt_tokens"]
            elif event["choices"] and event["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
                student.ttfts.append(first - start)
    student.requests += 1
    if first is not None:
        student.decode_s += time.perf_counter() - first


async def simulate(
    student: Student, url: str, deadline: float, max_tokens: int, think_s: float, sampling: dict[str, float], system: str = ""
) -> None:
    # A request that waits minutes for a byte counts as an error (ReadTimeout) instead of holding the benchmark up.
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(max(180.0, deadline - time.monotonic()))) as client:
        await asyncio.sleep(random.uniform(0, 2))  # students do not press Enter in the same millisecond
        while time.monotonic() < deadline:
            try:
                await one_request(client, student, max_tokens, sampling, system)
            except httpx.HTTPError as error:
                student.errors.append(type(error).__name__)
            await asyncio.sleep(random.uniform(0, think_s))


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values[0] if values else float("nan"))


async def run(
    url: str, keys: list[str], duration: float, max_tokens: int, think_s: float, sampling: dict[str, float] | None = None, system: str = ""
) -> list[Student]:
    """``sampling``: extra body fields (the peer gets schulki's default sampling spelt out); ``system``: a system prompt."""
    students = [Student(key) for key in keys]
    deadline = time.monotonic() + duration
    await asyncio.gather(*(simulate(s, url, deadline, max_tokens, think_s, sampling or {}, system) for s in students))
    return students


def summary(students: list[Student], wall: float, cpu: dict[str, float]) -> dict[str, float]:
    ttfts = [t for s in students for t in s.ttfts]
    requests = sum(s.requests for s in students)
    tokens = max(sum(s.tokens for s in students), 1)
    return {
        "cpu_server_ms": 1000 * cpu.get("cpu_server", 0.0) / tokens,
        "cpu_client_ms": 1000 * cpu.get("cpu_client", 0.0) / tokens,
        "cpu_gateway_ms": 1000 * (cpu.get("cpu_here", 0.0) - cpu.get("cpu_client", 0.0)) / tokens,
        "requests": requests,
        "prompt_mean": sum(s.prompt_tokens for s in students) / max(requests, 1),
        "completion_mean": sum(s.tokens for s in students) / max(requests, 1),
        "errors": sum(len(s.errors) for s in students),
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p95": percentile(ttfts, 95),
        "tokens_s": sum(s.tokens for s in students) / wall,
    }


def message_text(content: str | list[dict]) -> str:
    """The text of a chat message as Gradio sends it (a string, or a list of parts with their text), without the
    markup the gateway renders answers into (gateway/web/safe_markup.py): the words a student reads."""
    shown = content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
    return html.unescape(re.sub(r"<[^>]*>", "", shown))


async def one_page_request(client: httpx.AsyncClient, student: Student, count_tokens: Callable[[str], int]) -> None:
    """One question through the Chat tab's "Senden", as the page sends it: Gradio's call route, then its event stream."""
    start = time.perf_counter()
    started = await client.post(
        "/gradio_api/call/chat_send",
        json={"data": [random.choice(QUESTIONS), [], "preset_assistant", None, None]},
        headers={"Authorization": f"Bearer {student.key}"},
    )
    if started.status_code != 200:
        student.errors.append(f"HTTP {started.status_code}: {started.text[:120]!r}")
        return
    first, answer, event = None, "", ""
    path = f"/gradio_api/call/chat_send/{started.json()['event_id']}"
    async with client.stream("GET", path, headers={"Authorization": f"Bearer {student.key}"}) as response:
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                continue
            if not line.startswith("data:"):
                continue
            if event == "error":
                student.errors.append(line[5:].strip()[:120] or "error")
                return
            data = json.loads(line[5:])
            history = data[0] if data else None
            if history and message_text(history[-1]["content"]):
                answer = message_text(history[-1]["content"])
                if first is None:
                    first = time.perf_counter()
                    student.ttfts.append(first - start)
            if event == "complete":
                break
    student.requests += 1
    student.tokens += count_tokens(answer)
    if first is not None:
        student.decode_s += time.perf_counter() - first


async def simulate_page(student: Student, url: str, deadline: float, think_s: float, count_tokens: Callable[[str], int]) -> None:
    """A student who asks in the Chat tab, reads the answer, thinks and asks again, as ``simulate`` does through /v1."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(max(180.0, deadline - time.monotonic()))) as client:
        await asyncio.sleep(random.uniform(0, 2))
        while time.monotonic() < deadline:
            try:
                await one_page_request(client, student, count_tokens)
            except httpx.HTTPError as error:
                student.errors.append(type(error).__name__)
            await asyncio.sleep(random.uniform(0, think_s))


async def run_page(url: str, keys: list[str], duration: float, think_s: float, count_tokens: Callable[[str], int]) -> list[Student]:
    """The same students as ``run``, in the web page's Chat tab."""
    students = [Student(key) for key in keys]
    deadline = time.monotonic() + duration
    await asyncio.gather(*(simulate_page(s, url, deadline, think_s, count_tokens) for s in students))
    return students


def token_counter(model: Path) -> Callable[[str], int]:
    """Answer tokens of a text the page shows, by the model's own vocabulary (the page reports no usage);
    retokenizing the text may differ from the generated tokens by a token or so."""
    from llama_cpp import Llama

    vocabulary = Llama(model_path=str(model), vocab_only=True, verbose=False)
    return lambda text: len(vocabulary.tokenize(text.encode(), add_bos=False, special=False))


def peer_server_path(given: str | None) -> Path:
    if given:
        return Path(given)
    import llama_cpp

    cache = Path(os.environ.get("LLAMA_PEER_CACHE", Path.home() / ".cache" / "llama-peer"))
    return cache / llama_cpp.__version__ / "src" / "vendor" / "llama.cpp" / "build" / "bin" / "llama-server"


def template_arguments(model: Path) -> list[str]:
    """The same chat format schulki applies: a GGUF without a chat template (the default Gemma 3 270M) gets its family's turn
    format in schulki (inference/engine.py FALLBACK_TEMPLATES), so the peer gets llama.cpp's built-in template of that
    family. Left alone, llama-server falls back to ChatML, which Gemma does not know: its answers then never end and
    both servers would not do the same work."""
    from schulki.inference.engine import FALLBACK_TEMPLATES
    from schulki.models.gguf import read_metadata

    metadata = read_metadata(model)
    if metadata.get("tokenizer.chat_template"):
        return []
    return ["--no-jinja", "--chat-template", "gemma" if metadata.get("general.architecture") in FALLBACK_TEMPLATES else "chatml"]


def peer_sampling(config: Config) -> dict[str, float]:
    """schulki's default sampling, spelt out for llama-server (whose own defaults differ: temperature 0.8, min_p 0.05, no
    repeat penalty)."""
    from schulki.inference.sampling import PENALTY_LAST_N

    i = config.inference
    return {
        "temperature": i.default_temperature,
        "top_p": i.default_top_p,
        "top_k": i.default_top_k,
        "min_p": 0.0,
        "repeat_penalty": i.default_repeat_penalty,
        "repeat_last_n": PENALTY_LAST_N,
    }


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, parallel: int, threads: int, context: int) -> Iterator[tuple[str, int]]:
    """llama.cpp's llama-server on a free port with -np parallel slots of `context` tokens each; yields its URL and process id."""
    if not binary.exists():
        raise SystemExit(f"llama-server not found at {binary}: build it with ../shared/tools/build-llama-peer")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(parallel),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-c",
        str(context * parallel),
        "--no-webui",
        *template_arguments(model),
    ]
    print("peer: " + " ".join([binary.name, *command[1:]]))
    # llama-server logs every request and slot event to stderr (tens of KiB a minute under load). Its log goes to
    # a file: a pipe that nobody reads fills after 64 KiB, and then the server blocks in its next write and stalls.
    with tempfile.TemporaryFile(mode="w+") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
        url = f"http://127.0.0.1:{port}"

        def log_tail() -> str:
            log_file.seek(0)
            return log_file.read()[-2000:]

        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"llama-server exited: {log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"llama-server not ready after 120 s: {log_tail()}")
                time.sleep(0.5)
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def inference_process(config: Config, threads: int) -> Iterator[tuple[str, int]]:
    """``schulki serve inference`` in its own process, as ``schulki up`` runs it; yields its address.

    In one process with the gateway and the simulated students, the engine's worker thread waits for the GIL
    after every short call into llama.cpp while the event loops run: a handicap llama-server does not have."""
    from schulki.runtime.client import wait_until_serving

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inference = config.inference
    env = dict(
        os.environ,
        SCHULKI_DATA_DIR=str(config.data_dir),
        SCHULKI_RUNTIME__LOG_LEVEL="WARNING",  # not a line per request in the benchmark's output
        SCHULKI_INFERENCE__MODEL_PATH=str(inference.model_path),
        SCHULKI_INFERENCE__THREADS=str(threads),
        SCHULKI_INFERENCE__CONTEXT_LENGTH=str(inference.context_length),
        SCHULKI_INFERENCE__MAX_QUEUED=str(inference.max_queued),
        SCHULKI_INFERENCE__MAX_QUEUED_PER_USER=str(inference.max_queued_per_user),
    )
    if inference.parallel_sequences:
        env["SCHULKI_INFERENCE__PARALLEL_SEQUENCES"] = str(inference.parallel_sequences)
    process = subprocess.Popen([sys.executable, "-m", "schulki.cli", "serve", "inference", "--port", str(port)], env=env)
    address = f"127.0.0.1:{port}"
    try:
        wait_until_serving(address, 300, is_alive=lambda: process.poll() is None)
        yield address, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int | None) -> float:
    """CPU time a process has used so far (all its threads); this process's own when pid is None."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextlib.contextmanager
def cpu_use(server: int | None, into: dict[str, float]) -> Iterator[None]:
    """Measure the CPU seconds of the server process (when it has its own), of this one (the students, and schulki's
    gateway) and of the calling thread (the students: ``asyncio.run`` runs them on it) over the block, into ``into``.
    The gateway's share is this process's less the students' thread: uvicorn, gRPC and the worker threads."""
    before = cpu_seconds(server) if server else 0.0, cpu_seconds(None), time.thread_time()
    yield
    into["cpu_server"] = (cpu_seconds(server) - before[0]) if server else 0.0
    into["cpu_here"] = cpu_seconds(None) - before[1]
    into["cpu_client"] = time.thread_time() - before[2]


def side_by_side(rows: dict[str, dict[str, float]]) -> None:
    print(
        f"\n{'server':<34} {'TTFT p50':>9} {'TTFT p95':>9} {'tokens/s':>9} {'requests':>9} {'errors':>7} {'prompt/req':>11} {'answer/req':>11}"
        f" {'CPU ms/token: server':>21} {'gateway':>8} {'client':>7}"
    )
    for name, r in rows.items():
        print(
            f"{name:<34} {r['ttft_p50']:>8.2f}s {r['ttft_p95']:>8.2f}s {r['tokens_s']:>9.1f} {r['requests']:>9.0f} {r['errors']:>7.0f}"
            f" {r['prompt_mean']:>11.1f} {r['completion_mean']:>11.1f} {r['cpu_server_ms']:>21.2f} {r['cpu_gateway_ms']:>8.2f} {r['cpu_client_ms']:>7.2f}"
        )
    print(
        "CPU ms/token: CPU time per generated token of the server's own process (schulki's inference service or llama-server;"
        " 0 when it runs in the benchmark's process), of schulki's gateway (the benchmark's process less the students' thread;"
        " 0 for llama-server, which has none) and of the students' HTTP client (the thread that runs them)"
    )


def report(students: list[Student], duration: float, wall: float) -> None:
    ttfts = [t for s in students for t in s.ttfts]
    requests = sum(s.requests for s in students)
    errors = [e for s in students for e in s.errors]
    rates = [s.tokens / wall for s in students]
    print(f"students: {len(students)}   duration: {duration:.0f} s (wall {wall:.0f} s)")
    print(f"requests completed: {requests}   errors: {len(errors)}")
    for message in sorted(set(errors))[:5]:
        print(f"  error: {message}  (x{errors.count(message)})")
    print(
        f"time to first token: p50 {percentile(ttfts, 50):.2f} s   p95 {percentile(ttfts, 95):.2f} s   max {max(ttfts, default=float('nan')):.2f} s"
    )
    print(f"tokens generated: {sum(s.tokens for s in students)}   aggregate {sum(rates):.1f} tokens/s")
    if rates and max(rates) > 0:
        print(
            f"fairness over the run: slowest student {min(rates):.2f} tokens/s, fastest {max(rates):.2f} tokens/s, ratio {min(rates) / max(rates):.2f}"
        )
    streaming = [s.tokens / s.decode_s for s in students if s.decode_s > 0]
    if streaming:
        print(
            f"while an answer streams: slowest student {min(streaming):.1f} tokens/s, fastest {max(streaming):.1f} tokens/s, "
            f"ratio {min(streaming) / max(streaming):.2f}"
        )


def chat_tab_system_prompt() -> str:
    from schulki.gateway.ui.chat import PRESETS

    return PRESETS["preset_assistant"]


def compare_page(
    rows: dict[str, dict[str, float]], url: str, keys: list[str], args: argparse.Namespace, server: int | None, model: Path | None
) -> dict[str, dict[str, float]]:
    """Run the same students in the Chat tab, print /v1 and the page side by side, and the page's share of /v1."""
    if model is None:
        raise SystemExit("--page with --url needs --model (the chat model's GGUF file) to count the page's answer tokens")
    count_tokens = token_counter(model)
    print(f"\nthe Chat tab (load between: {os.getloadavg()[0]:.2f}):")
    cpu: dict[str, float] = {}
    start = time.monotonic()
    with cpu_use(server, cpu):
        students = asyncio.run(run_page(url, keys, args.duration, args.think, count_tokens))
    wall = time.monotonic() - start
    report(students, args.duration, wall)
    rows = {"/v1/chat/completions": rows["schulki"], "Chat tab (Gradio API)": summary(students, wall, cpu)}
    side_by_side(rows)
    api, page = rows.values()
    print(
        f"the page against /v1: tokens/s {page['tokens_s'] / api['tokens_s']:.0%}, "
        f"TTFT p50 {page['ttft_p50']:.2f} s against {api['ttft_p50']:.2f} s, p95 {page['ttft_p95']:.2f} s against {api['ttft_p95']:.2f} s"
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds during which students send new requests")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--think", type=float, default=3.0, help="most seconds a student waits between answers")
    parser.add_argument("--url", help="a running gateway; default: start the real stack in this process")
    parser.add_argument("--keys", type=Path, help="with --url: a file with one API key per line")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="llama.cpp threads of schulki and of the peer; on a busy machine 1 beats 2, since llama.cpp's threads spin waiting for each other",
    )
    parser.add_argument("--parallel", type=int, help="inference.parallel_sequences of the in-process stack (default: the node's default)")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="run the inference service in this process with the gateway and the students (default: its own process, as schulki up does)",
    )
    parser.add_argument("--peer", action="store_true", help="then run the same load against llama.cpp's llama-server and compare")
    parser.add_argument("--peer-server", help="path of the llama-server binary (default: the build-llama-peer cache)")
    parser.add_argument(
        "--page",
        action="store_true",
        help="then run the same students in the web page's Chat tab (Gradio's API) and compare with /v1; needs the in-process stack or --model",
    )
    parser.add_argument("--model", type=Path, help="with --url --page: the chat model's GGUF file, to count the page's answer tokens")
    args = parse_args(parser, students=2, duration=5.0, max_tokens=8, think=1.0, peer=True, page=True)
    rows: dict[str, dict[str, float]] = {}
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average)")

    with contextlib.ExitStack() as stack:
        server: int | None = None  # the inference service's own process, when it has one
        if args.url:
            url, keys = args.url, [k.strip() for k in args.keys.read_text().splitlines() if k.strip()][: args.students]
        else:
            from tests.gateway_stack import running_stack, stack_config

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            config = stack_config(folder)
            config.inference.threads = args.threads
            config.inference.max_queued = max(64, 2 * args.students)
            config.gateway.max_chat_tokens = args.max_tokens  # the page asks for as many tokens as the /v1 students
            config.gateway.requests_per_minute["student"] = STUDENT_REQUESTS_PER_MINUTE
            # the nodes are checked as often as at a school, not as often as the tests' stack checks them
            config.gateway.health_interval_s = type(config.gateway)().health_interval_s
            if args.parallel:
                config.inference.parallel_sequences = args.parallel
            if args.same_process:
                running = stack.enter_context(running_stack(folder, services=("inference",), config=config))
            else:
                address, server = stack.enter_context(inference_process(config, args.threads))
                config.gateway.inference_addresses = [address]
                running = stack.enter_context(running_stack(folder, services=(), config=config))
            url = running.url
            # in a class, as every student of a school: each chat then runs under the class's stop watch
            keys = [running.add_user(f"bench-{i:02d}", "student", ("7a",)).api_key for i in range(args.students)]
        cpu: dict[str, float] = {}
        start = time.monotonic()
        system = chat_tab_system_prompt() if args.page else ""
        with cpu_use(server, cpu):
            students = asyncio.run(run(url, keys, args.duration, args.max_tokens, args.think, system=system))
        wall = time.monotonic() - start
        report(students, args.duration, wall)
        rows["schulki"] = summary(students, wall, cpu)
        if args.smoke and args.peer and not peer_server_path(args.peer_server).exists():
            args.peer = False  # building llama-server takes minutes: a smoke run compares only with one already built
            side_by_side(rows)
            print(
                f"llama-server: skipped in this smoke run, not built at {peer_server_path(args.peer_server)} (../shared/tools/build-llama-peer)"
            )
        if not args.page and not args.peer:
            side_by_side(rows)  # the CPU per token of each process, also without a comparison
        if args.page:
            rows = compare_page(rows, url, keys, args, server, config.inference.model_path if not args.url else args.model)
        if args.peer:
            if args.url:
                raise SystemExit("--peer compares with the in-process stack; leave out --url")
            from schulki.inference.fit_check import parallel_sequences
            from schulki.models.defaults import chat_model_path

            model = config.inference.model_path or chat_model_path(config)
            parallel = parallel_sequences(config.inference, model)  # what the inference service chose with the same settings
            stack.close()  # free the cores and memory before the peer runs
            print(f"load between: {os.getloadavg()[0]:.2f} (1-min average)")
            peer_binary = peer_server_path(args.peer_server)
            with llama_server(peer_binary, model, parallel, args.threads, config.inference.context_length) as (peer, peer_pid):
                cpu = {}
                start = time.monotonic()
                with cpu_use(peer_pid, cpu):
                    students = asyncio.run(
                        run(peer, ["peer"] * args.students, args.duration, args.max_tokens, args.think, peer_sampling(config))
                    )
                wall = time.monotonic() - start
                print("\nllama-server:")
                report(students, args.duration, wall)
                rows[f"llama-server -np {parallel} -t {args.threads}"] = summary(students, wall, cpu)
            rows = {(f"schulki ({parallel} parallel sequences)" if k == "schulki" else k): v for k, v in rows.items()}
            side_by_side(rows)
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
