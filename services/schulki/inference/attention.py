"""Attention weights of a short text, read from llama.cpp's computation graph (the "Wie denkt die KI?" tab's heat map).

llama.cpp computes attention without flash attention as
softmax(K·Q + mask) and names that node "kq_soft_max-<layer>"
(llama-graph.cpp, ``build_attn_mha``): for one evaluation of n tokens it
holds, per head, an n × n_kv table, row i the weights token i gives to each
cell of the KV cache. A fresh cache puts the text's tokens into cells 0 … n-1
in order, so the first n columns are the tokens and the rest (padding, masked
to -inf) are 0. With flash attention that node does not exist: the weights
stay inside one fused kernel. So the reader has a small context of its own,
flash attention off and an eval callback set, beside the engine's batched
one, and shares the engine's weights. A model whose graph has no such node
(an architecture without softmax attention, or with its own names) gets
``unavailable`` with the reason, not some other table.

A class sees one text at a time: the service refuses while chats run or wait
(the evaluation would slow them), and the reader takes one text at a time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from schulki.runtime.errors import Busy, InvalidInput

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel

SOFTMAX_NODE = "kq_soft_max-"


@dataclass
class AttentionMaps:
    """The tokens read and, by layer, their (heads, tokens, tokens) weights; ``unavailable`` says why there are none."""

    tokens: list[int]
    layer_count: int
    layers: dict[int, np.ndarray] = field(default_factory=dict)
    unavailable: str = ""
    seconds: float = 0.0
    architecture: str = ""
    nodes: dict[str, np.ndarray] = field(default_factory=dict)
    """Further graph nodes asked for by name (the tests' recomputation reads the scores "kq-<layer>")."""


def shown_layers(layer_count: int, most: int) -> list[int]:
    """The layers shown: all of them, or ``most`` spread evenly from the first to the last."""
    if layer_count <= most:
        return list(range(layer_count))
    if most == 1:
        return [layer_count - 1]
    return sorted({round(i * (layer_count - 1) / (most - 1)) for i in range(most)})


class AttentionReader:
    """One small llama context without flash attention that reads the attention weights of a text in one evaluation."""

    def __init__(self, model: LlamaModel, max_tokens: int, max_layers: int, time_limit_s: float, threads: int):
        self._model = model
        self.max_tokens = max_tokens
        self.max_layers = max_layers
        self.time_limit_s = time_limit_s
        self._threads = threads
        self._lock = threading.Lock()
        self._ctx: Any = None
        self._callback: Any = None  # the ctypes callback must outlive the context that calls it
        self._wanted: set[str] = set()
        self._found: dict[str, np.ndarray] = {}
        self._deadline = 0.0
        self._late = False
        metadata = model.metadata()
        self.architecture = metadata.get("general.architecture", "")

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def _context(self) -> Any:
        if self._ctx is None:
            from schulki.runtime import llama_adapter as lc
            from schulki.runtime.ggml_tensors import eval_callback

            params = lc.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = max(self.max_tokens, 32)
            params.n_seq_max = 1
            params.n_threads = params.n_threads_batch = self._threads
            params.flash_attn_type = lc.flash_attn_type(False)  # the weights exist only outside the fused kernel
            params.no_perf = True
            self._callback = eval_callback(self._watch, self._seen)
            params.cb_eval = self._callback
            self._ctx, _ = lc.new_context(self._model, params, "the attention view")
        return self._ctx

    def _watch(self, name: str) -> bool:
        return name in self._wanted

    def _seen(self, name: str, data: np.ndarray) -> bool:
        self._found[name] = data
        if time.monotonic() > self._deadline:
            self._late = True
            return False  # llama.cpp stops computing the rest of the graph
        return True

    def read(self, tokens: list[int], nodes: tuple[str, ...] = ()) -> AttentionMaps:
        """The attention weights of every shown layer and head for ``tokens`` (start token first) in one evaluation;
        ``nodes``: further graph nodes to hand back as they are."""
        from schulki.runtime import llama_adapter as lc

        if len(tokens) > self.max_tokens:
            raise InvalidInput(
                f"Der Satz ist zu lang für die Aufmerksamkeits-Ansicht: {len(tokens)} Tokens, höchstens {self.max_tokens}. "
                f"(The attention view takes at most {self.max_tokens} tokens, start token included.)"
            )
        if not self._lock.acquire(blocking=False):
            raise Busy("Die Aufmerksamkeit eines anderen Satzes wird gerade berechnet. (Another attention view is running.)")
        try:
            layer_count = int(lc.llama_model_n_layer(self._model.model))
            shown = shown_layers(layer_count, self.max_layers)
            ctx = self._context()
            self._wanted = {f"{SOFTMAX_NODE}{layer}" for layer in shown} | set(nodes)
            self._found, self._late = {}, False
            lc.clear_memory(ctx)
            batch = lc.Batch(len(tokens))
            try:
                for i, token in enumerate(tokens):
                    batch.put(i, token, i, 0, i == len(tokens) - 1)
                batch.size = len(tokens)
                started = time.monotonic()
                self._deadline = started + self.time_limit_s
                rc = lc.decode(ctx, batch)
                seconds = time.monotonic() - started
            finally:
                batch.close()
                self._wanted = set()
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} for the attention view")
            if self._late:
                raise Busy(
                    f"Die Aufmerksamkeit brauchte länger als {self.time_limit_s:g} s und wurde abgebrochen. "
                    f"(The attention view took longer than {self.time_limit_s:g} s.)"
                )
            maps = AttentionMaps(tokens=list(tokens), layer_count=layer_count, seconds=seconds, architecture=self.architecture)
            maps.nodes = {name: data for name, data in self._found.items() if name in nodes}
            softmax = {int(name.removeprefix(SOFTMAX_NODE)): data for name, data in self._found.items() if name.startswith(SOFTMAX_NODE)}
            if not softmax:
                maps.unavailable = (
                    f"Dieses Modell (Architektur {self.architecture or 'unbekannt'}) legt seine Aufmerksamkeitsgewichte nicht "
                    "offen: llama.cpp berechnet sie hier nicht als eigene Tabelle. "
                    "(The model's graph has no attention softmax node to read.)"
                )
                return maps
            n = len(tokens)
            for layer in sorted(softmax):
                data = softmax[layer]  # (streams, heads, tokens, kv cells)
                maps.layers[layer] = np.ascontiguousarray(data[0, :, :n, :n])
            return maps
        finally:
            self._found = {}
            self._lock.release()

    def close(self) -> None:
        if self._ctx is not None:
            from schulki.runtime import llama_adapter as lc

            lc.llama_free(self._ctx)
            self._ctx = None
