"""Every benchmark still runs: its ``--smoke`` mode, end to end against the real services and models, prints its table.

The README's and docs/decisions.md's figures come from benchmarks/; a benchmark that nobody ran since a helper
changed fails a user on the first try. Each smoke run here is a child process, as a user starts it, at tiny sizes
(benchmarks/smoke.py); its table is read back and must hold its columns and figures that make sense (speeds above
zero, no errors). The figures themselves are not judged: speed belongs to the benchmarks, not to the tests.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.weaviate_support import weaviate_binary

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
NUMBER = r"(-?[\d.]+|nan)"


def benchmark_scripts() -> list[str]:
    """The benchmarks: every script in benchmarks/ that runs as a program (helpers such as school_topics.py do not)."""
    return sorted(p.name for p in BENCHMARKS.glob("*.py") if re.search(r"^if __name__ == .__main__.:", p.read_text(), re.M))


def figures(pattern: str, output: str) -> list[float]:
    """The numbers of the one line the pattern finds (NUMBER groups), as floats."""
    match = re.search(pattern, output, re.M)
    assert match, f"no line like {pattern!r} in:\n{output}"
    return [float(group) for group in match.groups()]


def positive(*values: float) -> None:
    assert all(value > 0 for value in values), values


def inference(out: str) -> None:
    assert re.search(r"^\s+direct\s+gRPC service\s+ratio$", out, re.M), out
    positive(*figures(rf"^time to first token\s+{NUMBER}ms\s+{NUMBER}ms\s+{NUMBER}$", out))
    positive(*figures(rf"^tokens per second\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out))


def embeddings(out: str) -> None:
    assert re.search(r"^texts\s+tokens/text\s+batched\s+one by one\s+ratio$", out, re.M), out
    for kind in ("short sentences", "1200-char chunks"):
        positive(*figures(rf"^{kind}\s+{NUMBER}\s+{NUMBER} t/s\s+{NUMBER} t/s\s+{NUMBER}$", out))


def batch(out: str) -> None:
    assert re.search(r"^streams\s+raw tok/s\s+engine tok/s\s+engine/raw$", out, re.M), out
    for streams in (1, 2):
        positive(*figures(rf"^\s+{streams}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%$", out))
    positive(*figures(rf"time to first token, not cached: median {NUMBER} ms", out))
    positive(*figures(rf"time to first token, cached:\s+median {NUMBER} ms", out))
    positive(*figures(rf"^  no logprobs:\s+{NUMBER} tok/s$", out))
    positive(*figures(rf"^  top_logprobs 5:\s+{NUMBER} tok/s\s+\([+-]\d+%\)$", out))


def retrieval(out: str) -> None:
    chunks, seconds = figures(rf"^ingest of a 2-page PDF \([\d.]+ MB, {NUMBER} chunks\) through the service: {NUMBER} s in all$", out)
    positive(chunks, seconds)
    positive(*figures(rf"^\s+{NUMBER} chunks/s embedded", out))
    assert re.search(r"^\s+store\s+chunks\s+vector index\s+p50 ms\s+p95 ms$", out, re.M), out
    for index in ("none \\(exact\\)", "IVF-HNSW-SQ, cosine"):
        positive(*figures(rf"^\s+embedded\s+100\s+{index}\s+{NUMBER}\s+{NUMBER}", out))
    # Weaviate's row whenever the store tests have a server (WEAVIATE_URL, or the pinned binary ./dev test builds).
    if os.environ.get("WEAVIATE_URL") or os.access(weaviate_binary(), os.X_OK):
        positive(*figures(rf"^\s+weaviate\s+100\s+HNSW, cosine\s+{NUMBER}\s+{NUMBER}", out))
    else:
        assert re.search(r"^\s+weaviate\s+skipped: no Weaviate server", out, re.M), out
    # --chunks: one large workspace, searched while another thread ingests.
    positive(*figures(rf"^\s+inserted 2000 chunks in {NUMBER} s", out))
    positive(*figures(rf"^\s+vector index \(IVF-HNSW-SQ, cosine\) built in {NUMBER} s; RSS {NUMBER} MiB", out))
    positive(
        *figures(
            rf"^\s+hybrid top 5, 5 queries while ingesting \({NUMBER} chunks added in {NUMBER} s\): p50 {NUMBER} ms, p95 {NUMBER} ms", out
        )
    )
    positive(*figures(rf"^\s+memory: RSS {NUMBER} MiB now, peak {NUMBER} MiB; the largest child process peaked at {NUMBER} MiB$", out))


def table_ingest(out: str) -> None:
    (chunks,) = figures(rf"^chunks: {NUMBER}, text stored", out)
    named, of = figures(rf"^chunks naming all six always-filled columns: {NUMBER} of {NUMBER}$", out)
    positive(chunks)
    assert named == of == chunks, out
    positive(*figures(rf"^ingest in all: {NUMBER} s \({NUMBER} rows/s\)$", out))


def language_detection(out: str) -> None:
    assert re.search(r"^clips\s+lang\s+n\s+Whisper alone\s+weight 5\s+weight 10\s+weight 20$", out, re.M), out
    for length in ("1-3 s", "4-7 s"):
        for language in ("de", "en", "fr"):
            n, *right = figures(rf"^{length}\s+{language}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out)
            assert n == 1 and all(0 <= r <= n for r in right), out


def transcription(out: str) -> None:
    direct, service, _ = figures(rf"median RTF: direct {NUMBER}, service {NUMBER}; service/direct = {NUMBER}", out)
    positive(direct, service)
    rtf, _, segments, loaded, peak = figures(
        rf"service: RTF {NUMBER} \({NUMBER} s, {NUMBER} segments\); memory {NUMBER} MiB after loading, peak {NUMBER} MiB", out
    )
    positive(rtf, segments, loaded)
    assert peak >= loaded, out
    positive(*figures(rf"schulki, \d+ s windows: peak {NUMBER} MiB", out))
    positive(*figures(rf"faster-whisper, whole file: peak {NUMBER} MiB", out))
    assert re.search(r"^recordings at once\s+unbatched audio s/s\s+batched audio s/s\s+batched/unbatched$", out, re.M), out
    for level in (1, 2):  # the smoke run sends 1 and 2 at once (the benchmark also 4)
        positive(*figures(rf"^{level}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out))
    for rate in figures(rf"^word error rate, mean of every recording transcribed: unbatched {NUMBER}, batched {NUMBER}$", out):
        assert 0 <= rate < 1, out  # both understood the clips at all (10 s of espeak-ng German)


def grammar(out: str) -> None:
    assert re.search(r"^streams\s+free tok/s\s+grammar tok/s\s+grammar/free\s+picks refused$", out, re.M), out
    for streams in (1, 2):
        free, constrained, ratio, _ = figures(rf"^\s+{streams}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%\s+{NUMBER}%$", out)
        positive(free, constrained, ratio)


def gateway_load(out: str) -> None:
    assert re.search(
        r"^server\s+TTFT p50\s+TTFT p95\s+tokens/s\s+requests\s+errors\s+prompt/req\s+answer/req\s+CPU ms/token: server\s+gateway\s+client$",
        out,
        re.M,
    ), out
    p50, p95, tokens_s, requests, errors, *_ = figures(
        rf"^(?:schulki|/v1/chat/completions).*?\s+{NUMBER}s\s+{NUMBER}s" + rf"\s+{NUMBER}" * 8 + "$", out
    )
    positive(p50, p95, tokens_s, requests)
    assert errors == 0, out
    # The same students in the Chat tab, through Gradio's API (--page).
    p50, p95, tokens_s, requests, errors, *_ = figures(
        rf"^Chat tab \(Gradio API\)\s+{NUMBER}s\s+{NUMBER}s" + rf"\s+{NUMBER}" * 8 + "$", out
    )
    positive(p50, p95, tokens_s, requests)
    assert errors == 0, out
    assert re.search(r"^the page against /v1: tokens/s \d+%", out, re.M), out
    # The peer runs only where llama-server is already built; otherwise the table says that it was left out.
    if not re.search(r"^llama-server: skipped in this smoke run, not built at ", out, re.M):
        _, _, tokens_s, requests, errors, *_ = figures(rf"^llama-server -np.*?\s+{NUMBER}s\s+{NUMBER}s" + rf"\s+{NUMBER}" * 8 + "$", out)
        positive(tokens_s, requests)
        assert errors == 0, out


def keystroke(out: str) -> None:
    assert re.search(r"^model \S+\.gguf, (plain prompts|fill-in-the-middle)", out, re.M), out
    (first,) = figures(rf"^time to first token, 1st keystroke: {NUMBER} ms$", out)
    (second,) = figures(rf"^time to first token, 2nd keystroke: {NUMBER} ms$", out)
    positive(first, second, *figures(rf"^2nd/1st: {NUMBER}$", out))


def multi_node_load(out: str) -> None:
    requests, errors = figures(rf"^requests: {NUMBER}, errors: {NUMBER} \[\]$", out)
    positive(requests)
    assert errors == 0, out
    nodes = re.findall(r"^  node 127\.0\.0\.1:\d+: (\d+) answers in its log; gateway: (\d+) answered, (\d+) broken off", out, re.M)
    assert len(nodes) == 2, out
    assert sum(int(logged) for logged, _, _ in nodes) == requests, out
    positive(*figures(rf"^time to first token: p50 {NUMBER} s, p95 {NUMBER} s$", out))


def core_split(out: str) -> None:
    assert re.search(
        r"^mode\s+ingest quiet\s+under chat\s+ratio\s+TTFT p50/p95 alone\s+during ingest p95 ratio\s+answers\s+errors\s+load$", out, re.M
    ), out
    quiet, loaded, _, alone50, alone95, during50, during95, _, answers, errors, _ = figures(
        rf"^after\s+{NUMBER}s\s+{NUMBER}s\s+{NUMBER}\s+{NUMBER}s /\s*{NUMBER}s\s+{NUMBER}s /\s*{NUMBER}s\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$",
        out,
    )
    positive(quiet, loaded, alone50, alone95, answers)
    assert errors == 0, out
    # A 2-page ingest may end before any student got an answer: then there is no time to first token during it.
    assert (during50 > 0 and during95 > 0) or math.isnan(during50), out


def moderation(out: str) -> None:
    wrong, ordinary, _ = figures(rf"^false positives: {NUMBER} of {NUMBER} ordinary questions \({NUMBER}%\)$", out)
    caught, cases, _ = figures(rf"^true positives: {NUMBER} of {NUMBER} harmful cases \({NUMBER}%\)$", out)
    positive(ordinary, cases, caught)
    assert 0 <= wrong <= ordinary and caught <= cases, out
    pieces, _, guarded, _ = figures(
        rf"^streaming: {NUMBER} pieces, CPU time unread {NUMBER} ms, guarded {NUMBER} ms, {NUMBER} us per piece$", out
    )
    positive(pieces, guarded)


CHECKS: dict[str, Callable[[str], None]] = {
    "batch_bench.py": batch,
    "core_split_bench.py": core_split,
    "embeddings_bench.py": embeddings,
    "gateway_load_bench.py": gateway_load,
    "grammar_bench.py": grammar,
    "inference_bench.py": inference,
    "keystroke_bench.py": keystroke,
    "language_detection_bench.py": language_detection,
    "moderation_bench.py": moderation,
    "multi_node_load_bench.py": multi_node_load,
    "retrieval_bench.py": retrieval,
    "table_ingest_bench.py": table_ingest,
    "transcription_bench.py": transcription,
}
"""What each benchmark's smoke table must show."""


def test_every_benchmark_has_a_smoke_check() -> None:
    scripts = benchmark_scripts()
    assert "inference_bench.py" in scripts and "school_topics.py" not in scripts, scripts
    assert set(scripts) == set(CHECKS), (
        f"benchmarks without a smoke check here: {sorted(set(scripts) - set(CHECKS))}; checks of benchmarks that are gone: "
        f"{sorted(set(CHECKS) - set(scripts))}. Give a new benchmark a --smoke mode (benchmarks/smoke.py) and a check in CHECKS."
    )


@pytest.mark.parametrize("script", benchmark_scripts())
def test_smoke_run_prints_its_table(script: str) -> None:
    assert script in CHECKS, f"{script} has no smoke check in CHECKS"
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], capture_output=True, text=True, cwd=REPO, timeout=540)
    assert result.returncode == 0, f"{script} --smoke exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    # An exception in a worker thread ends with exit code 0 but leaves its traceback.
    assert "Traceback (most recent call last)" not in result.stderr, result.stderr[-5000:]
    CHECKS[script](result.stdout)
