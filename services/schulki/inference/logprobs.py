"""Log-probabilities of tokens, read from the logits llama.cpp computed for one batch position.

The batch worker asks for them only for sequences that want them (``logprobs``
on a chat, the scoring of a text, the next-token distribution of the "Wie
denkt die KI?" tab); a sequence that does not ask costs nothing more. For one
that asks, a row is Gemma 3's 262,144 logits, and numpy's usual way
(``log_softmax`` into a new array, ``argpartition`` for the top-k) took about
2 ms a row here, a real share of a 40 ms step at 8 sequences. So:

- the log-sum-exp runs in place in one scratch row the worker keeps, summed in
  float32 (numpy's pairwise sum: relative error about 1e-7), so a row costs
  one exp pass and one sum and no allocation (the usual shift by the largest
  logit is left out while the logits are small enough not to overflow);
- the top-k comes from the few logits within a small gap of the largest (one
  comparison pass; the gap widens until it holds k tokens), not from sorting
  the whole row. A cut-off for the sum does not pay: on Gemma 3 almost all
  262k logits lie within 25 nats of the largest.

Log-probabilities are those of the model's own distribution (the raw logits),
as OpenAI's ``logprobs`` are, not of the sampler chain's result after
top-k, top-p and the repeat penalty; ``temperature`` divides the logits first
(the tab's slider shows softmax(logits / T)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from llama_cpp.llama_cpp import llama_context_p

MAX_TOP_LOGPROBS = 20
"""The most alternatives per position anyone may ask for (OpenAI's limit)."""
DIRECT_RANGE = 60.0
"""While the largest logit lies within ±60, exp of the logits needs no shift first (float32 holds e^88, and the sum
keeps the largest term, at least e^-60): one pass less."""
NEAR_GAP = 4.0
MAX_GAP = 64.0
"""The top-k looks at logits within NEAR_GAP of the largest first, four times wider each time too few are in it, up to
MAX_GAP; then it sorts the whole row."""


@dataclass(frozen=True)
class LogprobRequest:
    """What a generation asks for: the log-probability of each generated token and ``top`` alternatives."""

    top: int = 0
    prompt: bool = False
    """Also every prompt token from the second on (scoring a text)."""
    temperature: float = 1.0
    """Divides the logits before the log-softmax; 1 is the model's own distribution."""
    following: bool = False
    """The distribution of the token after the prompt (its most likely one as the chosen), generating nothing."""


@dataclass(frozen=True)
class TokenChoice:
    """A token with its log-probability at one position."""

    token: int
    piece: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprobs:
    """A token of a text or an answer, its log-probability, and the most likely tokens at its place, most likely first."""

    chosen: TokenChoice
    alternatives: tuple[TokenChoice, ...] = ()


def top_and_logprob(
    row: np.ndarray, chosen: int, top: int, temperature: float = 1.0, scratch: np.ndarray | None = None
) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``chosen`` and the ``top`` most likely (token, log-probability) pairs of one logits row.

    ``scratch``: a float32 array of the row's length to work in (the batch worker keeps one), else one is made."""
    if temperature != 1.0:
        row = row / np.float32(temperature)
    best = row.max()
    work = scratch if scratch is not None and scratch.shape == row.shape else np.empty(row.shape, dtype=np.float32)
    if -DIRECT_RANGE < best < DIRECT_RANGE:  # exp of every logit fits a float32 and the largest does not vanish
        np.exp(row, out=work)
        log_sum = math.log(float(work.sum()))
    else:
        np.subtract(row, best, out=work)
        np.exp(work, out=work)
        log_sum = float(best) + math.log(float(work.sum()))
    pairs: list[tuple[int, float]] = []
    if top > 0:
        near = _near_the_top(row, float(best), top)
        values = row[near]
        if len(near) > top:
            keep = np.argpartition(values, -top)[-top:]
            near, values = near[keep], values[keep]
        order = np.argsort(-values, kind="stable")
        pairs = [(int(near[i]), float(values[i]) - log_sum) for i in order]
    return float(row[chosen]) - log_sum, pairs


def rows_top_and_logprob(
    block: np.ndarray, chosen: Sequence[int], tops: Sequence[int], scratch: np.ndarray
) -> list[tuple[float, list[tuple[int, float]]]]:
    """``top_and_logprob`` for every row of a (rows, vocabulary) block at temperature 1, in a few numpy calls for all
    rows together; ``scratch`` is a float32 array at least as large as the block."""
    work = scratch[: block.size].reshape(block.shape)
    best = block.max(axis=1)
    if best.min() > -DIRECT_RANGE and best.max() < DIRECT_RANGE:
        np.exp(block, out=work)
        log_sums = np.log(work.sum(axis=1, dtype=np.float32))
    else:
        np.subtract(block, best[:, None], out=work)
        np.exp(work, out=work)
        log_sums = best + np.log(work.sum(axis=1, dtype=np.float32))
    rows, columns = np.nonzero(block >= (best - NEAR_GAP)[:, None])
    starts = np.searchsorted(rows, np.arange(len(block) + 1))
    results = []
    for i, (token, top) in enumerate(zip(chosen, tops, strict=True)):
        log_sum = float(log_sums[i])
        pairs: list[tuple[int, float]] = []
        if top > 0:
            near = columns[starts[i] : starts[i + 1]]
            if len(near) < top:  # too few close to the top in this row: widen its gap alone
                near = _near_the_top(block[i], float(best[i]), top)
            values = block[i, near]
            if len(near) > top:
                keep = np.argpartition(values, -top)[-top:]
                near, values = near[keep], values[keep]
            order = np.argsort(-values, kind="stable")
            pairs = [(int(near[j]), float(values[j]) - log_sum) for j in order]
        results.append((float(block[i, token]) - log_sum, pairs))
    return results


def _near_the_top(row: np.ndarray, best: float, top: int) -> np.ndarray:
    """At least ``top`` token ids that hold the ``top`` largest logits: those within a gap of the largest, the gap
    widened until enough are in it. A comparison is one fast pass; sorting all 262k would take milliseconds."""
    gap = NEAR_GAP
    while gap <= MAX_GAP:
        near = np.flatnonzero(row >= best - gap)
        if len(near) >= top:
            return near
        gap *= 4
    return np.argpartition(row, -top)[-top:]


class LogprobReader:
    """Reads log-probabilities out of one llama context's logits, turning token ids into their bytes with ``piece``."""

    def __init__(self, ctx: llama_context_p, n_vocab: int, piece: Callable[[int], bytes]):
        from schulki.runtime import llama_adapter as lc

        self._lc = lc
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._piece = piece
        self._scratch = np.empty(n_vocab, dtype=np.float32)
        self._block_scratch = np.empty(0, dtype=np.float32)

    def at(self, index: int, chosen: int, request: LogprobRequest) -> TokenLogprobs:
        """The log-probabilities at batch position ``index`` of the last decode, for the token ``chosen`` there."""
        row = self._lc.logits_row(self._ctx, index, self._n_vocab)
        logprob, pairs = top_and_logprob(row, chosen, request.top, request.temperature, self._scratch)
        return TokenLogprobs(
            chosen=TokenChoice(chosen, self._piece(chosen), logprob),
            alternatives=tuple(TokenChoice(token, self._piece(token), value) for token, value in pairs),
        )

    def following(self, index: int, request: LogprobRequest) -> TokenLogprobs:
        """The log-probabilities at batch position ``index``, with the most likely token as the chosen one."""
        row = self._lc.logits_row(self._ctx, index, self._n_vocab)
        return self.at(index, int(row.argmax()), request)

    def rows(self, answering: int, items: Sequence[tuple[int, int, int]]) -> list[TokenLogprobs]:
        """For (batch position, chosen token, alternatives) of rows among the last decode's first ``answering`` outputs
        (one per answering sequence, so batch position and output row agree), read together at temperature 1."""
        if not items:
            return []
        block = self._lc.logits_rows(self._ctx, answering, self._n_vocab)
        indices = [index for index, _, _ in items]
        if indices != list(range(indices[0], indices[0] + len(indices))):
            block = block[indices]  # a copy: only some of the rows asked
        else:
            block = block[indices[0] : indices[0] + len(indices)]
        if self._block_scratch.size < block.size:
            self._block_scratch = np.empty(block.size, dtype=np.float32)
        found = rows_top_and_logprob(block, [token for _, token, _ in items], [top for _, _, top in items], self._block_scratch)
        return [
            TokenLogprobs(
                chosen=TokenChoice(token, self._piece(token), logprob),
                alternatives=tuple(TokenChoice(t, self._piece(t), value) for t, value in pairs),
            )
            for (_, token, _), (logprob, pairs) in zip(items, found, strict=True)
        ]

    def prompt(self, first_index: int, predicted: Sequence[int], request: LogprobRequest) -> list[TokenLogprobs]:
        """Positions ``first_index`` + i of the last decode, each for the prompt token that follows it, ``predicted[i]``."""
        return [self.at(first_index + i, token, request) for i, token in enumerate(predicted)]
