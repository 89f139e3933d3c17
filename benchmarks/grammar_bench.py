"""Constrained output: the engine's decoding speed with a JSON-schema grammar on every stream, beside free answers.

One engine (one llama context, as many sequences as the most streams asked
for) decodes B greedy streams at a time (the end-of-answer tokens biased
away on both sides, so that no stream stops early), first free, then each under the
grammar of a schema that asks for a long answer (at least 30 question/answer
pairs, so no stream ends inside the measurement), alternating per round, so a
busy machine hurts both sides alike. Speed is counted while all B streams run,
after their prompts were read. The grammar checks only the token the chain
picked and is applied to the whole vocabulary only when it refuses that pick
(inference/grammar.py); the share of such steps is printed too.

    .venv/bin/python benchmarks/grammar_bench.py [--threads 2] [--streams 1,8] [--seconds 4]
    .venv/bin/python benchmarks/grammar_bench.py --smoke    # 1 and 2 streams for a second each: does it still run?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.config import Config, InferenceConfig  # noqa: E402
from schulki.inference.engine import ChatEngine  # noqa: E402
from schulki.inference.grammar import CompiledGrammar  # noqa: E402
from schulki.inference.types import Generation, Sampling  # noqa: E402
from schulki.models.defaults import chat_model_path  # noqa: E402

from benchmarks.school_topics import SCHOOL_TOPICS  # noqa: E402
from benchmarks.smoke import parse_args  # noqa: E402

QUIZ = {
    "type": "object",
    "properties": {
        "fragen": {
            "type": "array",
            "minItems": 30,
            "items": {
                "type": "object",
                "properties": {"frage": {"type": "string", "maxLength": 60}, "antwort": {"type": "string", "maxLength": 60}},
                "required": ["frage", "antwort"],
            },
        }
    },
    "required": ["fragen"],
}


def question(i: int) -> list[dict[str, str]]:
    topic = SCHOOL_TOPICS[i % len(SCHOOL_TOPICS)]
    return [{"role": "user", "content": f"Schreibe als JSON dreißig Quizfragen mit Antworten dazu, wie {topic} funktioniert."}]


def endless(engine: ChatEngine) -> Sampling:
    """Greedy, with the tokens that end an answer pushed far down (logit bias -100), so that no free stream ends inside
    the measurement either (the engine's own model, read here as a benchmark may)."""
    import llama_cpp

    model = engine._model
    assert model is not None, "the engine is loaded"
    ends = {model.token_eos(), llama_cpp.llama_vocab_eot(model.vocab)} - {-1}
    return Sampling(temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0, logit_bias=dict.fromkeys(ends, -100.0))


async def rate(engine: ChatEngine, prompts: list[list[int]], grammar: CompiledGrammar | None, seconds: float) -> float:
    """Tokens/s of B streams, counted while all B run."""
    sampling = endless(engine)

    async def stream(prompt: list[int]) -> None:
        job = Generation(prompt_tokens=prompt, max_tokens=2000, sampling=sampling, grammar=grammar)
        async for _ in engine.generate(job):
            pass

    tasks = [asyncio.create_task(stream(p)) for p in prompts]
    stats = engine.stats
    while engine.running < len(prompts):
        await asyncio.sleep(0.005)
    start_tokens = stats.generated_tokens
    while stats.generated_tokens - start_tokens < 2 * len(prompts):
        await asyncio.sleep(0.005)
    t0, n0 = time.perf_counter(), stats.generated_tokens
    # At least a few steps, however long they take: on a busy machine one step may take longer than the window.
    while (time.perf_counter() - t0 < seconds or stats.generated_tokens - n0 < 4 * len(prompts)) and engine.running == len(prompts):
        await asyncio.sleep(0.05)
    t1, n1 = time.perf_counter(), stats.generated_tokens
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    while engine.running:
        await asyncio.sleep(0.01)
    return (n1 - n0) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds each measurement decodes")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per stream count (the best of each side counts)")
    parser.add_argument("--context", type=int, default=2048)
    args = parse_args(parser, streams="1,2", seconds=1.0, rounds=1, context=1024)
    counts = [int(n) for n in args.streams.split(",")]
    config = InferenceConfig(threads=args.threads, parallel_sequences=max(counts), context_length=args.context)
    path = chat_model_path(Config())
    engine = ChatEngine(path, config, parallel=max(counts))
    engine.load()
    started = time.perf_counter()
    grammar = engine.grammar(json.dumps(QUIZ))
    compiled_ms = (time.perf_counter() - started) * 1000
    print(f"model {path.name}, {args.threads} threads, {max(counts)} sequences; load before: {os.getloadavg()[0]:.2f} (1-min average)")
    print(f"schema compiled in {compiled_ms:.1f} ms (then cached)")
    print(f"{'streams':>7} {'free tok/s':>11} {'grammar tok/s':>14} {'grammar/free':>13} {'picks refused':>14}")
    loop = asyncio.new_event_loop()
    for b in counts:
        free, constrained = [], []
        picks, refused = grammar.picks, grammar.refused
        for _ in range(args.rounds):
            prompts = [engine.chat_tokens(question(i)) for i in range(b)]
            free.append(loop.run_until_complete(rate(engine, prompts, None, args.seconds)))
            constrained.append(loop.run_until_complete(rate(engine, prompts, grammar, args.seconds)))
        f, g = max(free), max(constrained)
        share = (grammar.refused - refused) / max(grammar.picks - picks, 1)
        print(f"{b:>7} {f:>11.1f} {g:>14.1f} {g / f:>12.0%} {share:>13.0%}")
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average)")
    engine.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
