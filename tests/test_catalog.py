"""The model catalog: the design's models are there, every figure the planner needs is set, no hash is made up."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from schulki.config import Config
from schulki.models.catalog import CATALOG_FILE, CatalogError, load_catalog, parse_catalog
from schulki.models.defaults import chat_model_path, models_dir, sha256_of

from tests.conftest import REPO_ROOT

DESIGN_MODELS = [
    "phi-3-mini-4k-instruct",
    "llama3-discoleo-instruct-8b",
    "occiglot-7b-eu5-instruct",
    "aya-23-8b",
    "phi-3-medium-128k-instruct",
    "aya-23-35b",
]
MODEL_FACTS = REPO_ROOT.parent / "shared" / "model-facts.md"


def test_the_design_models_and_current_german_models_are_in_the_catalog():
    catalog = load_catalog()
    for model_id in DESIGN_MODELS:
        assert catalog.model(model_id).kind == "chat"
    current = [m for m in catalog.of_kind("chat") if m.id not in DESIGN_MODELS and not m.test_only and m.german == "good"]
    assert len(current) >= 6
    assert {"multilingual-e5-large", "bge-m3"} <= {m.id for m in catalog.of_kind("embeddings")}
    assert catalog.of_kind("speech")


def test_every_chat_model_has_the_four_standard_quants_best_first():
    catalog = load_catalog()
    for model in catalog.of_kind("chat"):
        if model.test_only:
            continue
        standard = [q for q in model.quants if q in catalog.quant_order]
        assert standard == list(catalog.quant_order), model.id
        for f in model.files:
            assert f.last_resort == (f.quant in catalog.last_resort)
        assert model.quants[: len(standard)] == standard, "last-resort quants come after the standard ones"
        sizes = [model.file_for(q).size_bytes for q in standard]
        assert sizes == sorted(sizes, reverse=True), f"{model.id}: a better quant must be a bigger file"
        assert model.layers and model.kv_heads and model.head_dim and model.vocab and model.training_context


def test_file_names_are_unique_so_the_mirror_can_serve_them_by_name():
    names = [f.file for m in load_catalog().models.values() for f in m.files]
    assert len(names) == len(set(names))


@pytest.mark.skipif(not MODEL_FACTS.exists(), reason="../shared/model-facts.md is not beside this checkout")
def test_every_hash_in_the_catalog_is_one_that_was_published():
    published = set(re.findall(r"\b[0-9a-f]{64}\b", MODEL_FACTS.read_text()))
    published.add("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")  # checked by the gemma PyPI package
    # The default embedding and speech models are put together here from PyPI packages (no hub publishes these exact
    # files): their pins are the hashes of what the packages give, computed from the prepared files.
    root = models_dir(Config())
    published |= {sha256_of(root / name) for name in ("all-minilm-l6-v2-f16.gguf", "faster-whisper-base/model.bin")}
    hashes = [f.sha256 for m in load_catalog().models.values() for f in m.files if f.sha256]
    assert len(hashes) >= 10
    assert set(hashes) <= published


def test_the_default_chat_model_has_the_hash_and_size_the_catalog_gives():
    entry = load_catalog().model("gemma-3-270m").files[0]
    path = chat_model_path(Config())
    assert path.name == entry.file
    assert path.stat().st_size == entry.size_bytes
    assert sha256_of(path) == entry.sha256


def test_a_made_up_hash_or_a_missing_figure_is_refused():
    data = tomllib.loads(CATALOG_FILE.read_text())
    broken = {"quants": data["quants"], "models": {"x": dict(data["models"]["qwen3-4b"])}}
    broken["models"]["x"]["files"] = [dict(broken["models"]["x"]["files"][0], sha256="abc")]
    with pytest.raises(CatalogError, match="64 hex digits"):
        parse_catalog(broken)
    del broken["models"]["x"]["layers"]
    broken["models"]["x"]["files"] = data["models"]["qwen3-4b"]["files"]
    with pytest.raises(CatalogError, match="lacks layers"):
        parse_catalog(broken)
    with pytest.raises(CatalogError, match="unknown model"):
        load_catalog().model("gpt-5")


def test_the_catalog_ships_inside_the_package():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "catalog.toml" in pyproject["tool"]["setuptools"]["package-data"]["schulki.models"]
    assert Path(CATALOG_FILE).parent.name == "models"


def test_the_catalog_names_the_multilingual_embedding_models_for_cross_lingual_search():
    catalog = load_catalog()
    cross = {m.id for m in catalog.models.values() if m.cross_lingual}
    assert "multilingual-e5-base" in cross
    for model_id in cross:
        assert catalog.models[model_id].kind == "embeddings" and catalog.models[model_id].german == "good"
    assert not catalog.models["all-minilm-l6-v2"].cross_lingual  # English-only
    assert "cross-lingual" in catalog.models["multilingual-e5-base"].note
