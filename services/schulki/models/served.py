"""The names chat models are served under, and the short description a user reads about one.

Every inference node reports the name it serves under (``GetModelInfo.served_model``);
the gateway routes by it and ``/v1/models`` lists it. The name must stay the same
whichever node serves the model and however often it restarts, so it comes from
the file, not from the process: the catalog id and quant when the catalog knows
the file (``llama-3.1-8b-instruct-q4_k_m``), else the file name without ``.gguf``,
lowercased. ``inference.model_name`` overrides it (two files of one model, or a
name the school prefers).
"""

from __future__ import annotations

import re
from pathlib import Path

from schulki.models.catalog import Catalog, Model, load_catalog

DEMO_MODEL_IDS = frozenset({"gemma-3-270m"})
"""Catalog models that are only a demo: small base models whose answers are often nonsense."""
GERMAN_LABELS = {"good": "gut", "fair": "brauchbar", "weak": "schwach"}
_NAME = re.compile(r"[^a-z0-9._-]+")


def served_name(file_name: str, configured: str | None = None, catalog: Catalog | None = None) -> str:
    """The stable name a chat model file is served under."""
    if configured:
        return configured
    found = (catalog or load_catalog()).find_file(Path(file_name).name)
    if found is not None:
        model, entry = found
        return f"{model.id}-{entry.quant.lower()}"
    stem = Path(file_name).name.removesuffix(".gguf").lower()
    return _NAME.sub("-", stem).strip("-") or "model"


def catalog_model(name: str, catalog: Catalog | None = None) -> Model | None:
    """The catalog model a served name belongs to (``<id>-<quant>``), or None."""
    catalog = catalog or load_catalog()
    for model in catalog.models.values():
        for f in model.files:
            if name == f"{model.id}-{f.quant.lower()}":
                return model
    return None


def is_demo(name: str, file_name: str = "", catalog: Catalog | None = None) -> bool:
    """Whether a served model is the built-in demo model (by its name or its file)."""
    catalog = catalog or load_catalog()
    model = catalog_model(name, catalog)
    if model is None and file_name:
        found = catalog.find_file(Path(file_name).name)
        model = found[0] if found else None
    return model is not None and model.id in DEMO_MODEL_IDS


def _german_number(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


def describe(name: str, file_name: str = "", size_bytes: int = 0, tokens_per_s: float | None = None, catalog: Catalog | None = None) -> str:
    """One German line about a model: size, German, speed here when measured (for the chat tab's picker)."""
    catalog = catalog or load_catalog()
    model = catalog_model(name, catalog)
    if model is None and file_name:
        found = catalog.find_file(Path(file_name).name)
        model = found[0] if found else None
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
