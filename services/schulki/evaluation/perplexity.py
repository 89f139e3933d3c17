"""Perplexity and KL divergence, computed the way llama.cpp's ``llama-perplexity`` computes them.

Perplexity (``llama-perplexity -f text -c N``): the whole text is tokenized
once (with BOS), cut into ``len // N`` windows of N tokens, the first token of
each window is replaced by BOS, and only the second half of each window is
scored: the logits at positions N/2 .. N-2 predict the tokens N/2+1 .. N-1, so
every scored token has at least N/2 tokens of context. Perplexity is
exp(mean negative log-likelihood), its error as llama.cpp prints it.

KL divergence (``--kl-divergence-base`` / ``--kl-divergence``): the reference
file's log-probabilities of those positions are stored in llama.cpp's own file
format (per token the whole vocabulary as 16-bit steps over the top 16 nats),
window by window, so memory stays bounded for any text length and the file can
be handed to ``llama-perplexity --kl-divergence`` as a cross-check. Each other
file then reads the same tokens back and is compared position by position:
mean KLD(reference ‖ file) over the tokens whose reference log-probability is
above -16, and how often both put the same token on top.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schulki.evaluation.model import EvalError, EvalModel

ROW_BLOCK = 32
"""Rows of logits turned into log-probabilities at a time: 32 × 262k floats is 33 MiB per temporary array."""
LOGITS_MAGIC = b"_logits_"
Progress = Callable[[int, int], None]


class EvalCancelled(Exception):
    """The admin cancelled the run (Ctrl-C or the cancel event)."""


@dataclass
class Stats:
    """Running sums, as llama.cpp keeps them, and the figures derived from them."""

    count: int = 0
    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    same_top: int = 0
    kld_count: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.sum_nll / self.count)

    @property
    def perplexity_error(self) -> float:
        """llama.cpp's "+/-": the standard error of the mean log-likelihood, times the perplexity."""
        mean = self.sum_nll / self.count
        var = self.sum_nll2 / self.count - mean * mean
        return math.sqrt(var / (self.count - 1)) * self.perplexity if var > 0 and self.count > 1 else 0.0

    @property
    def mean_kld(self) -> float | None:
        return self.sum_kld / self.kld_count if self.kld_count else None

    @property
    def mean_kld_error(self) -> float:
        if self.kld_count <= 10:
            return 0.0
        mean = self.sum_kld / self.kld_count
        var = self.sum_kld2 / self.kld_count - mean * mean
        return math.sqrt(var / (self.kld_count - 1)) if var > 0 else 0.0

    @property
    def same_top_percent(self) -> float | None:
        return 100.0 * self.same_top / self.kld_count if self.kld_count else None


def text_windows(model: EvalModel, text: str, context: int, max_windows: int | None = None) -> np.ndarray:
    """The tokens of the text as windows (rows) of ``context`` tokens, as llama-perplexity cuts them."""
    tokens = model.tokenize(text, add_bos=True)
    if len(tokens) < 2 * context:
        raise EvalError(
            f"Der Text hat nur {len(tokens)} Tokens; für Fenster von {context} braucht es mindestens {2 * context} "
            f"(the text has only {len(tokens)} tokens; windows of {context} need at least {2 * context})"
        )
    n = len(tokens) // context
    if max_windows:
        n = min(n, max_windows)
    return np.asarray(tokens[: n * context], dtype=np.int32).reshape(n, context)


def window_logits(model: EvalModel, window: np.ndarray) -> np.ndarray:
    """Logits of positions context/2 .. context-1 of one window, BOS first, KV cache cleared before."""
    tokens = window.copy()
    if model.add_bos:
        tokens[0] = model.bos
    model.clear()
    return model.decode(tokens, first_output=len(tokens) // 2)


def _log_softmax_parts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the largest logit and log(sum(exp(logit - largest))), the sum in double as llama.cpp adds it."""
    top = block.max(axis=1)
    log_sum = np.log(np.exp(block - top[:, None]).sum(axis=1, dtype=np.float64)).astype(np.float32)
    return top, log_sum


def row_width(n_vocab: int) -> int:
    """uint16 values per token in llama.cpp's log-probability file: two floats of header, the vocabulary, padding."""
    return 2 * ((n_vocab + 1) // 2) + 4


def encode_log_probs(block: np.ndarray) -> np.ndarray:
    """Rows of logits as llama.cpp stores them: scale and floor as two floats, then 16-bit steps over the top 16 nats."""
    rows, n_vocab = block.shape
    top, log_sum = _log_softmax_parts(block)
    floor = np.maximum(block.min(axis=1), top - 16)
    min_log_prob = (floor - top - log_sum).astype(np.float32)
    scale = ((top - floor) / np.float32(65535)).astype(np.float32)
    out = np.zeros((rows, row_width(n_vocab)), dtype=np.uint16)
    out[:, :4] = np.stack([scale, min_log_prob], axis=1).view(np.uint16)
    safe = np.where(scale > 0, scale, np.float32(1))
    steps = np.rint((np.float32(1) / safe)[:, None] * (block - floor[:, None]))
    out[:, 4 : 4 + n_vocab] = np.where((block > floor[:, None]) & (scale[:, None] > 0), steps, 0).astype(np.uint16)
    return out


def _add_nll(stats: Stats, nll: np.ndarray) -> None:
    stats.count += len(nll)
    stats.sum_nll += float(nll.sum(dtype=np.float64))
    stats.sum_nll2 += float((nll.astype(np.float64) ** 2).sum())


def score_window(
    logits: np.ndarray, window: np.ndarray, stats: Stats, store: list[np.ndarray] | None = None, base: np.ndarray | None = None
) -> None:
    """Add one window's negative log-likelihoods (and, against base rows, its KLD) to stats.

    logits are the rows for positions first .. context-1; the last row predicts
    nothing inside the window and is not scored, as in llama.cpp.
    """
    first = len(window) // 2
    scored = len(window) - 1 - first
    for start in range(0, scored, ROW_BLOCK):
        stop = min(start + ROW_BLOCK, scored)
        block = np.asarray(logits[start:stop], dtype=np.float32)
        targets = window[first + 1 + start : first + 1 + stop]
        top, log_sum = _log_softmax_parts(block)
        nll = top + log_sum - block[np.arange(len(block)), targets]
        _add_nll(stats, nll)
        if store is not None:
            store.append(encode_log_probs(block))
        if base is not None:
            _add_kld(stats, block, top, log_sum, base[start:stop])


def _add_kld(stats: Stats, block: np.ndarray, top: np.ndarray, log_sum: np.ndarray, base: np.ndarray) -> None:
    n_vocab = block.shape[1]
    header = np.ascontiguousarray(base[:, :4]).view(np.float32)
    scale, min_log_prob = header[:, 0], header[:, 1]
    base_log_p = scale[:, None] * base[:, 4 : 4 + n_vocab].astype(np.float32) + min_log_prob[:, None]
    log_q = block - (top + log_sum)[:, None]
    terms = np.where(base_log_p > -16, np.exp(base_log_p) * (base_log_p - log_q), 0)
    kld = terms.sum(axis=1, dtype=np.float64)
    stats.sum_kld += float(kld.sum())
    stats.sum_kld2 += float((kld**2).sum())
    stats.kld_count += len(kld)
    stats.same_top += int((block.argmax(axis=1) == base_log_p.argmax(axis=1)).sum())


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise EvalCancelled()


def reference_pass(
    model: EvalModel, windows: np.ndarray, base_file: Path, progress: Progress | None = None, cancel: threading.Event | None = None
) -> Stats:
    """Perplexity of the reference file; its log-probabilities go to base_file in llama.cpp's format."""
    n_windows, context = windows.shape
    stats = Stats()
    with base_file.open("wb") as out:
        out.write(LOGITS_MAGIC)
        out.write(np.array([context], dtype=np.uint32).tobytes())
        out.write(np.array([model.n_vocab, n_windows], dtype=np.int32).tobytes())
        out.write(windows.astype(np.int32).tobytes())
        for i, window in enumerate(windows):
            _check(cancel)
            rows: list[np.ndarray] = []
            score_window(window_logits(model, window), window, stats, store=rows)
            for block in rows:
                out.write(block.tobytes())
            if progress:
                progress(i + 1, n_windows)
    return stats


def read_base_header(base_file: Path) -> tuple[int, int, np.ndarray, int]:
    """(context, vocabulary size, windows, byte offset of the first log-probability row) of a base file."""
    with base_file.open("rb") as f:
        if f.read(8) != LOGITS_MAGIC:
            raise EvalError(f"{base_file} is not a llama.cpp log-probability file")
        context = int(np.frombuffer(f.read(4), dtype=np.uint32)[0])
        n_vocab, n_windows = (int(v) for v in np.frombuffer(f.read(8), dtype=np.int32))
        windows = np.frombuffer(f.read(4 * context * n_windows), dtype=np.int32).reshape(n_windows, context)
        return context, n_vocab, windows, f.tell()


def compare_pass(model: EvalModel, base_file: Path, progress: Progress | None = None, cancel: threading.Event | None = None) -> Stats:
    """Perplexity and KL divergence of one file against the reference's stored log-probabilities."""
    context, n_vocab, windows, offset = read_base_header(base_file)
    if n_vocab != model.n_vocab:
        raise EvalError(
            f"{model.path.name} has a vocabulary of {model.n_vocab} tokens, the reference {n_vocab}: "
            "only quants of the same model can be compared (nur Quantisierungen desselben Modells sind vergleichbar)"
        )
    if context > model.context:
        raise EvalError(f"windows of {context} tokens do not fit a context of {model.context}")
    scored = context - 1 - context // 2
    width = row_width(n_vocab)
    base = np.memmap(base_file, dtype=np.uint16, mode="r", offset=offset, shape=(len(windows), scored, width))
    stats = Stats()
    for i, window in enumerate(windows):
        _check(cancel)
        score_window(window_logits(model, window), window, stats, base=base[i])
        if progress:
            progress(i + 1, len(windows))
    del base
    return stats
