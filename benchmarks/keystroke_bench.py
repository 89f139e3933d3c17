"""Editor keystrokes: the time to first token of the 2nd keystroke beside the 1st, through the inference service's Complete.

An editor asks for a completion at every keystroke; the 2nd prompt is the 1st
with one more character before the cursor. The engine's prefix cache should
read only what changed, so the 2nd keystroke's first token comes much sooner.
Each round uses a file the service has not seen (its first line differs), so
the 1st keystroke reads the whole prompt. The service runs as an admin starts
it (``schulki serve inference``). With a code model (``--model`` a GGUF with
fill-in-the-middle tokens, such as the catalog's Qwen2.5-Coder) the prompts are
fill-in-the-middle requests with a suffix after the cursor, as llama.vscode
sends them; with the default model, which has none, they are plain prompts.

    .venv/bin/python benchmarks/keystroke_bench.py [--rounds 5] [--lines 40] [--model PATH] [--threads 2]
    .venv/bin/python benchmarks/keystroke_bench.py --smoke
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

from schulki.inference.v1 import inference_service_pb2 as pb  # noqa: E402
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc  # noqa: E402

from benchmarks.smoke import parse_args  # noqa: E402
from tests.conftest import ServiceProcess  # noqa: E402

GREEDY = pb.SamplingOptions(temperature=0.0, repeat_penalty=1.0)
SUFFIX = "\n\n\nif __name__ == '__main__':\n    print(summe([1, 2, 3]))\n"


def source_file(round_no: int, lines: int) -> str:
    """A Python file of ``lines`` small functions, its first line unique to the round, ending where the student types."""
    body = [f"# Übung {round_no}: Listen und Schleifen"]
    for i in range(lines):
        body.append(f"def quadrat_{i}(x):\n    return x * x + {i}\n")
    body.append("def summe(zahlen):\n    ergebnis = 0\n    for z in zahlen:\n        ergebnis = ergebnis + z\n    retur")
    return "\n".join(body)


def request(prefix: str, fill: bool) -> pb.CompleteRequest:
    if fill:
        return pb.CompleteRequest(fill_in_the_middle=pb.FillInTheMiddle(prefix=prefix, suffix=SUFFIX), max_tokens=8, sampling=GREEDY)
    return pb.CompleteRequest(prompt=prefix, max_tokens=8, sampling=GREEDY)


def first_token_s(stub: pb_grpc.InferenceServiceStub, job: pb.CompleteRequest) -> tuple[float, int]:
    """Seconds to the first message of the stream (a text piece, or the finish when the first token ends it), and the
    prompt's tokens."""
    started = time.perf_counter()
    first = None
    prompt_tokens = 0
    for response in stub.Complete(job, timeout=300):
        if first is None:
            first = time.perf_counter() - started
        if response.HasField("finish"):
            prompt_tokens = response.finish.usage.prompt_tokens
    assert first is not None, "the stream was empty"
    return first, prompt_tokens


def has_fill_in_the_middle(stub: pb_grpc.InferenceServiceStub) -> bool:
    try:
        first_token_s(stub, request("x = ", fill=True))
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return False
        raise
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lines", type=int, default=40, help="small functions before the cursor (about 12 tokens each)")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF to serve instead of the default chat model")
    parser.add_argument("--threads", type=int, default=2)
    args = parse_args(parser, rounds=1, lines=8)

    env = {"SCHULKI_INFERENCE__THREADS": str(args.threads), "SCHULKI_RUNTIME__LOG_LEVEL": "WARNING"}
    if args.model:
        env["SCHULKI_INFERENCE__MODEL_PATH"] = str(args.model.resolve())
    server = ServiceProcess("inference", env=env).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest())
            fill = has_fill_in_the_middle(stub)
            first_key, second_key, sizes = [], [], []
            for r in range(args.rounds):
                text = source_file(r, args.lines)
                ttft, tokens = first_token_s(stub, request(text, fill))
                first_key.append(ttft)
                sizes.append(tokens)
                second_key.append(first_token_s(stub, request(text + "n", fill))[0])
    finally:
        server.stop()

    first_ms, second_ms = statistics.median(first_key) * 1000, statistics.median(second_key) * 1000
    kind = "fill-in-the-middle with a suffix" if fill else "plain prompts (the model has no fill-in-the-middle tokens)"
    print(
        f"model {info.file_name}, {kind}, prompts of {min(sizes)}-{max(sizes)} tokens, {args.threads} threads, "
        f"{args.rounds} rounds (medians)"
    )
    print(f"time to first token, 1st keystroke: {first_ms:.1f} ms")
    print(f"time to first token, 2nd keystroke: {second_ms:.1f} ms")
    print(f"2nd/1st: {second_ms / first_ms:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
