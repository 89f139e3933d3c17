"""One llama.cpp sampler chain per running sequence.

Each sequence gets its own native chain (logit bias, repeat/presence/frequency
penalties, top_k, top_p, min_p, temperature, then a seeded draw, or greedy at
temperature 0; a grammar, where one is asked for, checks each pick: grammar.py),
so sequences in
one batch never share random state or penalty history, and picking a token is
one call into llama.cpp on that sequence's logits: no Python loop over the
vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_cpp.llama_cpp import llama_context_p

    from schulki.inference.grammar import CompiledGrammar

from schulki.inference.grammar import GrammarGate
from schulki.inference.types import Sampling

PENALTY_LAST_N = 64
"""Tokens the repeat penalty looks back on (llama.cpp's and llama-cpp-python's default)."""


class SamplerChain:
    """A native sampler chain for one sequence; free it with close()."""

    def __init__(self, sampling: Sampling, n_vocab: int, history: Sequence[int] = (), grammar: CompiledGrammar | None = None):
        """``grammar``: every sampled token must fit it."""
        from schulki.runtime import llama_adapter as lc

        self._lc = lc
        params = lc.llama_sampler_chain_default_params()
        params.no_perf = True
        self._chain = lc.llama_sampler_chain_init(params)
        add = lambda sampler: lc.llama_sampler_chain_add(self._chain, sampler)  # noqa: E731 - the chain owns each sampler
        if sampling.logit_bias:
            biases = (lc.llama_logit_bias * len(sampling.logit_bias))(*sampling.logit_bias.items())
            add(lc.llama_sampler_init_logit_bias(n_vocab, len(sampling.logit_bias), biases))
        add(
            lc.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty
            )
        )
        # A grammar stands in front of the chain and sees every pick (grammar.py), so the chain never holds it.
        enough = 1 if sampling.temperature <= 0.0 else sampling.top_k
        self._gate = GrammarGate(grammar, n_vocab, enough) if grammar is not None else None
        if sampling.temperature <= 0.0:
            add(lc.llama_sampler_init_greedy())
        else:
            add(lc.llama_sampler_init_top_k(sampling.top_k))
            add(lc.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0.0:
                add(lc.llama_sampler_init_min_p(sampling.min_p, 1))
            add(lc.llama_sampler_init_temp(sampling.temperature))
            seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
            add(lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        # The penalty looks at the end of the prompt too, as llama.cpp's own server does.
        for token in history[-PENALTY_LAST_N:]:
            lc.llama_sampler_accept(self._chain, token)

    def sample(self, ctx: llama_context_p, index: int) -> int:
        """Pick the next token from the logits of batch position ``index`` (and remember it for the penalty)."""
        if self._gate is not None:
            return self._gate.sample(self._chain, ctx, index)
        return self._lc.llama_sampler_sample(self._chain, ctx, index)

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        if self._chain is not None:
            self._lc.llama_sampler_free(self._chain)
            self._chain = None
