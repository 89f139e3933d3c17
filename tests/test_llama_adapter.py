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


def test_sequences_in_one_batch_embed_as_they_do_alone(embedding_path):
    lc = llama_adapter
    llama, _ = lc.load_llama(embedding_path, embedding=True, n_ctx=128, n_batch=128, n_ubatch=128, n_threads=1)
    batch = lc.Batch(128)
    try:
        texts = [lc.model_of(llama).tokenize(t.encode(), add_bos=True, special=False) for t in ("Der Hund bellt.", "Photosynthese")]
        n_embd = llama.n_embd()

        def embed(sequences):
            lc.sequences_batch(batch, sequences)
            lc.clear_memory(llama.ctx)
            assert lc.decode(llama.ctx, batch) == 0
            return [lc.sequence_embedding(llama.ctx, i, n_embd) for i in range(len(sequences))]

        together = embed(texts)
        alone = [embed([t])[0] for t in texts]
        for a, b in zip(together, alone, strict=True):
            assert a.shape == (n_embd,)
            assert np.allclose(a, b, atol=1e-4)
        assert not np.allclose(together[0], together[1], atol=1e-2)
    finally:
        batch.close()
        llama.close()
