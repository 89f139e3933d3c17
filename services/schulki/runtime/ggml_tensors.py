"""Reading tensors of llama.cpp's computation graph while it runs, through the eval callback of a llama context.

llama.cpp calls ``cb_eval(tensor, ask, user_data)`` for every node of the
graph: once with ``ask`` true (return true to see this tensor's data), then,
for a tensor asked for, again with ``ask`` false once it is computed (return
false to stop computing the rest). llama-cpp-python ships the callback type
but no ``ggml_tensor`` struct: ``GgmlTensor`` mirrors the one in the pinned
llama.cpp's ggml.h (ggml 0.25, GGML_MAX_DIMS 4, GGML_MAX_SRC 10,
GGML_MAX_OP_PARAMS 64, GGML_MAX_NAME 64). The data is copied out with
``ggml_backend_tensor_get``, which works wherever the tensor lives (CPU or
GPU memory); a node's name is the one llama.cpp's graph builder gave it, as
"kq_soft_max-3" for the attention weights of layer 3.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

GGML_TYPE_F32 = 0


class GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` of the pinned ggml."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


Watch = Callable[[str], bool]
"""Whether the caller wants the data of the node of this name."""
Seen = Callable[[str, np.ndarray], bool]
"""Takes a wanted node's name and its data (shape ne[3], ne[2], ne[1], ne[0]); False stops the computation."""


def _tensor_get() -> Any:
    from llama_cpp import _ggml

    function = _ggml.libggml.ggml_backend_tensor_get  # in libggml-base, which libggml links
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    function.restype = None
    return function


def eval_callback(watch: Watch, seen: Seen) -> Any:
    """A ``ggml_backend_sched_eval_callback`` for ``llama_context_params.cb_eval`` that hands the F32 nodes ``watch``
    names to ``seen``. Keep the returned object alive as long as the context may call it."""
    import llama_cpp

    tensor_get = _tensor_get()

    def callback(pointer: int, ask: bool, _user_data: int) -> bool:
        tensor = ctypes.cast(pointer, ctypes.POINTER(GgmlTensor)).contents
        name = tensor.name.decode("utf-8", errors="replace")
        if ask:
            return tensor.type == GGML_TYPE_F32 and watch(name)
        shape = tuple(int(n) for n in reversed(tensor.ne))
        data = np.empty(shape, dtype=np.float32)
        contiguous = tensor.nb[0] == 4 and all(tensor.nb[i] == tensor.nb[i - 1] * tensor.ne[i - 1] for i in range(1, 4))
        if not contiguous:  # the attention weights are a fresh tensor, never a view; anything else is not read
            return seen(name, np.empty((0, 0, 0, 0), dtype=np.float32))
        tensor_get(pointer, data.ctypes.data, 0, data.nbytes)
        return seen(name, data)

    return llama_cpp.ggml_backend_sched_eval_callback(callback)
