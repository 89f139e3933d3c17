"""The catalog names files the way their sources publish them, lists only files a source has, and marks as estimated
only sizes of files nobody found. (The sources cannot be reached from here: the patterns are those the uploaders use,
as model-facts.md and the model pages show them.)"""

from __future__ import annotations

import re

import pytest
from schulki.models.catalog import load_catalog

# How each uploader names a quant's file ({quant} as written in the name).
UPLOADER_PATTERNS = {
    "lm-kit/gemma-3-12b-instruct-gguf": r"gemma-3-it-12B-{quant}\.gguf",
    "cortexso/gemma3": r"gemma-3-12b-it-{quant_lower}\.gguf",
    "bartowski": r"[\w.-]+-{quant}\.gguf",
    "lmstudio-community": r"[\w.-]+-{quant}\.gguf",
    "ggml-org": r"[\w.-]+-{quant}\.gguf",
    "unsloth": r"[\w.-]+-{quant}\.gguf",
    "mradermacher": r"[\w.-]+\.{quant}\.gguf",
    "QuantFactory": r"[\w.-]+\.{quant}\.gguf",
}
# Files the catalog must not list, because their source does not have them.
SOURCE_LACKS = {"https://huggingface.co/gradjitta/ct2-whisper-large-v3-turbo": {"preprocessor_config.json"}}
# Files found at their source, with the size the model page prints (so not estimated).
FOUND = {("llama-3.1-8b-instruct", "Q3_K_M"): 4_020_000_000}


def _pattern(source: str) -> str | None:
    repo = source.removeprefix("https://huggingface.co/")
    return UPLOADER_PATTERNS.get(repo) or UPLOADER_PATTERNS.get(repo.split("/")[0])


ALL_CHAT_FILES = [(m.id, f) for m in load_catalog().of_kind("chat") if not m.test_only for f in m.files]
CHAT_FILES = [(m, f) for m, f in ALL_CHAT_FILES if _pattern(f.source)]


def test_nearly_every_chat_file_comes_from_an_uploader_whose_naming_is_known():
    assert len(CHAT_FILES) >= 0.95 * len(ALL_CHAT_FILES)


@pytest.mark.parametrize("model_id,entry", CHAT_FILES, ids=[f"{m}-{f.quant}" for m, f in CHAT_FILES])
def test_each_chat_file_is_named_as_its_uploader_names_it(model_id, entry):
    pattern = _pattern(entry.source)
    expected = pattern.format(quant=re.escape(entry.quant), quant_lower=re.escape(entry.quant.lower()))
    assert re.fullmatch(expected, entry.file), f"{model_id} {entry.quant}: {entry.file} is not how {entry.source} names it"


def test_the_gemma_3_12b_files_carry_their_published_names():
    gemma = load_catalog().model("gemma-3-12b-it")
    assert {f.quant: f.file for f in gemma.files} == {
        "Q8_0": "gemma-3-it-12B-Q8_0.gguf",
        "Q6_K": "gemma-3-it-12B-Q6_K.gguf",
        "Q5_K_M": "gemma-3-12b-it-q5_k_m.gguf",
        "Q4_K_M": "gemma-3-it-12B-Q4_K_M.gguf",
    }


def test_a_speech_model_lists_only_files_its_source_has():
    for model in load_catalog().of_kind("speech"):
        lacking = SOURCE_LACKS.get(model.files[0].source, set())
        assert not lacking & set(model.extra_files), f"{model.id} lists {lacking & set(model.extra_files)}, which its source lacks"


def test_files_that_exist_are_not_marked_estimated():
    catalog = load_catalog()
    for (model_id, quant), size in FOUND.items():
        entry = catalog.model(model_id).file_for(quant)
        assert not entry.estimated and entry.size_bytes == size, f"{model_id} {quant}"
