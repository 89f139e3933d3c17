"""What llama.cpp reports about a model it loads: GGUF facts and buffer sizes.

llama.cpp prints the size of each buffer it allocates ("CPU_Mapped model
buffer size = 241.43 MiB", "CPU KV buffer size = 48.00 MiB", "CPU compute
buffer size = 514.25 MiB"). ``capture_llama_log`` collects those lines while
a model loads, and ``buffer_sizes`` adds them up, so GetModelInfo and the quant
planner can quote what llama.cpp really took rather than an estimate.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"

# llama.cpp's enum llama_ftype, as stored in the GGUF key general.file_type.
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

_BUFFER_LINE = re.compile(r"(?P<device>[\w.-]+)\s+(?P<kind>model|KV|compute|RS|output)\s+buffer size =\s+(?P<mib>[\d.]+) MiB")


@dataclass
class BufferSizes:
    """Bytes llama.cpp allocated, by kind, summed over devices."""

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output


def buffer_sizes(log_lines: list[str]) -> BufferSizes:
    """Add up the buffer sizes in llama.cpp's load log."""
    sizes = BufferSizes()
    for line in log_lines:
        for match in _BUFFER_LINE.finditer(line):
            size = int(float(match["mib"]) * 1024 * 1024)
            kind = match["kind"]
            if kind == "model":
                sizes.weights += size
            elif kind in ("KV", "RS"):
                sizes.kv_cache += size
            elif kind == "compute":
                sizes.compute += size
            else:
                sizes.output += size
    return sizes


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


def quant_name(metadata: dict[str, str], description: str = "") -> str:
    """The quantization type of a model from its GGUF metadata, e.g. "Q4_K_M"."""
    file_type = metadata.get("general.file_type")
    if file_type is not None and file_type.lstrip("-").isdigit():
        return FILE_TYPES.get(int(file_type), f"ftype {file_type}")
    return description.split(" ", 2)[-1] if description else "unknown"


def load_llama(path: Path, what: str = "model", **params):
    """Load a GGUF file with llama.cpp; return the Llama and llama.cpp's load log.

    A missing, non-GGUF or damaged file raises ModelLoadError with one line
    (llama.cpp's own error line where it printed one), never a traceback.
    """
    from llama_cpp import Llama

    from schulki.runtime.errors import ModelLoadError

    try:
        check_gguf_file(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    with capture_llama_log() as lines:
        try:
            llama = Llama(model_path=str(path), verbose=False, **params)
        except (ValueError, RuntimeError, OSError) as error:
            reason = next((line.strip() for line in reversed(lines) if "error" in line.lower()), str(error))
            raise ModelLoadError(f"cannot load {what} {path}: {reason}") from None
    return llama, lines


@contextmanager
def capture_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines (instead of printing them) while the block runs."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def load_model(path: Path, what: str = "model", gpu_layers: int = -1):
    """Load only the weights of a GGUF file (llama-cpp-python's LlamaModel); return it and llama.cpp's load log.

    The chat engine makes its own context (several sequences), which the
    high-level ``Llama`` class cannot. Errors as in ``load_llama``.
    """
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    from schulki.runtime.errors import ModelLoadError

    try:
        check_gguf_file(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = gpu_layers if gpu_layers >= 0 else 0x7FFFFFFF  # as llama-cpp-python: -1 means all
    with capture_llama_log() as lines:
        try:
            model = LlamaModel(path_model=str(path), params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as error:
            reason = next((line.strip() for line in reversed(lines) if "error" in line.lower()), str(error))
            raise ModelLoadError(f"cannot load {what} {path}: {reason}") from None
    return model, lines


def new_context(model, params, what: str = "model"):
    """Create a llama context for a loaded model; return it and llama.cpp's log (with the KV and compute buffer sizes)."""
    import llama_cpp

    from schulki.runtime.errors import ModelLoadError

    with capture_llama_log() as lines:
        ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        reason = next((line.strip() for line in reversed(lines) if "error" in line.lower() or "failed" in line.lower()), "no reason given")
        raise ModelLoadError(f"cannot create the context for {what}: {reason}")
    return ctx, lines
