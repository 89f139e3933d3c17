"""Embedding throughput through the gRPC service: many texts in one call beside one call per text.

The service runs as `schulki serve embeddings` in its own process and is
called over a real socket. Each round embeds the same texts twice: once as one
Embed call with all of them (the service packs them into llama.cpp batches of
up to batch_tokens tokens, several texts per batch), once as one call per text.
Rounds alternate which side goes first, so that a noisy machine hurts both
alike, and the medians are compared. Two kinds of texts: short sentences (as
search queries are) and chunks of about 1200 characters (as ingest sends).

    .venv/bin/python benchmarks/embeddings_bench.py [--rounds 5] [--texts 64] [--threads 2] [--batch-tokens 512]
        [--sequences 8] [--flash-attention]
    .venv/bin/python benchmarks/embeddings_bench.py --smoke    # one round of 4 texts: does it still run?
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.embeddings.v1 import embeddings_service_pb2 as pb  # noqa: E402
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc  # noqa: E402

from benchmarks.school_topics import SCHOOL_TOPICS  # noqa: E402
from benchmarks.smoke import parse_args  # noqa: E402
from tests.conftest import ServiceProcess  # noqa: E402

SUBJECTS = SCHOOL_TOPICS[:10]


def short_texts(n: int, round_no: int) -> list[str]:
    """Sentences of about 20 tokens, different in every round."""
    return [f"Frage {round_no}.{i}: Wie erklärt man einer siebten Klasse {SUBJECTS[i % len(SUBJECTS)]}?" for i in range(n)]


def chunk_texts(n: int, round_no: int) -> list[str]:
    """Texts of about 1200 characters, the default chunk length."""
    body = (
        "Im Unterricht besprechen wir, wie {s} funktioniert, welche Fachbegriffe dazugehören "
        "und welche Versuche man im Klassenzimmer dazu machen kann. "
    )
    return [f"Abschnitt {round_no}.{i}. " + body.format(s=SUBJECTS[i % len(SUBJECTS)]) * 8 for i in range(n)]


def batched(stub: pb_grpc.EmbeddingsServiceStub, texts: list[str]) -> float:
    start = time.perf_counter()
    response = stub.Embed(pb.EmbedRequest(texts=texts), timeout=600)
    assert len(response.embeddings) == len(texts)
    return time.perf_counter() - start


def one_by_one(stub: pb_grpc.EmbeddingsServiceStub, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        stub.Embed(pb.EmbedRequest(texts=[text]), timeout=600)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=64, help="texts per round and kind")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-tokens", type=int, default=None, help="the service's batch_tokens; default from the settings")
    parser.add_argument("--sequences", type=int, default=None, help="the service's max_sequences_per_batch; default from the settings")
    parser.add_argument("--flash-attention", action="store_true", help="turn on the service's flash_attention")
    args = parse_args(parser, rounds=1, texts=4)

    env = {"SCHULKI_EMBEDDINGS__THREADS": str(args.threads), "SCHULKI_RUNTIME__LOG_LEVEL": "WARNING"}
    if args.batch_tokens:
        env["SCHULKI_EMBEDDINGS__BATCH_TOKENS"] = str(args.batch_tokens)
    if args.sequences:
        env["SCHULKI_EMBEDDINGS__MAX_SEQUENCES_PER_BATCH"] = str(args.sequences)
    if args.flash_attention:
        env["SCHULKI_EMBEDDINGS__FLASH_ATTENTION"] = "true"
    server = ServiceProcess("embeddings", env=env).start()
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.EmbeddingsServiceStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest())
            tokens = {}
            for kind, make in (("short sentences", short_texts), ("1200-char chunks", chunk_texts)):
                warm = make(4, -1)
                batched(stub, warm), one_by_one(stub, warm)
                sample = stub.Embed(pb.EmbedRequest(texts=make(args.texts, -2)), timeout=600).embeddings
                tokens[kind] = statistics.mean(e.token_count for e in sample)
                together, alone = [], []
                for r in range(args.rounds):
                    texts = make(args.texts, r)
                    if r % 2:
                        alone.append(one_by_one(stub, texts))
                        together.append(batched(stub, texts))
                    else:
                        together.append(batched(stub, texts))
                        alone.append(one_by_one(stub, texts))
                results[kind] = (together, alone)
    finally:
        server.stop()

    print(
        f"model {info.model_name} ({info.quant}, {info.dimension} dimensions), {args.threads} threads, "
        f"batch_tokens {args.batch_tokens or 'default'}, texts per batch {args.sequences or 'default'}, "
        f"flash attention {'on' if args.flash_attention else 'off'}, {args.texts} texts per round, {args.rounds} alternating rounds (medians)"
    )
    print(f"{'texts':18}{'tokens/text':>12}{'batched':>14}{'one by one':>14}{'ratio':>8}")
    for kind, (together, alone) in results.items():
        fast = args.texts / statistics.median(together)
        slow = args.texts / statistics.median(alone)
        print(f"{kind:18}{tokens[kind]:>12.0f}{fast:>9.1f} t/s{slow:>9.1f} t/s{fast / slow:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
