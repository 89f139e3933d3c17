"""Log-probabilities of tokens, read from the logits llama.cpp computed for one batch position.

The batch worker asks for them only for sequences that want them (``logprobs``
on a chat, the scoring of a text, the next-token distribution of the "Wie
denkt die KI?" tab); a sequence that does not ask costs nothing more. For one
that asks, a row is Gemma 3's 262,144 logits, and a full log-softmax plus a
top-k over it take about 2 ms in numpy on this machine's cores, a real share of
a 40 ms step at 8 sequences. Two shortcuts keep it near a tenth of that without
giving up accuracy:

- the log of the sum of exponentials adds only the logits within ``CUTOFF``
  nats of the largest: every other token adds less than e^-25 of the largest
  term, so all of them together change the sum by less than
  n_vocab · e^-25 (4e-6 of a nat at 262k tokens);
- the most likely tokens are among those same logits, so the top-k is sorted
  out of that short list instead of the whole row.

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
CUTOFF = 25.0
"""Logits further than this below the largest are left out of the log-sum-exp (see the module's text)."""


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


def top_and_logprob(row: np.ndarray, chosen: int, top: int, temperature: float = 1.0) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``chosen`` and the ``top`` most likely (token, log-probability) pairs of one logits row."""
    if temperature != 1.0:
        row = row / np.float32(temperature)
    best = float(row.max())
    near = np.flatnonzero(row >= best - CUTOFF)
    values = row[near]
    log_sum = best + math.log(float(np.exp(values - best, dtype=np.float64).sum()))
    pairs: list[tuple[int, float]] = []
    if top > 0:
        if len(near) < top:  # a flat distribution at a high temperature: sort out of the whole row
            near = np.argpartition(row, -top)[-top:]
            values = row[near]
        elif len(near) > top:
            keep = np.argpartition(values, -top)[-top:]
            near, values = near[keep], values[keep]
        order = np.argsort(-values, kind="stable")
        pairs = [(int(near[i]), float(values[i]) - log_sum) for i in order]
    return float(row[chosen]) - log_sum, pairs


class LogprobReader:
    """Reads log-probabilities out of one llama context's logits, turning token ids into their bytes with ``piece``."""

    def __init__(self, ctx: llama_context_p, n_vocab: int, piece: Callable[[int], bytes]):
        from schulki.runtime import llama_adapter as lc

        self._lc = lc
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._piece = piece

    def at(self, index: int, chosen: int, request: LogprobRequest) -> TokenLogprobs:
        """The log-probabilities at batch position ``index`` of the last decode, for the token ``chosen`` there."""
        row = self._lc.logits_row(self._ctx, index, self._n_vocab)
        logprob, pairs = top_and_logprob(row, chosen, request.top, request.temperature)
        return TokenLogprobs(
            chosen=TokenChoice(chosen, self._piece(chosen), logprob),
            alternatives=tuple(TokenChoice(token, self._piece(token), value) for token, value in pairs),
        )

    def following(self, index: int, request: LogprobRequest) -> TokenLogprobs:
        """The log-probabilities at batch position ``index``, with the most likely token as the chosen one."""
        row = self._lc.logits_row(self._ctx, index, self._n_vocab)
        return self.at(index, int(row.argmax()), request)

    def prompt(self, first_index: int, predicted: Sequence[int], request: LogprobRequest) -> list[TokenLogprobs]:
        """Positions ``first_index`` + i of the last decode, each for the prompt token that follows it, ``predicted[i]``."""
        return [self.at(first_index + i, token, request) for i, token in enumerate(predicted)]
