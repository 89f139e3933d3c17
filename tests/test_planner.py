"""The quant planner against what llama.cpp really allocates, its choices over many memory sizes, and `schulki plan`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from schulki.config import Config, InferenceConfig
from schulki.inference.fit_check import check_fits
from schulki.models.catalog import load_catalog
from schulki.models.defaults import chat_model_path, embeddings_model_path
from schulki.models.gguf import model_from_gguf
from schulki.models.planner import GiB, Machine, MiB, Workload, default_parallel, estimate, kv_cache_bytes, plan
from schulki.runtime.errors import StartupError
from schulki.runtime.llama_adapter import buffer_sizes, capture_llama_log

from tests.conftest import REPO_ROOT

# (context per sequence, parallel sequences, full-size SWA cache, flash attention, batch)
GEMMA_CASES = [
    (2048, 1, True, False, 512),
    (8192, 1, True, False, 512),
    (4096, 4, True, False, 512),
    (16384, 1, False, False, 512),
    (8192, 4, False, False, 512),
    (4096, 1, True, True, 256),
]


class LoadedModel:
    """A GGUF model loaded once through llama.cpp's C API, to create contexts of any shape and read their buffers."""

    def __init__(self, path):
        import llama_cpp

        self.llama_cpp = llama_cpp
        with capture_llama_log() as lines:
            self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        assert self.model, f"llama.cpp could not load {path}"
        self.weights = buffer_sizes(lines).weights

    def buffers(self, work: Workload, embeddings: bool = False):
        """What llama.cpp allocates for a context shaped like the workload (as the engines create it)."""
        params = self.llama_cpp.llama_context_default_params()
        params.n_ctx = work.context_length * work.parallel
        params.n_seq_max = work.parallel
        params.n_batch = params.n_ubatch = work.batch_size
        params.swa_full = work.full_swa_cache
        params.flash_attn_type = 1 if work.flash_attention else 0
        params.n_threads = params.n_threads_batch = 1
        params.embeddings = embeddings
        params.kv_unified = embeddings  # as llama-cpp-python does for embedding models
        with capture_llama_log() as lines:
            ctx = self.llama_cpp.llama_init_from_model(self.model, params)
        assert ctx, "llama.cpp could not create the context"
        self.llama_cpp.llama_free(ctx)
        sizes = buffer_sizes(lines)
        sizes.weights = self.weights
        return sizes

    def close(self):
        self.llama_cpp.llama_model_free(self.model)


@pytest.fixture(scope="module")
def gemma():
    loaded = LoadedModel(chat_model_path(Config()))
    yield loaded
    loaded.close()


def assert_close(estimated: int, measured: int, tolerance: float, what: str):
    error = abs(estimated - measured) / measured
    assert error <= tolerance, f"{what}: estimated {estimated / MiB:.1f} MiB, llama.cpp {measured / MiB:.1f} MiB ({error:.1%} off)"


@pytest.mark.parametrize("context,parallel,swa_full,flash,batch", GEMMA_CASES)
def test_the_estimate_for_gemma_is_within_ten_percent_of_llama_cpp(gemma, context, parallel, swa_full, flash, batch):
    catalog = load_catalog()
    model = catalog.model("gemma-3-270m")
    work = Workload(context_length=context, parallel=parallel, batch_size=batch, full_swa_cache=swa_full, flash_attention=flash)
    measured = gemma.buffers(work)
    est = estimate(model, model.file_for("Q4_K_M"), work, "cpu")
    print(
        f"gemma-3-270m ctx {context} x{parallel} swa_full={swa_full} fa={flash} batch {batch}: "
        f"estimate {est.llama_total / MiB:.1f} MiB, llama.cpp {measured.total / MiB:.1f} MiB "
        f"(KV {est.kv_cache / MiB:.1f}/{measured.kv_cache / MiB:.1f}, compute {est.compute / MiB:.1f}/{measured.compute / MiB:.1f})"
    )
    assert_close(est.llama_total, measured.total, 0.10, "total")
    assert_close(est.kv_cache, measured.kv_cache, 0.02, "KV cache")
    assert_close(est.compute, measured.compute, 0.10, "compute buffer")


def test_the_catalog_figures_of_gemma_match_its_gguf_file():
    catalog_model = load_catalog().model("gemma-3-270m")
    from_file = model_from_gguf(chat_model_path(Config()))
    for figure in (
        "layers",
        "attention_heads",
        "kv_heads",
        "head_dim",
        "hidden",
        "feed_forward",
        "vocab",
        "training_context",
        "sliding_window",
        "sliding_window_pattern",
    ):
        assert getattr(catalog_model, figure) == getattr(from_file, figure), figure
    assert catalog_model.files[0].size_bytes == from_file.files[0].size_bytes


def test_the_sliding_window_only_shrinks_the_local_layers():
    model = load_catalog().model("gemma-3-12b-it")
    full = kv_cache_bytes(model, Workload(32768, full_swa_cache=True))
    windowed = kv_cache_bytes(model, Workload(32768, full_swa_cache=False))
    per_token_layer = 2 * model.kv_heads * model.head_dim * 2
    assert full == per_token_layer * model.layers * 32768
    assert windowed == per_token_layer * (model.global_layers * 32768 + (model.layers - model.global_layers) * (1024 + 512))


def test_the_estimate_for_the_embedding_model_is_within_ten_percent_of_llama_cpp():
    path = embeddings_model_path(Config())
    loaded = LoadedModel(path)
    try:
        model = load_catalog().model("all-minilm-l6-v2")
        for batch in (512, 256):
            work = Workload(context_length=batch, batch_size=batch)
            measured = loaded.buffers(work, embeddings=True)
            est = estimate(model, model.files[0], work, "cpu")
            print(f"all-minilm-l6-v2 batch {batch}: estimate {est.llama_total / MiB:.1f} MiB, llama.cpp {measured.total / MiB:.1f} MiB")
            assert measured.kv_cache == est.kv_cache == 0
            assert_close(est.llama_total, measured.total, 0.10, "total")
    finally:
        loaded.close()


@pytest.mark.parametrize("context,parallel,swa_full", [(3000, 1, False), (2048, 4, False), (1024, 16, False), (2048, 2, True)])
def test_the_estimate_matches_what_the_inference_engine_reports(context, parallel, swa_full):
    from schulki.inference.engine import ChatEngine
    from schulki.inference.fit_check import workload

    config = InferenceConfig(context_length=context, threads=1, parallel_sequences=parallel, full_swa_cache=swa_full)
    engine = ChatEngine(chat_model_path(Config()), config)
    info = engine.load()
    try:
        model = model_from_gguf(engine.model_path)
        est = estimate(model, model.files[0], workload(config), "cpu")
        print(
            f"engine ctx {context} x{parallel} swa_full={swa_full}: KV {est.kv_cache / MiB:.1f}/{info.buffers.kv_cache / MiB:.1f} MiB, "
            f"total {est.llama_total / MiB:.1f}/{info.buffers.total / MiB:.1f} MiB"
        )
        assert info.parallel_sequences == parallel
        assert_close(est.kv_cache, info.buffers.kv_cache, 0.02, "engine KV cache")
        assert_close(est.llama_total, info.buffers.total, 0.10, "engine total")
    finally:
        engine.close()


def test_the_default_parallel_sequences_follow_the_node_kind_and_memory():
    catalog = load_catalog()
    gemma, qwen, llama = (catalog.model(m) for m in ("gemma-3-270m", "qwen3-4b", "llama-3.1-8b-instruct"))
    swa_off = Workload(4096, 1, full_swa_cache=False)
    assert default_parallel(gemma, Machine("cpu", 16 * GiB), swa_off) == 16
    assert default_parallel(qwen, Machine("cpu", 16 * GiB), Workload(4096, 1)) == 4
    assert default_parallel(gemma, Machine("apple", 16 * GiB), swa_off) == 8
    flash = Workload(4096, 1, flash_attention=True)
    by_gpu = [default_parallel(llama, Machine("gpu", gib * GiB), flash) for gib in (8, 12, 16, 24, 48)]
    assert by_gpu == sorted(by_gpu) and by_gpu[0] == 4 and by_gpu[-1] == 16, by_gpu
    for gib, parallel in zip((8, 12, 16, 24, 48), by_gpu, strict=True):
        # All sequences' KV caches stay within a quarter of the memory.
        assert parallel * kv_cache_bytes(llama, flash) <= gib * GiB / 4
    assert default_parallel(llama, Machine("gpu", 8 * GiB), Workload(32768, 1, flash_attention=True)) == 1


def _rank(catalog, p):
    # Every layer on the device first, then the asked workload, then the quant (a CPU's quant is fixed by speed).
    quality = 0 if p.kind == "cpu" else catalog.quant_rank(p.quant)
    return (p.fits, p.kind == "cpu" or p.gpu_layers >= p.layers, not p.last_resort, -p.workload_steps, quality, p.gpu_layers)


@pytest.mark.parametrize(
    "model_id,kind,work",
    [
        ("llama-3.1-8b-instruct", "gpu", Workload(8192, 2, flash_attention=True)),
        ("aya-23-35b", "gpu", Workload(8192, 1)),
        ("gemma-3-12b-it", "gpu", Workload(32768, 1, full_swa_cache=False)),
        ("qwen3-4b", "cpu", Workload(4096, 1)),
        ("phi-3-medium-128k-instruct", "apple", Workload(16384, 2)),
    ],
)
def test_more_memory_never_gets_a_worse_quant(model_id, kind, work):
    catalog = load_catalog()
    previous = None
    for mib in range(1024, 80 * 1024, 64):
        p = plan(model_id, Machine(kind, mib * MiB), work, catalog=catalog)
        rank = _rank(catalog, p)
        if previous is not None:
            assert rank >= previous[1], (
                f"{model_id} on {kind}: {mib} MiB gets {p.quant}/{p.gpu_layers} layers, {previous[0]} MiB got better"
            )
        previous = (mib, rank)
    assert (
        p.fits
        and p.quant == ("Q4_K_M" if kind == "cpu" else "Q8_0")
        and p.gpu_layers == (0 if kind == "cpu" else catalog.model(model_id).layers)
    )


def test_a_model_that_does_not_fit_names_a_smaller_one():
    p = plan("aya-23-35b", Machine("gpu", 12 * GiB), Workload(8192, 1, flash_attention=True))
    assert p.suggestion and load_catalog().model(p.suggestion).parameters < 35e9
    assert p.suggestion in p.reason and p.gpu_layers < p.layers
    # Every layer on the GPU with a lighter KV cache beats offloading layers to the CPU.
    tight = plan("llama-3.1-8b-instruct", Machine("gpu", 6 * GiB), Workload(4096, 1, flash_attention=True))
    assert tight.quant == "Q4_K_M" and tight.gpu_layers == 32 and tight.kv_cache_type == "q8_0"


def test_the_start_up_check_refuses_what_clearly_does_not_fit(tmp_path):
    config = InferenceConfig(context_length=32768, parallel_sequences=64, full_swa_cache=True)
    with pytest.raises(StartupError, match="parallel"):
        check_fits(config, chat_model_path(Config()), Machine("cpu", 8 * GiB), limit=8 * GiB)
    assert check_fits(InferenceConfig(), chat_model_path(Config()), Machine("cpu", 8 * GiB), limit=8 * GiB).fits


def test_schulki_plan_prints_every_host_of_the_example_inventory():
    run = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "plan", "-i", str(REPO_ROOT / "inventory" / "example")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, "the example's lab PC without AVX2 is refused (tests/test_deploy_hardware.py)"
    print(run.stdout)
    lines = run.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["host", "kind", "model", "quant", "context"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "has no AVX2" in rows.pop("pc-raum014-01.schule.example")
    assert set(rows) == {
        "ki-gateway.schule.example",
        "ki-gpu08.schule.example",
        "ki-gpu12.schule.example",
        "ki-gpu16.schule.example",
        "ki-gpu24.schule.example",
        "pc-raum112-01.schule.example",
        "pc-raum112-02.schule.example",
    }
    for row in rows.values():
        assert any(q in row for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")), row
        assert "fits" in row or "layers" in row, row
    assert rows["ki-gpu08.schule.example"].split()[5] == "all", "the 8 GB card keeps every layer with a lighter workload"
    assert "mistral-small-3.1-24b-instruct" in rows["ki-gpu24.schule.example"]
    quants = [rows[f"ki-gpu{n}.schule.example"].split()[3] for n in ("08", "12", "16")]
    ladder = load_catalog().quant_rank
    assert ladder(quants[0]) <= ladder(quants[1]) <= ladder(quants[2])
