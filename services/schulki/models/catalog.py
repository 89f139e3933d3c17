"""The model catalog: which models a school can roll out, and the figures the planner needs.

The data lives in ``catalog.toml`` beside this module (read with the standard
library, so every image can read it). Each model carries its architecture
(layers, KV heads, head size, vocabulary, training context, the sliding window
where llama.cpp keeps one) and, per quant, the file name the school's mirror
serves it under, its size in bytes, its sha256 or None where no hash was
published, and where the admin fetches it once to fill the mirror.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
NO_HASH = "none published"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("chat", "embeddings", "speech")


class CatalogError(ValueError):
    """The catalog file, or a name looked up in it, is wrong; the message says which entry."""


@dataclass(frozen=True)
class ModelFile:
    """One downloadable file of a model: a quant of a GGUF model, or a speech model's weights."""

    quant: str
    file: str
    size_bytes: int
    sha256: str | None
    source: str
    size_exact: bool = False
    estimated: bool = False
    last_resort: bool = False


@dataclass(frozen=True)
class Model:
    """A model of the catalog with its architecture figures and its files, best quant first."""

    id: str
    name: str
    kind: str
    family: str
    parameters: int
    files: tuple[ModelFile, ...]
    layers: int = 0
    attention_heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    hidden: int = 0
    feed_forward: int = 0
    vocab: int = 0
    training_context: int = 0
    sliding_window: int = 0
    sliding_window_pattern: int = 0
    german: str = ""
    note: str = ""
    test_only: bool = False
    extra_files: tuple[str, ...] = ()
    extra_sha256: tuple[tuple[str, str], ...] = ()
    """(name, sha256) of extra_files whose hash is known (a speech model's config and tokenizer)."""
    query_prefix: str = ""
    """Embedding models: what the model was trained to see in front of a search query (multilingual-e5: "query: ")."""
    document_prefix: str = ""
    """Embedding models: what the model was trained to see in front of a passage (multilingual-e5: "passage: ")."""
    cross_lingual: bool = False
    fill_in_the_middle: bool = False
    """Chat models: a code model with fill-in-the-middle tokens, for editors (/v1/infill, a suffix on /v1/completions); never
    suggested in place of a school's chat model."""
    """Embedding models: a question in one language finds passages in another (English questions about German documents); the model to deploy where classes ask across languages."""

    @property
    def quants(self) -> list[str]:
        return [f.quant for f in self.files]

    def file_for(self, quant: str) -> ModelFile:
        """The file of one quant; CatalogError names the quants there are."""
        for f in self.files:
            if f.quant.lower() == quant.lower():
                return f
        raise CatalogError(f"{self.id} has no quant {quant}; it has {', '.join(self.quants)}")

    @property
    def global_layers(self) -> int:
        """Layers that attend to the whole context (all of them unless the model has a sliding window)."""
        if self.sliding_window and self.sliding_window_pattern:
            return self.layers // self.sliding_window_pattern
        return self.layers

    @property
    def feed_forward_size(self) -> int:
        """The feed-forward width; where the catalog has none, four times the hidden size (the usual ratio)."""
        return self.feed_forward or 4 * self.hidden


@dataclass(frozen=True)
class Catalog:
    """Every model of the catalog and the quant order."""

    models: dict[str, Model]
    quant_order: tuple[str, ...]
    last_resort: tuple[str, ...]
    bits_per_weight: dict[str, float] = field(default_factory=dict)
    quality_floor: str = ""
    """The lowest quant whose answers are good enough for a class; a CPU gets the fastest quant at or above it."""

    def model(self, model_id: str) -> Model:
        """A model by its id; CatalogError lists the ids of that kind when it is unknown."""
        try:
            return self.models[model_id]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise CatalogError(f"unknown model {model_id!r}; the catalog has {known}") from None

    def of_kind(self, kind: str) -> list[Model]:
        return [m for m in self.models.values() if m.kind == kind]

    def quant_rank(self, quant: str) -> int:
        """Higher is better: Q8_0 ranks above Q4_K_M, a last-resort quant below every standard one."""
        ladder = list(reversed(self.last_resort)) + list(reversed(self.quant_order))
        try:
            return ladder.index(quant) + 1
        except ValueError:
            return 0

    def find_file(self, file_name: str) -> tuple[Model, ModelFile] | None:
        """The model and file entry of a file name (as the mirror serves it), or None."""
        for model in self.models.values():
            for f in model.files:
                if f.file == file_name or (Path(f.file).name == file_name and model.kind != "speech"):
                    return model, f
        return None


def _model_file(model_id: str, raw: dict, last_resort: tuple[str, ...]) -> ModelFile:
    where = f"{model_id} {raw.get('quant', '?')}"
    for key in ("quant", "file", "size_bytes", "sha256", "source"):
        if key not in raw:
            raise CatalogError(f"catalog entry {where} lacks {key}")
    sha256 = raw["sha256"]
    if sha256 == NO_HASH:
        sha256 = None
    elif not _SHA256.match(sha256):
        raise CatalogError(f"catalog entry {where}: sha256 must be 64 hex digits or {NO_HASH!r}")
    if raw["size_bytes"] <= 0:
        raise CatalogError(f"catalog entry {where}: size_bytes must be positive")
    return ModelFile(
        quant=raw["quant"],
        file=raw["file"],
        size_bytes=int(raw["size_bytes"]),
        sha256=sha256,
        source=raw["source"],
        size_exact=bool(raw.get("size_exact", False)),
        estimated=bool(raw.get("estimated", False)),
        last_resort=raw["quant"] in last_resort,
    )


def _extra_sha256(model_id: str, extra_files: tuple[str, ...], hashes: dict) -> tuple[tuple[str, str], ...]:
    for name, sha256 in hashes.items():
        if name not in extra_files:
            raise CatalogError(f"catalog entry {model_id}: extra_sha256 names {name!r}, which is not one of extra_files")
        if not _SHA256.match(str(sha256)):
            raise CatalogError(f"catalog entry {model_id}: extra_sha256 of {name} must be 64 hex digits")
    return tuple(sorted(hashes.items()))


def parse_catalog(data: dict) -> Catalog:
    """Check and build the catalog from its parsed TOML."""
    quants = data.get("quants", {})
    order = tuple(quants.get("order", ()))
    last_resort = tuple(quants.get("last_resort", ()))
    models = {}
    for model_id, table in data.get("models", {}).items():
        raw = dict(table)  # a copy: files are popped off it
        if raw.get("kind") not in KINDS:
            raise CatalogError(f"catalog entry {model_id}: kind must be one of {', '.join(KINDS)}")
        files = tuple(_model_file(model_id, f, last_resort) for f in raw.pop("files", ()))
        if not files:
            raise CatalogError(f"catalog entry {model_id} has no files")
        rank = {q: i for i, q in enumerate(("F32", "F16", *order, *last_resort))}
        files = tuple(sorted(files, key=lambda f: rank.get(f.quant, len(rank))))
        raw["extra_files"] = tuple(raw.get("extra_files", ()))
        raw["extra_sha256"] = _extra_sha256(model_id, raw["extra_files"], raw.get("extra_sha256", {}))
        try:
            model = Model(id=model_id, files=files, **raw)
        except TypeError as error:
            raise CatalogError(f"catalog entry {model_id}: {error}") from None
        if model.kind != "speech":
            missing = [k for k in ("layers", "kv_heads", "head_dim", "hidden", "vocab", "training_context") if not getattr(model, k)]
            if missing:
                raise CatalogError(f"catalog entry {model_id} lacks {', '.join(missing)}")
        models[model_id] = model
    floor = quants.get("quality_floor", order[-1] if order else "")
    if floor and floor not in order:
        raise CatalogError(f"quants.quality_floor {floor!r} is not one of quants.order")
    return Catalog(
        models=models,
        quant_order=order,
        last_resort=last_resort,
        bits_per_weight=dict(quants.get("bits_per_weight", {})),
        quality_floor=floor,
    )


@cache
def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """The catalog from its TOML file (read once per process)."""
    with path.open("rb") as f:
        return parse_catalog(tomllib.load(f))
