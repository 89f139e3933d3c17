"""Lower-bit variants of the default model, made with llama-cpp-python's own quantizer, cost quality: measured on the real files.

The shipped Q4_K_M is requantized to Q3_K_S and Q2_K (llama_model_quantize with
allow_requantize). Each variant must show a higher perplexity, a mean KLD above
the source's (which is the reference, 0) and a lower top-token agreement than
the Q4_K_M it was made from. No order among the variants themselves is assumed
(with llama.cpp's own tools the requantized Q3_K_S came out worse than Q2_K).
"""

from __future__ import annotations

import re

import pytest
from schulki.evaluation import data
from schulki.evaluation.model import EvalModel
from schulki.evaluation.perplexity import compare_pass, reference_pass, text_windows
from schulki.evaluation.runner import EvalOptions, by_precision, evaluate, quant_of

from tests.eval_support import THREADS, llama_tools, run_llama_perplexity, variants

CONTEXT = 256
WINDOWS = 4


@pytest.fixture(scope="module")
def files():
    return variants()


@pytest.fixture(scope="module")
def records(files):
    options = EvalOptions(context=CONTEXT, windows=WINDOWS, question_limit=0, speed=False, threads=THREADS, host="test")
    # given in no particular order: the highest-precision file becomes the reference
    return {r["quant"]: r for r in evaluate([files["Q2_K"], files["Q4_K_M"], files["Q3_K_S"]], options)}


def test_the_quantizer_made_the_quants_it_was_asked_for(files):
    assert {quant: quant_of(path) for quant, path in files.items()} == {"Q4_K_M": "Q4_K_M", "Q3_K_S": "Q3_K_S", "Q2_K": "Q2_K"}
    assert by_precision([files["Q2_K"], files["Q3_K_S"], files["Q4_K_M"]]) == [files["Q4_K_M"], files["Q3_K_S"], files["Q2_K"]]


def test_each_lower_bit_variant_costs_quality_against_its_source(records):
    source = records["Q4_K_M"]
    assert source["is_reference"] and source["mean_kld"] == 0.0 and source["same_top_percent"] == 100.0
    for quant in ("Q3_K_S", "Q2_K"):
        variant = records[quant]
        print(
            f"{quant}: PPL {variant['perplexity']:.2f} (Q4_K_M {source['perplexity']:.2f}), "
            f"mean KLD {variant['mean_kld']:.4f}, same top {variant['same_top_percent']:.1f} %"
        )
        assert variant["reference_file"] == source["file"]
        assert variant["perplexity"] > source["perplexity"]
        assert variant["mean_kld"] > source["mean_kld"]
        assert variant["same_top_percent"] < source["same_top_percent"]
        assert variant["text"]["tokens_scored"] == source["text"]["tokens_scored"] == WINDOWS * (CONTEXT - 1 - CONTEXT // 2)


def test_kl_divergence_agrees_with_llama_perplexity_reading_the_same_file(files, tmp_path):
    """Our reference file is in llama.cpp's own format: its tool reads it and must report the same mean KLD and same-top share."""
    tools = llama_tools()
    if tools is None:
        pytest.skip("llama.cpp's llama-perplexity could not be built here (needs cmake and the shared build-llama-peer tool)")
    base = tmp_path / "q4.logits"
    with EvalModel(files["Q4_K_M"], context=CONTEXT, threads=THREADS) as model:
        reference_pass(model, text_windows(model, data.reference_text().text, CONTEXT, WINDOWS), base)
    with EvalModel(files["Q2_K"], context=CONTEXT, threads=THREADS) as model:
        ours = compare_pass(model, base)
    # Flash attention off, as schulki loads the model: then both compute the same logits, and the same figures.
    log = run_llama_perplexity(
        tools,
        "-m",
        str(files["Q2_K"]),
        "--kl-divergence-base",
        str(base),
        "--kl-divergence",
        "-c",
        str(CONTEXT),
        "-b",
        str(CONTEXT),
        "-fa",
        "off",
    )
    kld = float(re.search(r"Mean\s+KLD:\s+([\d.]+)", log).group(1))
    top = float(re.search(r"Same top p:\s+([\d.]+)", log).group(1))
    print(
        f"Q2_K against Q4_K_M: mean KLD schulki {ours.mean_kld:.5f}, llama-perplexity {kld:.5f}; "
        f"same top {ours.same_top_percent:.2f} % / {top:.2f} %"
    )
    assert abs(ours.mean_kld - kld) / kld < 1e-3
    assert abs(ours.same_top_percent - top) < 0.01
