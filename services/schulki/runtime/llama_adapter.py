"""The one place schulki reaches into llama-cpp-python: loading, contexts, batches, logits, embeddings, load logs.

The chat engine, its batch worker and samplers, the embedding engine and the
evaluation all go through this module, so an upgrade of llama-cpp-python has
one file to check:

- ``C_NAMES``: the functions and constants of llama.h the engines call, under
  their own names (``adapter.llama_decode`` is ``llama_cpp.llama_decode``).
  Only these can be reached through the adapter.
- the Python internals of llama-cpp-python that have no public form
  (``_internals.LlamaModel``, the ``Llama`` object's ``_model``, its logger
  callback) are used in the functions below and nowhere else.
- ``Batch``, ``logits_rows`` and ``sequence_embedding`` write and read
  llama.cpp's own buffers (ctypes), which the batch worker, the evaluation
  and the embedding engine each did by hand before.

llama_cpp is imported on first use, not with this module: loading the library
takes about a second, and the gateway and the CLI import modules that only
mention the engines.

llama.cpp also prints the size of each buffer it allocates ("CPU_Mapped model
buffer size = 241.43 MiB", "CPU KV buffer size = 48.00 MiB"); ``capture_llama_log``
collects those lines while a model loads and ``buffer_sizes`` adds them up, so
GetModelInfo and the quant planner quote what llama.cpp really took.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schulki.models.gguf import check_gguf_file, quant_name
from schulki.runtime.errors import ModelLoadError

C_NAMES = frozenset(
    {
        # model and context
        "llama_context_default_params",
        "llama_model_default_params",
        "llama_init_from_model",
        "llama_free",
        "llama_n_ctx_seq",
        "llama_model_n_layer",
        "llama_model_n_swa",
        "llama_pooling_type",
        "llama_supports_gpu_offload",
        # vocabulary
        "llama_model_get_vocab",
        "llama_vocab_n_tokens",
        "llama_vocab_bos",
        "llama_vocab_get_add_bos",
        "llama_vocab_get_add_eos",
        "llama_vocab_get_add_sep",
        "llama_vocab_is_eog",
        "llama_vocab_fim_pre",
        "llama_vocab_fim_suf",
        "llama_vocab_fim_mid",
        "llama_vocab_fim_rep",
        "llama_vocab_fim_sep",
        # decoding and the KV cache
        "llama_decode",
        "llama_get_memory",
        "llama_memory_clear",
        "llama_memory_seq_cp",
        "llama_memory_seq_rm",
        "llama_memory_seq_pos_min",
        # native samplers
        "llama_sampler_chain_default_params",
        "llama_sampler_chain_init",
        "llama_sampler_chain_add",
        "llama_sampler_init_penalties",
        "llama_sampler_init_greedy",
        "llama_sampler_init_top_k",
        "llama_sampler_init_top_p",
        "llama_sampler_init_temp",
        "llama_sampler_init_dist",
        "llama_sampler_init_min_p",
        "llama_sampler_init_logit_bias",
        "llama_logit_bias",
        "llama_sampler_init_grammar",
        "llama_sampler_init_grammar_lazy_patterns",
        "llama_sampler_clone",
        "llama_sampler_accept",
        "llama_sampler_sample",
        "llama_sampler_free",
    }
)
"""The names from llama.h (through llama-cpp-python's ctypes bindings) that schulki calls."""


def __getattr__(name: str) -> Any:
    """``adapter.llama_decode`` and the other ``C_NAMES``, bound on first use (then a plain module attribute)."""
    if name not in C_NAMES:
        raise AttributeError(f"{__name__} has no {name!r}; add it to C_NAMES if the engines need it")
    import llama_cpp

    value = getattr(llama_cpp, name)
    globals()[name] = value
    return value


def version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


# --- load logs ---------------------------------------------------------------------------------

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


def _load_reason(lines: list[str], fallback: str, *, failed: bool = False) -> str:
    """llama.cpp's own error line from a load log, else the fallback."""
    words = ("error", "failed") if failed else ("error",)
    return next((line.strip() for line in reversed(lines) if any(w in line.lower() for w in words)), fallback)


def _checked(path: Path) -> None:
    try:
        check_gguf_file(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None


# --- loading -----------------------------------------------------------------------------------


def load_llama(path: Path, what: str = "model", **params: Any) -> tuple[Any, list[str]]:
    """Load a GGUF file with llama-cpp-python's ``Llama``; return it and llama.cpp's load log.

    A missing, non-GGUF or damaged file raises ModelLoadError with one line
    (llama.cpp's own error line where it printed one), never a traceback.
    """
    from llama_cpp import Llama

    _checked(path)
    with capture_llama_log() as lines:
        try:
            llama = Llama(model_path=str(path), verbose=False, **params)
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelLoadError(f"cannot load {what} {path}: {_load_reason(lines, str(error))}") from None
    return llama, lines


def load_model(path: Path, what: str = "model", gpu_layers: int = -1) -> tuple[Any, list[str]]:
    """Load only the weights of a GGUF file (llama-cpp-python's ``LlamaModel``); return it and llama.cpp's load log.

    The chat engine makes its own context (several sequences), which the
    high-level ``Llama`` class cannot. Errors as in ``load_llama``.
    """
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    _checked(path)
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = gpu_layers if gpu_layers >= 0 else 0x7FFFFFFF  # as llama-cpp-python: -1 means all
    with capture_llama_log() as lines:
        try:
            model = LlamaModel(path_model=str(path), params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelLoadError(f"cannot load {what} {path}: {_load_reason(lines, str(error))}") from None
    return model, lines


def flash_attn_type(setting: bool | str) -> int:
    """llama.cpp's flash_attn_type for a flash_attention setting: "auto" lets llama.cpp use it wherever the device supports
    it (llama-server's default), true forces it, false turns it off."""
    import llama_cpp

    if setting == "auto":
        return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO)
    return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if setting else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)


def new_context(model: Any, params: Any, what: str = "model") -> tuple[Any, list[str]]:
    """Create a llama context for a ``load_model`` model; return it and llama.cpp's log (with the KV and compute buffer sizes)."""
    import llama_cpp

    with capture_llama_log() as lines:
        ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise ModelLoadError(f"cannot create the context for {what}: {_load_reason(lines, 'no reason given', failed=True)}")
    return ctx, lines


def model_of(llama: Any) -> Any:
    """The ``LlamaModel`` (tokenizer, metadata, n_ctx_train, desc) inside a high-level ``Llama``."""
    return llama._model


def llama_quant(llama: Any) -> str:
    """The quant of a model loaded with ``load_llama``, e.g. "Q4_K_M"."""
    return quant_name(llama.metadata, llama._model.desc())


def chat_formatter(template: str, eos_token: str, bos_token: str) -> Any:
    """llama-cpp-python's Jinja2 chat formatter: messages -> prompt text and whether it added the special tokens."""
    from llama_cpp import llama_chat_format

    return llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)


# --- batches, logits, embeddings ---------------------------------------------------------------


class Batch:
    """A ``llama_batch`` of up to ``capacity`` tokens, one sequence id per token; free it with close()."""

    def __init__(self, capacity: int):
        import llama_cpp

        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self._free = llama_cpp.llama_batch_free

    def put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        """Write token i of the batch: the token, its position in its sequence, and whether its logits are wanted."""
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq_id
        raw.logits[i] = logits

    @property
    def size(self) -> int:
        """How many of the tokens written are decoded."""
        return int(self.raw.n_tokens)

    @size.setter
    def size(self, n: int) -> None:
        self.raw.n_tokens = n

    def close(self) -> None:
        if self.raw is not None:
            self._free(self.raw)
            self.raw = None


def decode(ctx: Any, batch: Batch) -> int:
    """Run the batch through the model; llama.cpp's status (0 is success)."""
    import llama_cpp

    return int(llama_cpp.llama_decode(ctx, batch.raw))


def clear_memory(ctx: Any) -> None:
    """Forget every sequence in the context's KV cache (an encoder has none: nothing to do)."""
    import llama_cpp

    memory = llama_cpp.llama_get_memory(ctx)
    if memory:
        llama_cpp.llama_memory_clear(memory, True)


class Candidates:
    """A ``llama_token_data_array`` over the whole vocabulary in one numpy buffer, for running samplers by hand
    (``llama_sampler_apply``) on one batch position's logits, as llama.cpp's common sampler does."""

    DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])

    def __init__(self, n_vocab: int):
        import llama_cpp

        self._lc = llama_cpp
        self.n_vocab = n_vocab
        self.data = np.zeros(n_vocab, dtype=self.DTYPE)
        self.data["id"] = np.arange(n_vocab, dtype=np.int32)
        self._ids = self.data["id"].copy()
        pointer = ctypes.cast(self.data.ctypes.data, ctypes.POINTER(llama_cpp.llama_token_data))
        self.raw = llama_cpp.llama_token_data_array(data=pointer, size=n_vocab, selected=-1, sorted=False)
        self.pointer = ctypes.pointer(self.raw)
        self._one = np.zeros(1, dtype=self.DTYPE)
        one = ctypes.cast(self._one.ctypes.data, ctypes.POINTER(llama_cpp.llama_token_data))
        self._one_raw = llama_cpp.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        self._one_pointer = ctypes.pointer(self._one_raw)

    def load(self, ctx: Any, index: int) -> None:
        """Fill with the logits of batch position ``index`` of the last decode (every token, unsorted, none selected)."""
        row = self._lc.llama_get_logits_ith(ctx, index)
        self.data["logit"] = np.ctypeslib.as_array(ctypes.cast(row, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        self.data["id"] = self._ids
        self.data["p"] = 0.0
        self.raw.size, self.raw.selected, self.raw.sorted = self.n_vocab, -1, False

    def apply(self, sampler: Any) -> None:
        self._lc.llama_sampler_apply(sampler, self.pointer)

    def shorten(self, n: int) -> None:
        """Keep only the ``n`` highest logits (in no particular order), as a sampler that cuts candidates would."""
        if n >= self.raw.size:
            return
        logits = self.data["logit"][: self.raw.size]
        top = np.argpartition(logits, -n)[-n:]
        self.data[:n] = self.data[top]
        self.raw.size, self.raw.selected, self.raw.sorted = n, -1, False

    def finite(self) -> int:
        """How many candidates a sampler left possible (a grammar sets the others to minus infinity)."""
        return int(np.isfinite(self.data["logit"][: self.raw.size]).sum())

    def selected(self) -> int:
        """The token the last sampler of a chain picked."""
        return int(self.data["id"][self.raw.selected])

    def allows(self, sampler: Any, token: int) -> bool:
        """Whether ``sampler`` (a grammar) leaves ``token`` possible."""
        self._one[0] = (token, 1.0, 0.0)
        self._one_raw.size, self._one_raw.selected, self._one_raw.sorted = 1, -1, False
        self._lc.llama_sampler_apply(sampler, self._one_pointer)
        return bool(np.isfinite(self._one["logit"][0]))


def logits_rows(ctx: Any, rows: int, n_vocab: int) -> np.ndarray:
    """The logits of the last decode's ``rows`` outputs as a (rows, n_vocab) view of llama.cpp's buffer: valid until the next decode."""
    import llama_cpp

    pointer = llama_cpp.llama_get_logits(ctx)
    return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(rows, n_vocab))


def logits_row(ctx: Any, index: int, n_vocab: int) -> np.ndarray:
    """The logits of batch position ``index`` of the last decode as a view of llama.cpp's buffer: valid until the next decode."""
    import llama_cpp

    pointer = llama_cpp.llama_get_logits_ith(ctx, index)
    return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))


def sequence_embedding(ctx: Any, seq_id: int, n_embd: int) -> np.ndarray:
    """The pooled embedding of one sequence of the last decode, copied out of llama.cpp's buffer."""
    import llama_cpp

    pointer = llama_cpp.llama_get_embeddings_seq(ctx, seq_id)
    return np.ctypeslib.as_array(pointer, shape=(n_embd,)).astype(np.float32)


def sequences_batch(batch: Batch, sequences: Sequence[Sequence[int]]) -> None:
    """Fill the batch with each token list as its own sequence (ids 0, 1, ...), positions from 0, every output wanted."""
    n = 0
    for seq_id, tokens in enumerate(sequences):
        for pos, token in enumerate(tokens):
            batch.put(n, token, pos, seq_id, True)
            n += 1
    batch.size = n
