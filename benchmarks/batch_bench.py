"""Continuous batching: the engine's aggregate decoding speed at 1, 4, 8 and 16 streams beside raw batched decoding.

Both sides run in this process, on the same model file, threads and context
shape (one llama context with 16 sequences of ``--context`` tokens each, the
sliding-window cache as the engine keeps it):

- raw: llama.cpp's low-level API as lean as it gets: B sequences in one
  ``llama_batch`` per step, logits for every sequence, a greedy pick each;
- engine: B concurrent ``ChatEngine.generate`` calls (greedy), measured while
  all B answers run (prompt reading excluded on both sides).

Rounds alternate between the two, so a busy machine hurts both alike. The
second part measures prefix reuse: time to first token of a question behind a
long system prompt that is cached, beside one that is not. The third, what
log-probabilities cost: the engine at ``--logprob-streams`` streams with every
stream asking for ``top_logprobs`` alternatives per token, against the same
streams asking for none (rounds alternate here too).

    .venv/bin/python benchmarks/batch_bench.py [--threads 2] [--streams 1,4,8,16] [--seconds 4]
    .venv/bin/python benchmarks/batch_bench.py --streams 8 --rounds 3 --seconds 3 --prefix-rounds 1   # short: logprobs at 8
    .venv/bin/python benchmarks/batch_bench.py --smoke    # 1 and 2 streams for a second each: does it still run?
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.config import Config, InferenceConfig  # noqa: E402
from schulki.inference.engine import ChatEngine  # noqa: E402
from schulki.inference.logprobs import LogprobRequest  # noqa: E402
from schulki.inference.types import Generation, Sampling  # noqa: E402
from schulki.models.defaults import chat_model_path  # noqa: E402
from schulki.runtime.llama_adapter import flash_attn_type, load_model, new_context  # noqa: E402

from benchmarks.school_topics import SCHOOL_TOPICS  # noqa: E402
from benchmarks.smoke import parse_args  # noqa: E402

TOPICS = SCHOOL_TOPICS
GREEDY = Sampling(temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Erkläre einer siebten Klasse ausführlich, wie {TOPICS[i % len(TOPICS)]} funktioniert."}]


class Raw:
    """Batched greedy decoding with llama-cpp-python's low-level API, nothing else."""

    def __init__(self, path: Path, config: InferenceConfig, slots: int) -> None:
        import llama_cpp as lc

        self.lc = lc
        self.model, _ = load_model(path)
        params = lc.llama_context_default_params()
        params.n_seq_max = slots
        params.n_ctx = config.context_length * slots
        params.n_batch = params.n_ubatch = config.batch_size
        params.n_threads = params.n_threads_batch = config.threads
        params.swa_full = config.full_swa_cache
        params.flash_attn_type = flash_attn_type(config.flash_attention)
        params.type_k = params.type_v = 1  # f16, as the engine's default kv_cache_type
        params.kv_unified = False
        params.no_perf = True
        self.ctx, _ = new_context(self.model, params)
        self.batch = lc.llama_batch_init(config.batch_size, 0, 1)
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        self.greedy = chain

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for n, (token, pos, seq, logits) in enumerate(items):
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, pos, 1, logits
            b.seq_id[n][0] = seq
        b.n_tokens = len(items)
        assert self.lc.llama_decode(self.ctx, b) == 0

    def run(self, prompts: list[list[int]], seconds: float) -> float:
        """Tokens/s of B sequences decoding together, after their prompts were read."""
        lc = self.lc
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        for seq, prompt in enumerate(prompts):
            self._decode([(t, i, seq, i == len(prompt) - 1) for i, t in enumerate(prompt)])
            last = lc.llama_sampler_sample(self.greedy, self.ctx, len(prompt) - 1)
            prompts[seq] = [*prompt, last]
        tokens, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self._decode([(p[-1], len(p) - 1, seq, True) for seq, p in enumerate(prompts)])
            for seq, p in enumerate(prompts):
                p.append(lc.llama_sampler_sample(self.greedy, self.ctx, seq))
            tokens += len(prompts)
        return tokens / (time.perf_counter() - started)

    def close(self) -> None:
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_sampler_free(self.greedy)
        self.lc.llama_free(self.ctx)
        self.model.close()


async def engine_rate(
    engine: ChatEngine, prompts: list[list[int]], seconds: float, logprobs: LogprobRequest | None = None
) -> tuple[float, int]:
    """Tokens/s of B engine streams, counted while all B run; and how many tokens that was."""

    async def stream(prompt: list[int]) -> None:
        job = Generation(prompt_tokens=prompt, max_tokens=4000 - len(prompt), sampling=GREEDY, logprobs=logprobs)
        async for _ in engine.generate(job):
            pass

    tasks = [asyncio.create_task(stream(p)) for p in prompts]
    stats = engine.stats
    while engine.running < len(prompts):
        await asyncio.sleep(0.005)
    # The short prompts are read in one step; start counting once a second token of each stream is out.
    start_tokens = stats.generated_tokens
    while stats.generated_tokens - start_tokens < 2 * len(prompts):
        await asyncio.sleep(0.005)
    t0, n0 = time.perf_counter(), stats.generated_tokens
    while time.perf_counter() - t0 < seconds and engine.running == len(prompts):
        await asyncio.sleep(0.05)  # rarely: this loop's own wake-ups would take CPU from the decoding
    t1, n1 = time.perf_counter(), stats.generated_tokens
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    while engine.running:
        await asyncio.sleep(0.01)
    return (n1 - n0) / (t1 - t0), n1 - n0


async def first_token_s(engine: ChatEngine, prompt: list[int]) -> float:
    started, first = time.perf_counter(), None
    async for _ in engine.generate(Generation(prompt_tokens=prompt, max_tokens=1, sampling=GREEDY)):
        first = first or time.perf_counter()
    if first is None:
        raise RuntimeError("the engine generated no token")
    return first - started


async def prefix_reuse(engine: ChatEngine, rounds: int) -> None:
    teacher = "Du bist eine geduldige Lehrerin an einer Gesamtschule. Du erklärst Schritt für Schritt, mit Beispielen aus dem Alltag. " * 12
    cold, warm = [], []
    for r in range(rounds):
        system = f"Runde {r}. {teacher}"  # a new system prompt each round: cold once, then cached
        first = engine.chat_tokens([{"role": "system", "content": system}, *question(2 * r)])
        cold.append(await first_token_s(engine, first))
        reused = engine.stats.reused_tokens
        second = engine.chat_tokens([{"role": "system", "content": system}, *question(2 * r + 1)])
        warm.append(await first_token_s(engine, second))
        saved = engine.stats.reused_tokens - reused
    print(f"\nprefix reuse ({len(first)}-token prompt, of it {saved} tokens of shared system prompt cached):")
    print(f"  time to first token, not cached: median {statistics.median(cold) * 1000:.0f} ms")
    print(
        f"  time to first token, cached:     median {statistics.median(warm) * 1000:.0f} ms   "
        f"({statistics.median(cold) / statistics.median(warm):.1f}x faster)"
    )


async def logprob_cost(engine: ChatEngine, streams: int, top: int, rounds: int, seconds: float) -> None:
    """The engine's tokens/s with every stream asking for ``top`` alternatives per token, beside none asking."""
    prompts = [engine.chat_tokens(question(i)) for i in range(streams)]
    plain, asked = [], []
    for _ in range(rounds):
        plain.append((await engine_rate(engine, prompts, seconds))[0])
        asked.append((await engine_rate(engine, prompts, seconds, LogprobRequest(top=top)))[0])
    without, with_ = max(plain), max(asked)
    print(f"\nlog-probabilities ({streams} streams, best of {rounds} rounds each):")
    print(f"  {'no logprobs:':<18} {without:.1f} tok/s")
    print(f"  {f'top_logprobs {top}:':<18} {with_:.1f} tok/s   ({with_ / without - 1:+.0%})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds each measurement decodes")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per stream count (the best of each side counts)")
    parser.add_argument("--prefix-rounds", type=int, default=3, help="questions behind a new system prompt, each cold then cached")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--logprob-streams", type=int, default=8, help="streams of the log-probability comparison")
    parser.add_argument("--top-logprobs", type=int, default=5, help="alternatives per token each of those streams asks for")
    parser.add_argument(
        "--flash-attention",
        choices=("auto", "on", "off"),
        default="auto",
        help="both sides: inference.flash_attention (auto, the default, uses it on every CPU)",
    )
    args = parse_args(parser, streams="1,2", seconds=1.0, rounds=1, prefix_rounds=1, context=512, logprob_streams=2)
    counts = [int(n) for n in args.streams.split(",")]
    slots = max(*counts, args.logprob_streams)
    flash: bool | Literal["auto"] = "auto" if args.flash_attention == "auto" else args.flash_attention == "on"
    config = InferenceConfig(threads=args.threads, parallel_sequences=slots, context_length=args.context, flash_attention=flash)
    path = chat_model_path(Config())
    engine = ChatEngine(path, config, parallel=slots)
    engine.load()
    raw = Raw(path, config, slots)
    print(
        f"model {path.name}, {args.threads} threads, context {args.context} x {slots} sequences, flash attention {args.flash_attention}; "
        f"load before: {os.getloadavg()[0]:.2f} (1-min average)"
    )
    print(f"{'streams':>7} {'raw tok/s':>10} {'engine tok/s':>13} {'engine/raw':>11}")
    loop = asyncio.new_event_loop()
    for b in counts:
        raw_rates, engine_rates = [], []
        for _ in range(args.rounds):
            prompts = [engine.chat_tokens(question(i)) for i in range(b)]
            raw_rates.append(raw.run([list(p) for p in prompts], args.seconds))
            rate, _ = loop.run_until_complete(engine_rate(engine, prompts, args.seconds))
            engine_rates.append(rate)
        r, e = max(raw_rates), max(engine_rates)
        print(f"{b:>7} {r:>10.1f} {e:>13.1f} {e / r:>10.0%}")
    loop.run_until_complete(prefix_reuse(engine, args.prefix_rounds))
    loop.run_until_complete(logprob_cost(engine, args.logprob_streams, args.top_logprobs, args.rounds, args.seconds))
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average)")
    raw.close()
    engine.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
