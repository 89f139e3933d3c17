"""Perplexity exactly as llama.cpp's llama-perplexity computes it, checked against the tool itself on the real default model."""

from __future__ import annotations

import re

import numpy as np
import pytest
from schulki.evaluation import data
from schulki.evaluation.model import EvalError, EvalModel
from schulki.evaluation.perplexity import Stats, reference_pass, text_windows, window_logits

from tests.eval_support import THREADS, default_model, llama_tools, run_llama_perplexity

CONTEXT = 256
WINDOWS = 6


@pytest.fixture(scope="module")
def model():
    with EvalModel(default_model(), context=CONTEXT, threads=THREADS) as loaded:
        yield loaded


def test_windows_are_cut_as_llama_perplexity_cuts_them(model):
    text = data.reference_text().text
    tokens = model.tokenize(text)
    windows = text_windows(model, text, CONTEXT)
    assert windows.shape == (len(tokens) // CONTEXT, CONTEXT)
    assert windows[0, 0] == model.bos and windows.ravel().tolist() == tokens[: windows.size]
    assert text_windows(model, text, CONTEXT, max_windows=3).shape == (3, CONTEXT)
    with pytest.raises(EvalError, match="mindestens 512"):
        text_windows(model, "Zu kurz.", CONTEXT)


def test_only_the_second_half_of_each_window_is_scored_with_bos_in_front(model, tmp_path):
    windows = text_windows(model, data.reference_text().text, CONTEXT, max_windows=2)
    logits = window_logits(model, windows[1])
    assert logits.shape == (CONTEXT // 2, model.n_vocab)
    stats = reference_pass(model, windows, tmp_path / "base.logits")
    assert stats.count == 2 * (CONTEXT - 1 - CONTEXT // 2)
    # A window decoded again after another gives the same logits: the KV cache is cleared between windows.
    again = np.array(window_logits(model, windows[1]))
    window_logits(model, windows[0])
    np.testing.assert_allclose(np.array(window_logits(model, windows[1])), again, rtol=1e-4, atol=1e-3)


def test_perplexity_is_within_one_percent_of_llama_perplexity(model):
    tools = llama_tools()
    if tools is None:
        pytest.skip("llama.cpp's llama-perplexity could not be built here (needs cmake and the shared build-llama-peer tool)")
    text_file = data.DATA.joinpath(data.TEXT_NAME)
    log = run_llama_perplexity(
        tools, "-m", str(default_model()), "-f", str(text_file), "-c", str(CONTEXT), "-b", str(CONTEXT), "--chunks", str(WINDOWS)
    )
    theirs = float(re.search(r"Final estimate: PPL = ([\d.]+)", log).group(1))
    ours = Stats()
    windows = text_windows(model, data.reference_text().text, CONTEXT, max_windows=WINDOWS)
    from schulki.evaluation.perplexity import score_window

    for window in windows:
        score_window(window_logits(model, window), window, ours)
    print(f"perplexity over {WINDOWS} windows of {CONTEXT}: schulki {ours.perplexity:.4f}, llama-perplexity {theirs:.4f}")
    assert abs(ours.perplexity - theirs) / theirs < 0.01
