"""What the evaluation tests share: the default model, its lower-bit variants, and llama.cpp's own perplexity tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from schulki.models.defaults import LLAMA_CPP_PYTHON_VERSION, chat_model_path

from tests.conftest import REPO_ROOT

THREADS = 1
"""llama.cpp threads in the tests: on a shared 2-core machine two spinning llama.cpp threads are ten times slower than one."""
VARIANTS_DIR = REPO_ROOT / "var" / "eval-cache"
"""Requantized variants of the default model, made once and kept (about 200 MB each)."""
VARIANT_FTYPES = {"Q3_K_S": 11, "Q2_K": 10}
"""llama.cpp's enum llama_ftype of each variant."""


def default_model() -> Path:
    return chat_model_path()


def requantize(source: Path, quant: str, target: Path) -> Path:
    """Make a lower-bit variant with llama-cpp-python's own quantizer (allow_requantize: the source is already Q4_K_M)."""
    import llama_cpp

    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")  # the two test processes may both make it: each its own file
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = VARIANT_FTYPES[quant]
    params.allow_requantize = True
    params.nthread = THREADS
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    assert status == 0, f"llama_model_quantize returned {status} for {quant}"
    partial.replace(target)
    return target


def variants() -> dict[str, Path]:
    """The default Q4_K_M and its requantized Q3_K_S and Q2_K."""
    source = default_model()
    found = {"Q4_K_M": source}
    for quant in VARIANT_FTYPES:
        found[quant] = requantize(source, quant, VARIANTS_DIR / f"{source.stem.replace('q4_k_m', quant.lower())}-from-q4_k_m.gguf")
    return found


def llama_tools() -> Path | None:
    """The bin folder of llama.cpp's own tools (llama-perplexity), built once from the pinned sdist; None if it cannot be had.

    build-llama-peer lives in the shared tools folder beside the repository
    (``../shared/tools``, for a worktree also ``../../shared/tools``); it
    prints the bin folder and builds only when its cache is missing (about 6 minutes).
    """
    cache = Path(os.environ.get("LLAMA_PEER_CACHE", Path.home() / ".cache" / "llama-peer")) / LLAMA_CPP_PYTHON_VERSION
    cached = cache / "src" / "vendor" / "llama.cpp" / "build" / "bin"
    if (cached / "llama-perplexity").exists():
        return cached
    for folder in (REPO_ROOT.parent / "shared", REPO_ROOT.parent.parent / "shared"):
        builder = folder / "tools" / "build-llama-peer"
        if builder.exists() and shutil.which("cmake"):
            run = subprocess.run(
                [str(builder), LLAMA_CPP_PYTHON_VERSION],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHON": sys.executable},
                timeout=1800,
            )
            if run.returncode == 0 and (Path(run.stdout.strip().splitlines()[-1]) / "llama-perplexity").exists():
                return Path(run.stdout.strip().splitlines()[-1])
    return None


def run_llama_perplexity(tools: Path, *args: str) -> str:
    """Run llama-perplexity with the test's threads; return its whole log."""
    run = subprocess.run([str(tools / "llama-perplexity"), "-t", str(THREADS), *args], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout + run.stderr
