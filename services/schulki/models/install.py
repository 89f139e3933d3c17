"""``schulki models add FILE.gguf``: check a chat model file from a USB stick or the school's mirror and make it available.

A file is accepted only when

- its GGUF header reads to the end (``gguf.read_metadata``) and its tensor
  table says where every tensor lies: a file shorter than its last tensor is
  truncated (a copy that broke off);
- its architecture is one the pinned llama.cpp loads, and it is a chat model
  (an embedding model belongs to the embeddings service);
- where the catalog knows the file (by name), its sha256 is the catalog's.

It is then copied into the models folder (as ``.partial``, renamed when
complete, so a half-copied file never looks like a model) and recorded in
``installed-chat-models.json`` there. ``schulki up`` watches that list and
starts one inference process per new entry; the gateway learns the new node
from its nodes file and lists the model without a restart. No model hub is
ever contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from schulki.models.catalog import Catalog, load_catalog
from schulki.models.gguf import ENCODER_ARCHS, GGUFError, HeaderReader
from schulki.models.served import served_name

REGISTRY_FILE = "installed-chat-models.json"
"""The list of added chat models in the models folder; ``schulki up`` serves every entry."""

LLAMA_CPP_ARCHITECTURES = frozenset(
    (
        "clip llama llama4 deci falcon grok gpt2 gptj gptneox mpt baichuan starcoder refact bert modern-bert nomic-bert "
        "nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 eurobert bloom stablelm qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe "
        "qwen3next qwen3vl qwen3vlmoe qwen35 qwen35moe qwen4exp phi2 phi3 phimoe plamo plamo2 plamo3 codeshell orion internlm2 "
        "minicpm minicpm3 gemma gemma2 gemma3 gemma3n gemma4 gemma4-assistant gemma-embedding starcoder2 mamba mamba2 maple "
        "jamba falcon-h1 xverse command-r cohere2 cohere2moe dbrx olmo olmo2 olmoe muse-glimmer openelm arctic deepseek "
        "deepseek2 deepseek2-ocr deepseek32 deepseek4 chatglm glm4 glm4moe glm-dsa bitnet t5 t5encoder jais jais2 nemotron "
        "nemotron_h nemotron_h_moe exaone exaone4 exaone-moe rwkv6 rwkv6qwen2 rwkv7 arwkv7 granite granitemoe granitehybrid "
        "graniteswitch granite_swa chameleon wavtokenizer-dec plm bailingmoe bailingmoe2 bailingmoe3 dots1 dots3note arcee "
        "afmoe laguna ernie4_5 ernie4_5-moe hunyuan-moe hunyuan-dense hunyuan_vl hy_v3 hy_v4 smollm3 gpt-oss lfm2 lfm2moe dream "
        "smallthinker llada llada-moe seed_oss grovemoe apertus minimax-01 hrm_text minimax-m2 minimax-m3 cogvlm rnd1 "
        "pangu-embedded mistral3 eagle3 dflash mistral4 paddleocr mimo2 step35 spark2_5 llama-embed maincoder kimi-linear "
        "kimi-k3 glm5-next talkie mellum nanbeige qwen3tts pockettts"
    ).split()
)
"""Architectures the llama.cpp inside llama-cpp-python 0.3.36 loads (LLM_ARCH_NAMES in its src/llama-arch.cpp)."""
NOT_CHAT = ENCODER_ARCHS | {"clip", "wavtokenizer-dec", "gemma-embedding", "llama-embed", "eagle3", "dflash", "qwen3tts", "pockettts"}
"""Loadable architectures that are no chat model: encoders, vision towers, speech and draft models."""
GGML_BLOCKS = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
}
"""ggml tensor types: (values per block, bytes per block), from ggml.c's type traits. Tensors of other types are checked by their offset only."""


class ModelCheckError(ValueError):
    """The file cannot become a chat model here; the message is the one-line reason."""


@dataclass(frozen=True)
class InstalledModel:
    """One entry of the registry: the name users see and the file in the models folder."""

    name: str
    file: str
    sha256: str
    architecture: str
    size_bytes: int
    added_at: float


GGML_MAX_DIMS = 4
"""ggml.h: no tensor has more dimensions."""


def _data_end(path: Path) -> tuple[dict, int]:
    """The header's metadata and the byte where the last tensor ends, from the tensor table."""
    with path.open("rb") as f:
        header = HeaderReader(f)
        tensors, metadata = header.metadata()
        end = 0
        for _ in range(tensors):
            header.string()
            dimensions = header.read("<I")
            if dimensions > GGML_MAX_DIMS:
                raise GGUFError(f"the GGUF header is damaged (a tensor of {dimensions} dimensions)")
            dims = [header.read("<Q") for _ in range(dimensions)]
            kind, offset = header.read("<I"), header.read("<Q")
            values = 1
            for d in dims:
                values *= d
            block, size = GGML_BLOCKS.get(kind, (1, 0))
            end = max(end, offset + values // block * size)
        alignment = int(metadata.get("general.alignment", 32) or 32)
        start = -(-header.pos // alignment) * alignment
    return metadata, start + end


def sha256_of(path: Path) -> str:
    from schulki.models.defaults import sha256_of as digest

    return digest(path)


def check_gguf(path: Path, catalog: Catalog | None = None) -> tuple[dict, str]:
    """Check a chat model file; return its metadata and sha256, or raise ModelCheckError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise ModelCheckError(f"{path}: keine Datei (not a file)")
    size = path.stat().st_size
    try:
        metadata, needed = _data_end(path)
    except GGUFError as error:
        raise ModelCheckError(f"{path.name}: keine lesbare GGUF-Datei ({error})") from None
    except (struct.error, UnicodeDecodeError, OverflowError, MemoryError):
        raise ModelCheckError(f"{path.name}: keine lesbare GGUF-Datei (the header is damaged)") from None
    if size < needed:
        raise ModelCheckError(f"{path.name}: die Datei ist abgeschnitten (truncated: {size} bytes, the header needs at least {needed})")
    arch = str(metadata.get("general.architecture", ""))
    if arch not in LLAMA_CPP_ARCHITECTURES:
        raise ModelCheckError(
            f"{path.name}: die Architektur {arch or '(none)'!r} kann llama.cpp hier nicht laden (architecture not supported)"
        )
    if arch in NOT_CHAT:
        raise ModelCheckError(f"{path.name}: {arch!r} ist kein Chat-Modell (not a chat model: embeddings, vision or speech)")
    digest = sha256_of(path)
    found = (catalog or load_catalog()).find_file(path.name)
    if found is not None and found[1].sha256 and found[1].sha256 != digest:
        raise ModelCheckError(
            f"{path.name}: die Prüfsumme stimmt nicht mit dem Katalog überein (sha256 {digest[:16]}… differs from the catalog's "
            f"{found[1].sha256[:16]}…); die Datei ist beschädigt oder eine andere"
        )
    return metadata, digest


def registry_path(models_dir: Path) -> Path:
    return Path(models_dir) / REGISTRY_FILE


def installed(models_dir: Path) -> list[InstalledModel]:
    """The chat models added to this machine, oldest first."""
    path = registry_path(models_dir)
    if not path.exists():
        return []
    return [InstalledModel(**entry) for entry in json.loads(path.read_text(encoding="utf-8"))]


def _write_registry(models_dir: Path, entries: list[InstalledModel]) -> None:
    path = registry_path(models_dir)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps([asdict(e) for e in entries], indent=2), encoding="utf-8")
    partial.replace(path)  # readers never see half a list


def add_model(source: Path, models_dir: Path, name: str | None = None, catalog: Catalog | None = None) -> InstalledModel:
    """Check ``source``, copy it into ``models_dir`` and record it; ModelCheckError says why not."""
    source = Path(source)
    metadata, digest = check_gguf(source, catalog)
    name = served_name(source.name, name, catalog)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    entries = installed(models_dir)
    for entry in entries:
        if entry.name == name and entry.sha256 != digest:
            raise ModelCheckError(
                f"{source.name}: den Namen {name!r} trägt schon ein anderes Modell (name taken; choose another with --name)"
            )
        if entry.name == name:
            return entry  # the same file under the same name: nothing to do
    target = models_dir / source.name
    if target.exists() and sha256_of(target) != digest:
        raise ModelCheckError(
            f"{source.name}: im Modellordner liegt schon eine andere Datei dieses Namens (a different file of this name exists)"
        )
    if not target.exists():
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    entry = InstalledModel(
        name=name,
        file=target.name,
        sha256=digest,
        architecture=str(metadata.get("general.architecture", "")),
        size_bytes=target.stat().st_size,
        added_at=time.time(),
    )
    _write_registry(models_dir, [*entries, entry])
    return entry
