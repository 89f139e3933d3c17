"""Prompt and generation speed of a loaded model, with the memory llama.cpp reports for it.

Prompt speed: one batch of ``prompt_tokens`` tokens of the reference text,
evaluated at once (as a chat's prompt is read). Generation speed: then
``generate_tokens`` tokens, one decode each, always the most likely next token
(the cost per token is the same whichever token is picked). Both are timed on
the wall clock after a short warm-up, so they show what a student waits for on
this machine.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from schulki.evaluation.model import EvalModel


@dataclass(frozen=True)
class Speed:
    prompt_tokens: int
    prompt_tokens_per_s: float
    generated_tokens: int
    generation_tokens_per_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def measure_speed(model: EvalModel, tokens: list[int] | np.ndarray, prompt_tokens: int = 256, generate_tokens: int = 32) -> Speed:
    """Time reading a prompt and generating tokens after it."""
    prompt_tokens = min(prompt_tokens, len(tokens), model.context - generate_tokens - 1)
    if prompt_tokens < 1 or generate_tokens < 1:
        raise ValueError("speed needs at least one prompt token and one generated token")
    prompt = [int(t) for t in tokens[:prompt_tokens]]
    model.clear()
    model.decode(prompt[:8], first_output=7)  # warm-up: first use of the weights, threads started
    model.clear()
    started = time.perf_counter()
    logits = model.decode(prompt, first_output=len(prompt) - 1)
    next_token = int(np.argmax(logits[-1]))
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(generate_tokens):
        logits = model.decode([next_token], first_output=0, start_pos=len(prompt) + i)
        next_token = int(np.argmax(logits[-1]))
    generate_s = time.perf_counter() - started
    return Speed(
        prompt_tokens=len(prompt),
        prompt_tokens_per_s=len(prompt) / prompt_s,
        generated_tokens=generate_tokens,
        generation_tokens_per_s=generate_tokens / generate_s,
    )
