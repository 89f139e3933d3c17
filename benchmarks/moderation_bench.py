"""What the moderation rules catch and what they cost: false positives on ordinary school questions, true positives
on harmful cases (each in six spellings), and the time the guard adds per streamed piece of an answer.

    PYTHONPATH=services .venv/bin/python benchmarks/moderation_bench.py [--rules FILE] [--pieces N]

The rates come from the same sets and code as tests/test_moderation_rules.py. The streaming cost is measured on
the guard itself (gateway/moderation/guard.py) over an answer of ``--pieces`` pieces of German text, against the
same events passed on unread: the model's own time per token (about 10 to 16 ms here) is not part of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schulki.config import ModerationConfig
from schulki.gateway.accounts.database import Account
from schulki.gateway.moderation.flags import Flags
from schulki.gateway.moderation.guard import Moderation
from schulki.gateway.moderation.rules import CATEGORIES, Rules
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from sqlalchemy import create_engine

from benchmarks.smoke import parse_args
from tests.moderation_cases import harmful_cases, measure

ANSWER_WORDS = (
    "Die Photosynthese ist ein Vorgang, bei dem Pflanzen mit Hilfe von Licht aus Wasser und Kohlendioxid "
    "Traubenzucker und Sauerstoff herstellen. Sie findet in den Chloroplasten statt."
).split()


async def _events(pieces: int) -> AsyncGenerator[inference_pb.ChatResponse, None]:
    for index in range(pieces):
        yield inference_pb.ChatResponse(text=" " + ANSWER_WORDS[index % len(ANSWER_WORDS)])
    yield inference_pb.ChatResponse(finish=inference_pb.ChatFinish(reason=inference_pb.FINISH_REASON_STOP))


async def _seconds(moderation: Moderation | None, pieces: int) -> float:
    account = Account(1, "bench", "student", ("7a",))
    started = time.process_time()  # the gateway's CPU time, not the wall clock of a machine that others load
    if moderation is None:
        async for _ in _events(pieces):
            pass
    else:
        guarded = moderation.guard(
            account, [{"role": "user", "content": "Was ist Photosynthese?"}], _events(pieces), whole_words=True, admit=lambda: None
        )
        async for _ in guarded.events():
            pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=None, help="a rules file (default: the shipped German rules)")
    parser.add_argument("--pieces", type=int, default=2000, help="pieces of the streamed answer whose checking is timed")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    args = parse_args(parser, pieces=200, repeats=1)

    rules = Rules.load(args.rules)
    rates = measure(rules)
    print(f"rules: {rules.source}; load average {os.getloadavg()[0]:.2f}")
    print(f"false positives: {len(rates.false_positives)} of {rates.ordinary} ordinary questions ({100 * rates.false_positive_rate:.1f}%)")
    print(f"true positives: {rates.caught} of {rates.cases} harmful cases ({100 * rates.true_positive_rate:.1f}%)")
    print(f"{'spelling':<12}{'cases':>7}{'caught':>8}")
    for spelling, (cases, caught) in rates.by_spelling.items():
        print(f"{spelling:<12}{cases:>7}{caught:>8}")
    kinds = [category for category, _ in harmful_cases()]
    print("cases per category: " + ", ".join(f"{category} {kinds.count(category)}" for category in CATEGORIES))
    for question in rates.false_positives:
        print(f"  passed wrongly? {question}")
    for missed in rates.missed:
        print(f"  missed: {missed}")

    moderation = Moderation(ModerationConfig(rules_file=args.rules), Flags(create_engine("sqlite://")))
    plain = min(asyncio.run(_seconds(None, args.pieces)) for _ in range(args.repeats))
    guarded = min(asyncio.run(_seconds(moderation, args.pieces)) for _ in range(args.repeats))
    per_piece = (guarded - plain) / args.pieces * 1e6
    print(
        f"streaming: {args.pieces} pieces, CPU time unread {plain * 1e3:.1f} ms, guarded {guarded * 1e3:.1f} ms, "
        f"{per_piece:.1f} us per piece"
    )


if __name__ == "__main__":
    main()
