"""Load benchmark: N simulated students chat at once through the gateway's /v1/chat/completions.

Each student sends a streamed chat request, reads the answer to the end,
thinks for a moment, and asks again, until the time is up. Printed: requests
and errors, time to first token (p50, p95), and fairness: the slowest
student's tokens per second against the fastest's (1.0 is perfectly fair).

    .venv/bin/python benchmarks/gateway_load_bench.py                 # 30 students, 120 s, the real stack in this process
    .venv/bin/python benchmarks/gateway_load_bench.py --students 10 --duration 60
    .venv/bin/python benchmarks/gateway_load_bench.py --url http://gateway:7860 --keys keys.txt   # a running gateway, one API key per line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = [
    "Erkläre mir die Photosynthese in zwei Sätzen.",
    "Was ist der Satz des Pythagoras?",
    "Nenne drei Nebenflüsse des Rheins.",
    "Wie funktioniert eine for-Schleife in Python?",
    "Warum ist der Himmel blau?",
    "Übersetze ins Englische: Der Hund spielt im Garten.",
]


@dataclass
class Student:
    key: str
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    decode_s: float = 0.0
    """Seconds from each answer's first token to its end, summed: the speed a student sees once the answer runs."""


async def one_request(client: httpx.AsyncClient, student: Student, max_tokens: int) -> None:
    body = {"model": "schulki-chat", "stream": True, "max_tokens": max_tokens, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": random.choice(QUESTIONS)}]}
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
            elif event["choices"] and event["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
                student.ttfts.append(first - start)
    student.requests += 1
    if first is not None:
        student.decode_s += time.perf_counter() - first


async def simulate(student: Student, url: str, deadline: float, max_tokens: int, think_s: float) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0)) as client:
        await asyncio.sleep(random.uniform(0, 2))  # students do not press Enter in the same millisecond
        while time.monotonic() < deadline:
            try:
                await one_request(client, student, max_tokens)
            except httpx.HTTPError as error:
                student.errors.append(type(error).__name__)
            await asyncio.sleep(random.uniform(0, think_s))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values[0] if values else float("nan"))


async def run(url: str, keys: list[str], duration: float, max_tokens: int, think_s: float) -> list[Student]:
    students = [Student(key) for key in keys]
    deadline = time.monotonic() + duration
    await asyncio.gather(*(simulate(s, url, deadline, max_tokens, think_s) for s in students))
    return students


def report(students: list[Student], duration: float, wall: float) -> None:
    ttfts = [t for s in students for t in s.ttfts]
    requests = sum(s.requests for s in students)
    errors = [e for s in students for e in s.errors]
    rates = [s.tokens / wall for s in students]
    print(f"students: {len(students)}   duration: {duration:.0f} s (wall {wall:.0f} s)")
    print(f"requests completed: {requests}   errors: {len(errors)}")
    for message in sorted(set(errors))[:5]:
        print(f"  error: {message}  (x{errors.count(message)})")
    print(f"time to first token: p50 {percentile(ttfts, 50):.2f} s   p95 {percentile(ttfts, 95):.2f} s   max {max(ttfts, default=float('nan')):.2f} s")
    print(f"tokens generated: {sum(s.tokens for s in students)}   aggregate {sum(rates):.1f} tokens/s")
    if rates and max(rates) > 0:
        print(f"fairness over the run: slowest student {min(rates):.2f} tokens/s, fastest {max(rates):.2f} tokens/s, ratio {min(rates) / max(rates):.2f}")
    streaming = [s.tokens / s.decode_s for s in students if s.decode_s > 0]
    if streaming:
        print(f"while an answer streams: slowest student {min(streaming):.1f} tokens/s, fastest {max(streaming):.1f} tokens/s, "
              f"ratio {min(streaming) / max(streaming):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds during which students send new requests")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--think", type=float, default=3.0, help="most seconds a student waits between answers")
    parser.add_argument("--url", help="a running gateway; default: start the real stack in this process")
    parser.add_argument("--keys", type=Path, help="with --url: a file with one API key per line")
    parser.add_argument("--threads", type=int, default=1,
                        help="inference threads for the in-process stack; on a busy machine 1 beats 2, since llama.cpp's threads spin waiting for each other")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.url:
            url, keys = args.url, [k.strip() for k in args.keys.read_text().splitlines() if k.strip()][: args.students]
        else:
            from tests.gateway_stack import running_stack, stack_config

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            config = stack_config(folder)
            config.inference.threads = args.threads
            config.inference.max_queued = max(64, 2 * args.students)
            running = stack.enter_context(running_stack(folder, services=("inference",), config=config))
            url = running.url
            keys = [running.add_user(f"bench-{i:02d}", "student").api_key for i in range(args.students)]
        start = time.monotonic()
        students = asyncio.run(run(url, keys, args.duration, args.max_tokens, args.think))
        report(students, args.duration, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
