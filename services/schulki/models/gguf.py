"""Read the architecture of a GGUF file without loading it, so the planner can check a model before llama.cpp does.

Only the header's key/value pairs are read (the tensors are skipped), which
takes a fraction of a second even for a 20 GB file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from schulki.models.catalog import Model, ModelFile

GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
ENCODER_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "modern-bert", "neo-bert", "t5encoder"}
"""Architectures llama.cpp runs as encoders: embedding models with no KV cache."""
SWA_PATTERNS = {"gemma3": 6, "gemma2": 2, "cohere2": 4}
"""Every n-th layer is global in these families; llama.cpp keeps a sliding window only for them."""
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
"""llama.cpp's enum llama_ftype (llama.h), as stored in the GGUF key general.file_type: the one table of quant names."""


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands; the message says why."""


def file_type_name(file_type: object) -> str:
    """The quant name of a general.file_type value, e.g. 15 -> "Q4_K_M"; "ftype N" for a type this table lacks."""
    if file_type is None or not str(file_type).lstrip("-").isdigit():
        return "unknown"
    return FILE_TYPES.get(int(str(file_type)), f"ftype {file_type}")


def quant_name(metadata: dict[str, str], description: str = "") -> str:
    """The quant of a loaded model from llama.cpp's metadata strings, else from its description ("gemma3 270M Q4_K - Medium")."""
    file_type = metadata.get("general.file_type")
    if file_type is not None and file_type.lstrip("-").isdigit():
        return file_type_name(file_type)
    return description.split(" ", 2)[-1] if description else "unknown"


def check_gguf_file(path: Path) -> None:
    """Raise ValueError with a one-line reason when path is not a readable GGUF file."""
    if not path.exists():
        raise ValueError(f"model file not found: {path}")
    if not path.is_file():
        raise ValueError(f"model path is not a file: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"not a GGUF model file (starts with {magic!r}, expected {GGUF_MAGIC!r}): {path}")


_U64 = struct.Struct("<Q")


class HeaderReader:
    """A cursor over the start of a GGUF file, read in growing blocks: every read is checked against the end of the file.

    A file of a 262,144-token vocabulary (Gemma 3) holds that many strings in its header; read one by one through the
    file object (a read and a size check per token) they took half a CPU second at every start of the inference service.
    Plain reads, not a memory map: a file on a USB stick pulled out mid-read is an OSError, not a SIGBUS."""

    BLOCK = 4 << 20
    LIMIT = 512 << 20
    """No real header comes near it (Gemma 3's 262,144 tokens take 4 MB): a damaged length must not read a 20 GB file into memory."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.data, self.pos = f, b"", 0
        self.file_size = os.fstat(f.fileno()).st_size

    def need(self, end: int) -> None:
        """Have the file's bytes up to end in memory."""
        if end <= len(self.data):
            return
        if end > self.LIMIT:
            raise GGUFError(f"the GGUF header is damaged (it would be larger than {self.LIMIT >> 20} MiB)")
        if end <= self.file_size:
            self.data += self.f.read(min(max(end - len(self.data), self.BLOCK, len(self.data)), self.LIMIT - len(self.data)))
        if end > len(self.data):
            raise GGUFError("the GGUF header ends early")

    def read(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(self.pos + size)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def length(self, item_size: int = 1) -> int:
        """A length from the header, refused when it reaches past the end of the file (a damaged file)."""
        count: int = self.read("<Q")
        if count * item_size > self.file_size - self.pos:
            raise GGUFError("the GGUF header is damaged (a length reaches past the end of the file)")
        return count

    def string(self) -> str:
        size = self.length()
        self.need(self.pos + size)
        text = self.data[self.pos : self.pos + size].decode("utf-8", errors="replace")
        self.pos += size
        return text

    def skip_strings(self, count: int) -> None:
        unpack = _U64.unpack_from
        for _ in range(count):
            if self.pos + 8 > len(self.data):
                self.need(self.pos + 8)
            size = unpack(self.data, self.pos)[0]
            if size > self.file_size - self.pos - 8:
                raise GGUFError("the GGUF header is damaged (a length reaches past the end of the file)")
            self.pos += 8 + size

    def metadata(self) -> tuple[int, dict]:
        """From the file's start: the number of tensors and the key/value pairs (the cursor then stands at the tensor table)."""
        self.need(min(4, self.file_size))
        if self.data[:4] != GGUF_MAGIC:
            raise GGUFError("not a GGUF file (it does not start with the bytes GGUF)")
        self.pos = 4
        version = self.read("<I")
        if version < 2:
            raise GGUFError(f"the GGUF version {version} is too old")
        tensors, count = self.read("<Q"), self.read("<Q")
        metadata = {}
        for _ in range(count):
            key = self.string()
            metadata[key] = self.value(self.read("<I"))
        return tensors, metadata

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.read(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind = self.read("<I")
            count = self.length(struct.calcsize(_SCALARS[item_kind]) if item_kind in _SCALARS else 8)
            if item_kind == _STRING:  # token lists are long: skip them, keep their length
                self.skip_strings(count)
                return count
            if item_kind in _SCALARS:
                size = struct.calcsize(_SCALARS[item_kind])
                if count > 4096:
                    self.pos += size * count
                    return count
                self.need(self.pos + size * count)
                items = list(struct.unpack_from(f"<{count}{_SCALARS[item_kind][1]}", self.data, self.pos))
                self.pos += size * count
                return items
            raise GGUFError(f"nested GGUF arrays are not supported (type {item_kind})")
        raise GGUFError(f"unknown GGUF value type {kind}")


def read_metadata(path: Path) -> dict:
    """The key/value pairs of a GGUF file; arrays of strings are given as their length."""
    with Path(path).open("rb") as f:
        try:
            return HeaderReader(f).metadata()[1]
        except GGUFError as error:
            raise GGUFError(f"{error}: {path}") from None


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, list):  # per-layer figures: the largest layer counts
        return int(max(value)) if value else default
    return int(value) if value is not None else default


def model_from_gguf(path: Path) -> Model:
    """A catalog-style Model for a GGUF file, from its own metadata, with the file as its one quant."""
    path = Path(path)
    meta = read_metadata(path)
    arch = meta.get("general.architecture", "")
    key = lambda name, default=None: meta.get(f"{arch}.{name}", default)  # noqa: E731
    heads = _int(key("attention.head_count"), 1)
    hidden = _int(key("embedding_length"))
    vocab = _int(meta.get("tokenizer.ggml.tokens")) or _int(key("vocab_size"))
    window = _int(key("attention.sliding_window"))
    pattern = SWA_PATTERNS.get(arch, 0) if window else 0
    quant = file_type_name(meta.get("general.file_type"))
    file = ModelFile(quant=quant, file=path.name, size_bytes=path.stat().st_size, sha256=None, source=str(path), size_exact=True)
    return Model(
        id=path.stem,
        name=meta.get("general.name") or path.stem,
        kind="embeddings" if arch in ENCODER_ARCHS else "chat",
        family=arch,
        parameters=0,
        files=(file,),
        layers=_int(key("block_count")),
        attention_heads=heads,
        kv_heads=_int(key("attention.head_count_kv"), heads),
        head_dim=_int(key("attention.key_length")) or hidden // heads,
        hidden=hidden,
        feed_forward=_int(key("feed_forward_length")),
        vocab=vocab,
        training_context=_int(key("context_length")),
        sliding_window=window if pattern else 0,
        sliding_window_pattern=pattern,
    )
