"""A GGUF file loaded for evaluation: tokens in, logits of chosen positions out.

Evaluation needs the logits of many positions of one window at once (the
second half of a perplexity window, the answer tokens of a question), which
llama-cpp-python's high-level calls do not give without keeping the logits of
every position. So this module fills llama.cpp's batch itself, asks for logits
only where they are needed, and reads them from llama.cpp's buffer as a numpy
view (no copy): at most ``context`` rows of the vocabulary at a time, which is
what keeps Gemma's 262k vocabulary within bounds.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schulki.runtime import llama_adapter
from schulki.runtime.llama_adapter import BufferSizes, buffer_sizes

_GPU_NAME = re.compile(r"Device \d+: (?P<name>[^,\n]+)")


class EvalError(RuntimeError):
    """An evaluation cannot go on; the message says why, for the admin."""


@dataclass(frozen=True)
class DeviceInfo:
    """Where a model ran: the node kind the planner knows (gpu, cpu, apple) and the device's name."""

    kind: str
    name: str


class EvalModel:
    """One loaded GGUF file with a context of ``context`` tokens."""

    def __init__(self, path: Path, context: int = 512, threads: int | None = None, gpu_layers: int = -1):
        self.path = Path(path)
        self.context = context
        # One batch holds a whole window, so the logits of its second half come out of one decode.
        self.llama, self.load_log = llama_adapter.load_llama(
            self.path,
            n_ctx=context,
            n_batch=context,
            n_ubatch=min(512, context),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
        )
        self.gpu_layers = gpu_layers
        self.vocab = llama_adapter.llama_model_get_vocab(self.llama.model)
        self.n_vocab = int(llama_adapter.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(llama_adapter.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_adapter.llama_vocab_bos(self.vocab))
        self._batch: llama_adapter.Batch | None = llama_adapter.Batch(context)

    @property
    def metadata(self) -> dict[str, str]:
        return self.llama.metadata

    @property
    def quant(self) -> str:
        return llama_adapter.llama_quant(self.llama)

    @property
    def name(self) -> str:
        return self.metadata.get("general.name") or self.path.stem

    @property
    def buffers(self) -> BufferSizes:
        """What llama.cpp allocated for this model and context, from its load log."""
        return buffer_sizes(self.load_log)

    def device(self) -> DeviceInfo:
        """The node kind this run counts for: a GPU when layers went to one, else the CPU."""
        on_gpu = self.gpu_layers != 0 and bool(llama_adapter.llama_supports_gpu_offload())
        if on_gpu and sys.platform == "darwin":
            return DeviceInfo("apple", "Apple GPU (Metal)")
        if on_gpu:
            names = [m["name"].strip() for line in self.load_log for m in _GPU_NAME.finditer(line)]
            return DeviceInfo("gpu", names[0] if names else "GPU")
        return DeviceInfo("cpu", _cpu_name())

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Tokens of text as llama.cpp's tools make them (BOS where the model wants one, no special-token parsing)."""
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos and self.add_bos, special=False)

    def clear(self) -> None:
        """Forget everything in the KV cache."""
        llama_adapter.clear_memory(self.llama.ctx)

    def keep(self, n: int) -> bool:
        """Drop every position from n on, keeping the first n in the KV cache; False where llama.cpp cannot."""
        return bool(llama_adapter.llama_memory_seq_rm(llama_adapter.llama_get_memory(self.llama.ctx), 0, n, -1))

    def decode(self, tokens: list[int] | np.ndarray, first_output: int, start_pos: int = 0) -> np.ndarray:
        """Decode tokens at positions start_pos.. and return the logits of tokens[first_output:] (rows × vocab).

        The returned array is a view of llama.cpp's buffer: valid until the next decode.
        """
        n = len(tokens)
        if n == 0 or n > self.context:
            raise EvalError(f"{n} tokens do not fit a batch of {self.context}")
        batch = self._batch
        assert batch is not None, "decode after close"
        for i, token in enumerate(tokens):
            batch.put(i, int(token), start_pos + i, 0, i >= first_output)
        batch.size = n
        status = llama_adapter.decode(self.llama.ctx, batch)
        if status != 0:
            raise EvalError(f"llama.cpp could not decode the batch (status {status})")
        rows = n - first_output
        if rows <= 0:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        return llama_adapter.logits_rows(self.llama.ctx, rows, self.n_vocab)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        self.llama.close()

    def __enter__(self) -> EvalModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"
