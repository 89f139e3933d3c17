"""The inference service's start-up check: does the configured model, context and parallelism fit this machine?

It runs the quant planner on the GGUF file's own metadata before llama.cpp
loads anything. When the estimate clearly cannot fit (more than the GPU's free
memory with every layer on it, or more than the machine's whole RAM on the
CPU), the service refuses to start with a one-line reason that says what would
fit; when it is merely tight, it logs a warning and starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from schulki.config import InferenceConfig
from schulki.models.gguf import GGUFError, model_from_gguf
from schulki.models.planner import GiB, Machine, MiB, Plan, Workload, default_parallel, estimate, plan
from schulki.runtime.errors import StartupError

log = logging.getLogger("schulki.inference")


def _gpu_free_bytes() -> int | None:
    """Free memory of the first GPU as nvidia-smi reports it, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]) * MiB if out and out[0].isdigit() else None


def _ram_bytes() -> tuple[int, int]:
    """Total and available RAM in bytes."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = total
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    return total, available


def this_machine(config: InferenceConfig) -> tuple[Machine, int]:
    """The machine the model will run on, and the bytes that clearly cannot be exceeded."""
    total, available = _ram_bytes()
    if config.gpu_layers != 0:
        from schulki.runtime.llama_adapter import llama_supports_gpu_offload

        if llama_supports_gpu_offload():
            if sys.platform == "darwin":
                return Machine("apple", total, name="this Mac"), total
            free = _gpu_free_bytes()
            if free:
                return Machine("gpu", free, ram_bytes=total, name="this GPU"), free
    # The planner keeps 2 GiB for the system on a lab PC; here the available RAM already excludes what runs.
    return Machine("cpu", available + 2 * GiB, name="this machine"), total


def workload(config: InferenceConfig, parallel: int | None = None) -> Workload:
    """The workload the engine will run: the same context shape it creates, so the estimate matches its buffers."""
    return Workload(
        context_length=config.context_length,
        parallel=parallel or config.parallel_sequences or 1,
        batch_size=config.batch_size,
        kv_cache_type=config.kv_cache_type,
        flash_attention=config.flash_attention is not False,  # "auto" turns it on for every CPU and CUDA GPU
        full_swa_cache=config.full_swa_cache,
    )


def parallel_sequences(config: InferenceConfig, model_path: Path, machine: Machine | None = None) -> int:
    """inference.parallel_sequences, or, when empty, the planner's default for this machine and model."""
    if config.parallel_sequences:
        return config.parallel_sequences
    try:
        model = model_from_gguf(model_path)
    except (GGUFError, OSError):
        return 1  # the engine's own load reports the broken file
    machine = machine or this_machine(config)[0]
    chosen = min(default_parallel(model, machine, workload(config, 1)), config.batch_size)
    log.info("parallel sequences: %d (the default for %s)", chosen, machine.name)
    return chosen


def check_fits(
    config: InferenceConfig,
    model_path: Path,
    machine: Machine | None = None,
    limit: int | None = None,
    parallel: int | None = None,
) -> Plan | None:
    """Refuse (StartupError) what clearly cannot fit, warn about what is tight; None when the file cannot be read."""
    try:
        model = model_from_gguf(model_path)
    except (GGUFError, OSError) as error:
        log.warning("start-up check skipped: %s", error)
        return None  # the engine's own load reports a broken file with its reason
    if machine is None:
        machine, limit = this_machine(config)
    limit = limit if limit is not None else machine.memory_bytes
    work = workload(config, parallel)
    result = plan(model, machine, work, quant=model.files[0].quant)
    need = estimate(model, model.files[0], work, machine.kind).llama_total
    all_on_one_device = machine.kind != "gpu" or config.gpu_layers < 0 or config.gpu_layers >= model.layers
    if all_on_one_device and need > limit:
        hint = ""
        if result.fits and result.workload_steps:
            hint = (
                f" It would fit with context_length = {result.context_length}, parallel_sequences = {result.parallel}, "
                f"kv_cache_type = {result.kv_cache_type}."
            )
        elif machine.kind == "gpu" and result.fits and result.gpu_layers:
            hint = f" It would fit with gpu_layers = {result.gpu_layers}."
        raise StartupError(
            f"{model_path.name} with {work.context_length} tokens of context x {work.parallel} parallel sequences needs about "
            f"{need / GiB:.1f} GiB, but {machine.name} has {limit / GiB:.1f} GiB.{hint} Lower inference.context_length or "
            f"inference.parallel_sequences, or use a smaller quant."
        )
    lighter = result.workload_steps > 0  # it fits only with a lighter workload than configured
    if not result.fits or lighter or result.gpu_layers < (model.layers if machine.kind != "cpu" else 0):
        log.warning("memory is tight for %s: %s", model_path.name, result.reason)
    return result
