"""Load run over two inference nodes of one model behind the gateway: how the requests spread, and what a node failure costs.

Two ``schulki serve inference`` processes (the demo GGUF, one thread each)
serve the same model; simulated students send streamed chats through
``/v1/chat/completions`` until the time is up. Optionally one node is killed
(SIGKILL) part-way and started again later. Printed: requests and errors,
answers per node (from each node's own log and from the gateway's counters),
the chats that broke off and those moved to the other node before they started,
time to first token p50/p95, and the machine's load.

    .venv/bin/python benchmarks/multi_node_load_bench.py                                   # 8 students, 60 s
    .venv/bin/python benchmarks/multi_node_load_bench.py --kill-after 20 --restart-after 35  # a node dies and returns
    .venv/bin/python benchmarks/multi_node_load_bench.py --smoke                              # 2 students for 5 s: does it still run?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gateway_load_bench import STUDENT_REQUESTS_PER_MINUTE
from benchmarks.smoke import parse_args

QUESTIONS = [
    "Erkläre mir die Photosynthese in zwei Sätzen.",
    "Was ist der Satz des Pythagoras?",
    "Warum ist der Himmel blau?",
    "Nenne drei Nebenflüsse des Rheins.",
    "Wie funktioniert eine for-Schleife in Python?",
]


@dataclass
class Tally:
    """What all students saw: requests sent, the errors among them, and the time to first token of each answer."""

    requests: int = 0
    errors: list[str] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)


async def student(url: str, key: str, until: float, max_tokens: int, stats: Tally) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while time.monotonic() < until:
            body = {
                "model": "schulki-chat",
                "stream": True,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
            }
            start, first, finished, error = time.perf_counter(), None, False, None
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as response:
                    if response.status_code != 200:
                        error = f"HTTP {response.status_code}"
                    else:
                        async for line in response.aiter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            event = json.loads(line[6:])
                            if "error" in event:
                                error = "in-stream: " + str(event["error"].get("code"))
                            elif event["choices"] and event["choices"][0]["delta"].get("content") and first is None:
                                first = time.perf_counter() - start
                            elif event["choices"] and event["choices"][0]["finish_reason"]:
                                finished = True
            except httpx.HTTPError as failure:
                error = type(failure).__name__
            stats.requests += 1
            if error or not finished:
                stats.errors.append(error or "no finish")
            if first is not None:
                stats.ttft.append(first)
            await asyncio.sleep(random.uniform(0.5, 1.5))  # reading the answer, typing the next question


async def main_async(args: argparse.Namespace) -> None:
    from tests.multi_model_support import NodeProcess, gateway_config, running_gateway

    with tempfile.TemporaryDirectory() as tmp:
        nodes = [NodeProcess(args.model_name, Path(tmp)).start(), NodeProcess(args.model_name, Path(tmp)).start()]
        try:
            config = gateway_config(Path(tmp) / "gateway", [node.address for node in nodes])
            config.gateway.requests_per_minute["student"] = STUDENT_REQUESTS_PER_MINUTE
            (Path(tmp) / "gateway").mkdir()
            with running_gateway(config) as stack:
                stack.wait_until(lambda: sum(node.healthy for node in stack.gateway.inference_nodes()) == 2, 60, "both nodes serving")
                keys = [stack.gateway.accounts.add_user(f"load-{i}", "student").api_key for i in range(args.students)]
                stats = Tally()
                started = time.monotonic()
                until = started + args.duration
                load_before = os.getloadavg()[0]

                async def chaos() -> None:
                    if args.kill_after is None:
                        return
                    await asyncio.sleep(args.kill_after)
                    nodes[0].kill()
                    print(f"[{time.monotonic() - started:5.1f} s] killed node {nodes[0].address}", flush=True)
                    if args.restart_after is not None:
                        await asyncio.sleep(args.restart_after - args.kill_after)
                        await asyncio.to_thread(nodes[0].start)
                        print(f"[{time.monotonic() - started:5.1f} s] node {nodes[0].address} serving again", flush=True)

                await asyncio.gather(chaos(), *(student(stack.url, key, until, args.max_tokens, stats) for key in keys))
                elapsed = time.monotonic() - started
                load_after = os.getloadavg()[0]
                counters = {node.address: (node.served, node.failed) for node in stack.gateway.inference_nodes()}
        finally:
            for node in nodes:
                node.stop()
        ttft = sorted(stats.ttft)
        print(
            f"{args.students} students, {elapsed:.0f} s, max_tokens {args.max_tokens}, 2 nodes x 1 thread; load average {load_before:.1f} -> {load_after:.1f}"
        )
        print(f"requests: {stats.requests}, errors: {len(stats.errors)} {sorted(set(stats.errors))}")
        for node in nodes:
            served, failed = counters[node.address]
            print(
                f"  node {node.address}: {node.answered()} answers in its log; gateway: {served} answered, {failed} broken off or moved on"
            )
        if ttft:
            print(f"time to first token: p50 {statistics.median(ttft):.2f} s, p95 {ttft[int(0.95 * (len(ttft) - 1))]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--model-name", default="gemma-3-270m")
    parser.add_argument("--kill-after", type=float, default=None, help="kill the first node after this many seconds")
    parser.add_argument("--restart-after", type=float, default=None, help="start it again after this many seconds")
    asyncio.run(main_async(parse_args(parser, students=2, duration=5.0, max_tokens=8)))


if __name__ == "__main__":
    main()
