"""Inference through the gRPC service beside a direct llama-cpp-python call.

Both sides get the same model, the same prompt tokens, greedy decoding, the
same number of threads and the same number of tokens to generate. The service
runs as `schulki serve inference` in its own process and is called over a real
socket; the direct side calls Llama.create_completion(stream=True) in this
process. Rounds alternate between the two so that a noisy machine hurts both
alike, and the medians are compared.

    .venv/bin/python benchmarks/inference_bench.py [--rounds 5] [--tokens 200] [--threads 2]
    .venv/bin/python benchmarks/inference_bench.py --smoke    # one round of 16 tokens: does it still run?
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.config import Config, InferenceConfig  # noqa: E402
from schulki.inference.engine import ChatEngine  # noqa: E402
from schulki.inference.v1 import inference_service_pb2 as pb  # noqa: E402
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc  # noqa: E402
from schulki.models.defaults import chat_model_path  # noqa: E402

from benchmarks.school_topics import SCHOOL_TOPICS  # noqa: E402
from benchmarks.smoke import parse_args  # noqa: E402
from tests.conftest import ServiceProcess  # noqa: E402

if TYPE_CHECKING:
    from llama_cpp import Llama

TOPICS = SCHOOL_TOPICS[:10]


def messages(round_no: int) -> list[dict[str, str]]:
    """A different question each round, so neither side can reuse a cached prompt."""
    topic = TOPICS[round_no % len(TOPICS)]
    return [
        {"role": "system", "content": "Du bist ein hilfreicher Assistent. Antworte auf Deutsch."},
        {"role": "user", "content": f"Erkläre einer siebten Klasse, wie {topic} funktioniert."},
    ]


def summarise(times: list[tuple[float, float, int]]) -> tuple[float, float]:
    """Median time to first token (s) and median decode rate (tokens/s after the first)."""
    ttft = statistics.median(t for t, _, _ in times)
    rate = statistics.median((n - 1) / (end - first) for first, end, n in ((t, e, n) for t, e, n in times))
    return ttft, rate


def direct_round(llama: Llama, prompt_tokens: list[int], tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    n = 0
    for _ in llama.create_completion(prompt_tokens, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, stream=True):
        if first is None:
            first = time.perf_counter()
        n += 1
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("llama-cpp-python generated no token")
    return first - start, end - start, n


ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER}


def service_round(stub: pb_grpc.InferenceServiceStub, tokens: int, round_no: int) -> tuple[float, float, int]:
    request_messages = [pb.Message(role=ROLES[m["role"]], content=m["content"]) for m in messages(round_no)]
    start = time.perf_counter()
    first = None
    n = 0
    for response in stub.Chat(
        pb.ChatRequest(
            messages=request_messages, max_tokens=tokens, sampling=pb.SamplingOptions(temperature=0.0, top_k=1, repeat_penalty=1.0)
        )
    ):
        if response.HasField("finish"):
            n = response.finish.usage.completion_tokens
        elif first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the inference service streamed no text")
    return first - start, end - start, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parse_args(parser, rounds=1, tokens=16)

    from llama_cpp import Llama

    model = Config().inference.model_path or chat_model_path()
    settings = InferenceConfig(threads=args.threads)
    engine = ChatEngine(model, settings)
    engine.load()
    # One question per measured round, and two more for warming up; each side sees each question once.
    prompts = {r: engine.chat_tokens(messages(r)) for r in range(2 * args.rounds + 2)}
    engine.close()
    llama = Llama(model_path=str(model), n_ctx=settings.context_length, n_threads=args.threads, n_batch=settings.batch_size, verbose=False)

    env = {"SCHULKI_INFERENCE__THREADS": str(args.threads), "SCHULKI_RUNTIME__LOG_LEVEL": "WARNING"}
    server = ServiceProcess("inference", env=env).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            service_round(stub, 10, 2 * args.rounds)  # warm up both sides
            direct_round(llama, prompts[2 * args.rounds + 1], 10)
            direct, service = [], []
            for r in range(args.rounds):
                # Both sides see the same question in each round (in turn first), never one they saw before.
                direct.append(direct_round(llama, prompts[r], args.tokens))
                service.append(service_round(stub, args.tokens, r))
    finally:
        server.stop()

    d_ttft, d_rate = summarise(direct)
    s_ttft, s_rate = summarise(service)
    print(
        f"model {model.name}, prompts of {min(len(prompts[r]) for r in range(args.rounds))}-{max(len(prompts[r]) for r in range(args.rounds))} tokens, {args.tokens} tokens generated, greedy, "
        f"{args.threads} threads, {args.rounds} alternating rounds (medians)"
    )
    print(f"{'':22}{'direct':>12}{'gRPC service':>15}{'ratio':>9}")
    print(f"{'time to first token':22}{d_ttft * 1000:>10.1f}ms{s_ttft * 1000:>13.1f}ms{s_ttft / d_ttft:>9.2f}")
    print(f"{'tokens per second':22}{d_rate:>12.1f}{s_rate:>15.1f}{s_rate / d_rate:>9.3f}")
    print(f"service keeps {100 * s_rate / d_rate:.1f}% of the direct tokens per second (target: at least 95%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
