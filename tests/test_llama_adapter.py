"""The llama-cpp-python adapter and the one GGUF file-type table, against the real default models."""

from __future__ import annotations

import numpy as np
import pytest
from schulki.config import Config
from schulki.models.defaults import chat_model_path, embeddings_model_path
from schulki.models.gguf import FILE_TYPES, file_type_name, model_from_gguf, read_metadata
from schulki.runtime import llama_adapter
from schulki.runtime.errors import ModelLoadError


@pytest.fixture(scope="module")
def chat_path():
    path = chat_model_path(Config())
    if not path.exists():
        pytest.skip(f"the default chat model is not prepared ({path}); run: .venv/bin/python -m schulki.models.defaults")
    return path


@pytest.fixture(scope="module")
def embedding_path():
    path = embeddings_model_path(Config())
    if not path.exists():
        pytest.skip(f"the default embedding model is not prepared ({path}); run: .venv/bin/python -m schulki.models.defaults")
    return path


@pytest.fixture(scope="module")
def q4_0_path(embedding_path, tmp_path_factory):
    """The F16 embedding model quantized to Q4_0 with llama.cpp's own quantizer: a file type the old GGUF reader did not know."""
    import llama_cpp

    target = tmp_path_factory.mktemp("q4_0") / "minilm-q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(embedding_path).encode(), str(target).encode(), params) == 0
    return target


def test_the_table_names_the_real_files_as_their_names_say(chat_path, embedding_path, q4_0_path):
    for path, quant in ((chat_path, "Q4_K_M"), (embedding_path, "F16"), (q4_0_path, "Q4_0")):
        assert file_type_name(read_metadata(path)["general.file_type"]) == quant
        assert model_from_gguf(path).files[0].quant == quant


def test_the_reader_and_llama_cpp_agree_on_the_quant(chat_path, q4_0_path):
    for path in (chat_path, q4_0_path):
        llama, _ = llama_adapter.load_llama(path, n_ctx=64, n_threads=1, embedding=path == q4_0_path)
        try:
            assert llama_adapter.llama_quant(llama) == model_from_gguf(path).files[0].quant
        finally:
            llama.close()


def test_unknown_and_missing_file_types_are_named_as_such():
    assert max(FILE_TYPES) + 1 not in FILE_TYPES
    assert file_type_name(max(FILE_TYPES) + 1) == f"ftype {max(FILE_TYPES) + 1}"
    assert file_type_name(None) == "unknown"


def test_only_the_named_llama_functions_are_reachable():
    assert llama_adapter.llama_decode is not None
    with pytest.raises(AttributeError, match="C_NAMES"):
        _ = llama_adapter.llama_model_quantize


def test_a_non_gguf_file_is_one_line_not_a_traceback(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF model file") as caught:
        llama_adapter.load_model(fake)
    assert "\n" not in str(caught.value)


def test_a_decoded_batch_gives_the_logits_the_greedy_sampler_picks_from(chat_path):
    """Batch, decode and logits_rows read llama.cpp's buffers right: the row's argmax is the greedy sampler's token."""
    lc = llama_adapter
    model, lines = lc.load_model(chat_path, gpu_layers=0)
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 64
    params.n_threads = params.n_threads_batch = 1
    ctx, context_lines = lc.new_context(model, params)
    batch = lc.Batch(64)
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    try:
        assert lc.buffer_sizes(lines + context_lines).weights > 100_000_000
        tokens = model.tokenize(b"Die Hauptstadt von Frankreich ist", add_bos=True, special=False)
        for i, token in enumerate(tokens):
            batch.put(i, token, i, 0, i >= len(tokens) - 2)
        batch.size = len(tokens)
        assert lc.decode(ctx, batch) == 0
        n_vocab = lc.llama_vocab_n_tokens(model.vocab)
        rows = np.array(lc.logits_rows(ctx, 2, n_vocab))
        assert rows.shape == (2, n_vocab) and np.isfinite(rows).all()
        assert int(rows[1].argmax()) == lc.llama_sampler_sample(chain, ctx, len(tokens) - 1)
        assert int(rows[0].argmax()) == lc.llama_sampler_sample(chain, ctx, len(tokens) - 2)
        lc.clear_memory(ctx)
    finally:
        lc.llama_sampler_free(chain)
        batch.close()
        lc.llama_free(ctx)
        model.close()


F16_UNIT_ROUNDOFF = 2.0**-11
"""Half of float16's machine epsilon: the relative error of rounding one value to float16."""

BATCH_TOLERANCE = 8 * F16_UNIT_ROUNDOFF
"""Largest relative difference ``|batched - alone| / |alone|`` (L2) allowed between a text's embedding in a batch and alone."""

EMBEDDING_TEXTS = (
    "Der Hund bellt.",
    "Photosynthese",
    "Die Photosynthese findet in den Chloroplasten der Pflanzenzellen statt.",
    "Wie hoch ist der Quetzalberg auf Nebelholm?",
    "Ein Vulkan entsteht, wenn Magma aus dem Erdinneren an die Oberfläche steigt und dort als Lava austritt.",
)


@pytest.mark.parametrize("flash_attn", [False, True], ids=["attention", "flash-attention"])
def test_sequences_in_one_batch_embed_as_they_do_alone(embedding_path, flash_attn):
    """A text's vector in a batch is its vector alone, up to float16 rounding; another text's vector is far from it.

    Why they differ at all: in a batch a sequence's tokens sit at other rows and
    KV cells, so llama.cpp's CPU kernels (the sgemm tiles, the SIMD lane-wise sums
    of softmax and of the mean-pooling matmul) add the same float32 terms in
    another order. That alone would be a few float32 roundings, about 1e-7. But
    the model's weights are F16, and ggml rounds the activations to F16 before
    every F16 matmul, as it does the K/V cache: a last-bit float32 difference that
    crosses an F16 rounding boundary becomes a whole F16 step (unit roundoff
    u16 = 2^-11 = 4.9e-4). So the two vectors differ by about one F16 rounding,
    and the difference depends on the CPU's kernels: a fixed 1e-4 absolute
    tolerance held here for two short texts (bit-identical) and failed on an AMD
    EPYC without AVX-512 (2.3e-4, cosine 0.99999994, so about 3.5e-4 relative).
    The vectors are not normalised (norms 3 to 7 here), so the bound is relative.

    Measured on this build (AVX-512, llamafile sgemm; llama-cpp-python 0.3.36,
    all-MiniLM-L6-v2 F16), these texts in every pair and all five together:
    at most 3.8e-4 relative (0.8 u16) without flash attention and 7.4e-4
    (1.5 u16) with it, whose F16 sums are another kernel; the same with 1 or 2
    threads, any n_ctx, and GGML_CPU_DISABLE_FUSION / GGML_CPU_TILED_MM set (the
    only GGML switches in this library). The CPU kernels cannot be switched at
    run time: the wheel holds one libggml-cpu built for its machine's ISA (no
    GGML_BACKEND_DL variants), so the AVX2 kernels were measured only through
    the report above. The bound, 8 u16 = 3.9e-3, is five times the worst seen
    with either attention kernel and 200 times below the smallest distance
    between two of these texts (0.81), so two sequences swapped or mixed fail it
    by far (checked below).
    """
    lc = llama_adapter
    llama, _ = lc.load_llama(embedding_path, embedding=True, n_ctx=256, n_batch=256, n_ubatch=256, n_threads=1, flash_attn=flash_attn)
    batch = lc.Batch(256)
    try:
        texts = [lc.model_of(llama).tokenize(t.encode(), add_bos=True, special=False) for t in EMBEDDING_TEXTS]
        n_embd = llama.n_embd()

        def embed(sequences):
            lc.sequences_batch(batch, sequences)
            lc.clear_memory(llama.ctx)
            assert lc.decode(llama.ctx, batch) == 0
            return [lc.sequence_embedding(llama.ctx, i, n_embd).astype(np.float64) for i in range(len(sequences))]

        def relative(a, b):
            return float(np.linalg.norm(a - b) / np.linalg.norm(b))

        alone = [embed([t])[0] for t in texts]
        for order in ((0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (1, 0), (0, 2)):
            for index, vector in zip(order, embed([texts[i] for i in order]), strict=True):
                assert vector.shape == (n_embd,)
                assert relative(vector, alone[index]) <= BATCH_TOLERANCE, (order, index, relative(vector, alone[index]))
        nearest_other = min(relative(alone[i], alone[j]) for i in range(len(texts)) for j in range(len(texts)) if i != j)
        assert nearest_other > 100 * BATCH_TOLERANCE, nearest_other
    finally:
        batch.close()
        llama.close()
