"""The names chat models are served under, and the short description a user reads about one.

Every inference node reports the name it serves under (``GetModelInfo.served_model``);
the gateway routes by it and ``/v1/models`` lists it. The name must stay the same
whichever node serves the model, whichever quant its card got and however often it
restarts, so it comes from the file, not from the process: the catalog id when the
catalog knows the file or the file is named ``<catalog id>-<quant>.gguf``
(``llama-3.1-8b-instruct`` for the Q4_K_M on one node and the Q5_K_M on another, so
the gateway spreads a class over both), else the file name without ``.gguf``,
lowercased. ``inference.model_name`` overrides it (a name the school prefers).

Names from before, ``<catalog id>-<quant>`` (``llama-3.1-8b-instruct-q4_k_m``), still
work wherever a setting or a request names them: ``canonical_name`` turns them
into the catalog id.
"""

from __future__ import annotations

import re
from pathlib import Path

from schulki.models.catalog import Catalog, Model, load_catalog

DEMO_MODEL_IDS = frozenset({"gemma-3-270m"})
"""Catalog models that are only a demo: small base models whose answers are often nonsense."""
GERMAN_LABELS = {"good": "gut", "fair": "brauchbar", "weak": "schwach"}
_NAME = re.compile(r"[^a-z0-9._-]+")
_QUANT = re.compile(r"^(i?q[1-8](_[a-z0-9]+)*|f16|bf16|f32)$")
"""How llama.cpp spells a quant in a file name: q4_k_m, q8_0, iq3_xxs, f16 ..."""


def _catalog_id(file_name: str, catalog: Catalog) -> str | None:
    """The catalog chat model a file belongs to: by the catalog's own file name, else by ``<id>-<quant>.gguf``."""
    found = catalog.find_file(Path(file_name).name)
    if found is not None:
        return found[0].id
    return canonical_model(Path(file_name).name.removesuffix(".gguf").lower(), catalog)


def canonical_model(name: str, catalog: Catalog | None = None) -> str | None:
    """The catalog chat model id a name ``<id>`` or ``<id>-<quant>`` stands for, or None."""
    catalog = catalog or load_catalog()
    if name in catalog.models and catalog.models[name].kind == "chat":
        return name
    for model_id, model in catalog.models.items():
        if model.kind == "chat" and name.startswith(model_id + "-") and _QUANT.match(name[len(model_id) + 1 :]):
            return model_id
    return None


def canonical_name(name: str, catalog: Catalog | None = None) -> str:
    """The name a model is served under now: ``<id>-<quant>`` of a catalog model becomes ``<id>``; other names stay."""
    if not name:
        return name
    return canonical_model(name, catalog) or name


def served_name(file_name: str, configured: str | None = None, catalog: Catalog | None = None) -> str:
    """The stable name a chat model file is served under: the same for every quant of one catalog model."""
    catalog = catalog or load_catalog()
    if configured:  # an old roll-out wrote <id>-<quant> here: it serves under the model's one name now
        return canonical_name(configured, catalog)
    model_id = _catalog_id(file_name, catalog)
    if model_id is not None:
        return model_id
    stem = Path(file_name).name.removesuffix(".gguf").lower()
    return _NAME.sub("-", stem).strip("-") or "model"


def catalog_model(name: str, catalog: Catalog | None = None) -> Model | None:
    """The catalog model a served name belongs to (``<id>``, or ``<id>-<quant>`` from before), or None."""
    catalog = catalog or load_catalog()
    model_id = canonical_model(name, catalog)
    return catalog.models[model_id] if model_id else None


def is_demo(name: str, file_name: str = "", catalog: Catalog | None = None) -> bool:
    """Whether a served model is the built-in demo model (by its name or its file)."""
    catalog = catalog or load_catalog()
    model = catalog_model(name, catalog)
    if model is None and file_name:
        model_id = _catalog_id(file_name, catalog)
        model = catalog.models[model_id] if model_id else None
    return model is not None and model.id in DEMO_MODEL_IDS


def _german_number(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


def describe(name: str, file_name: str = "", size_bytes: int = 0, tokens_per_s: float | None = None, catalog: Catalog | None = None) -> str:
    """One German line about a model: size, German, speed here when measured (for the chat tab's picker)."""
    catalog = catalog or load_catalog()
    model = catalog_model(name, catalog)
    if model is None and file_name:
        model_id = _catalog_id(file_name, catalog)
        model = catalog.models[model_id] if model_id else None
    parts = []
    if model is not None:
        parts.append(model.name)
        if model.parameters:
            parts.append(_german_number(model.parameters / 1e9) + " Mrd. Parameter")
        if model.german:
            parts.append(f"Deutsch: {GERMAN_LABELS.get(model.german, model.german)}")
        if model.id in DEMO_MODEL_IDS:
            parts.append("nur ein kleines Demo-Modell")
    if size_bytes:
        parts.append(_german_number(size_bytes / 1e9) + " GB")
    if tokens_per_s:
        parts.append(f"hier etwa {tokens_per_s:.0f} Tokens/s")
    return " · ".join(parts) if parts else "Kein Eintrag im Modellkatalog"
