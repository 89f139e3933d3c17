"""From an Ansible inventory host to its plan: which services run there, which model files, which settings.

``host_plan`` is what the Ansible filter plugin ``schulki_host_plan`` returns
and what ``schulki plan -i inventory/<school>`` prints, so the playbook and the
command can never disagree. The inventory variables it reads, and their
defaults, are ``FLEET_DEFAULTS`` (the role ``schulki_plan`` documents the same
names in its defaults/main.yml, and a test keeps the two equal).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from schulki.models.catalog import Catalog, load_catalog
from schulki.models.hardware import CUDA_IMAGE_VERSION, IMAGE_CPU_LEVEL, cpu_error, driver_error
from schulki.models.planner import DRIVER_RESERVED_BYTES, OS_RESERVE_BYTES, GiB, Machine, MiB, Workload, default_parallel, plan
from schulki.runtime import registry

FLEET_DEFAULTS: dict[str, object] = {
    "schulki_plan_node_kind": "gpu",
    "schulki_plan_chat_model": "llama-3.1-8b-instruct",
    "schulki_plan_chat_quant": "",
    "schulki_plan_context_length": 8192,
    "schulki_plan_parallel_sequences": "auto",
    "schulki_plan_batch_size": 512,
    "schulki_plan_kv_cache_type": "f16",
    "schulki_plan_flash_attention": True,
    "schulki_plan_embeddings_model": "multilingual-e5-large",
    "schulki_plan_embeddings_quant": "Q8_0",
    "schulki_plan_speech_model": "faster-whisper-large-v3-turbo",
    "schulki_plan_gpu_memory_mib": 0,
    "schulki_plan_ram_mib": 0,
    "schulki_plan_cpu_level": "",
    "schulki_plan_image_cpu_level": IMAGE_CPU_LEVEL,
    "schulki_plan_cuda_version": CUDA_IMAGE_VERSION,
}
SERVICES = {
    "gateway": ["gateway", "retrieval", "weaviate", "embeddings"],
    "gpu": ["inference", "transcription"],
    "cpu": ["inference"],
}
"""What runs on each kind of host: one embedding model for the whole school (the vectors must match), next to the store."""
SPEECH_GPU_FACTOR = 1.5
"""GPU memory of faster-whisper per byte of model.bin: 4525 MB for large-v2's 3.09 GB at fp16 (its README)."""
BATCH_CHUNK_BYTES = 91 * MiB
"""Memory of each further 30 s chunk in a transcription batch with Whisper base, measured as peak RSS on the CPU
(int8, beam 5, two malloc arenas as the service runs; benchmarks/transcription_bench.py --batch-memory): above one
chunk decoded alone, 18 MiB for batches of 1, 320 MiB for batches of 4 and 653 MiB for batches of 8, so
(653 - 18) / 7 per chunk. Its activations (encoder output, the beams' attention caches) are float32 there."""
BATCH_BASE_MODEL_BYTES = 145_217_607
"""model.bin of Whisper base, the model BATCH_CHUNK_BYTES was measured with."""
GPU_ACTIVATION_SHARE = 0.5
"""On a GPU the activations are float16, half the bytes of the CPU's float32."""


def batch_chunk_bytes(model_bytes: int) -> int:
    """GPU memory of each further chunk in a batch: the measured figure, scaled with the model's width (the square
    root of its size, since the weights grow with the square of the width and the activations with the width).
    For large-v2 (3.09 GB) it gives 1.6 GB for a batch of 8, as faster-whisper's README measured (6090 MB against
    4525 MB unbatched, fp16 on a GPU)."""
    return int(BATCH_CHUNK_BYTES * (model_bytes / BATCH_BASE_MODEL_BYTES) ** 0.5 * GPU_ACTIVATION_SHARE)


def speech_gpu_bytes(model_bytes: int, batch_size: int) -> int:
    """GPU memory a speech model takes while it decodes batches of batch_size chunks."""
    return int(model_bytes * SPEECH_GPU_FACTOR) + (batch_size - 1) * batch_chunk_bytes(model_bytes)


def _speech_batch(result: dict) -> dict:
    """Give transcription's batches the GPU memory the chat plan leaves: the largest batch up to the service's
    default whose further chunks fit in the chat model's spare budget, so batching never costs the chat a layer or a
    lighter workload. The speech entry and the node's transcription settings get that batch; returns the entry."""
    speech, chat = result["speech"], result["chat"]
    spare = max(0, chat["budget"] - chat["estimate"]["total"]) if chat["fits"] else 0
    batch = max(1, min(_speech_batch_size(), 1 + spare // speech["chunk_bytes"]))
    speech["batch_size"] = batch
    speech["batch_bytes"] = (batch - 1) * speech["chunk_bytes"]
    speech["reserved_bytes"] += speech["batch_bytes"]
    result["settings"]["transcription"]["batch_size"] = batch
    return speech


def _speech_batch_size() -> int:
    """The batch size the transcription service runs with by default on a GPU node (1 when batching is switched off),
    which the plan counts."""
    from schulki.config import TranscriptionConfig

    config = TranscriptionConfig()
    return config.batch_size if config.batching else 1


MODELS_DIR = "/models"
"""Where the model files appear inside the containers."""
GPU_FIGURE_TOLERANCE = 0.97
"""nvidia-smi's memory.total may be a little below the card's label; less than this share of the inventory's figure is a wrong inventory."""
RAM_FIGURE_TOLERANCE = 0.9
"""The kernel's MemTotal is below the RAM installed (firmware, kernel); less than this share of the inventory's figure is a wrong inventory."""


INFERENCE_PROCESS_BYTES = 768 * MiB
"""What the inference service needs beside the model's estimate (Python, gRPC, llama.cpp's threads): part of its container's memory limit."""
DESKTOP_KEEPS_BYTES = 1 * GiB
"""RAM a lab PC's inference container never takes, whatever the plan: the system and the browser of whoever sits there."""
GATEWAY_SERVICES_BYTES = 2 * GiB
"""RAM the gateway and retrieval take on the gateway machine, beside the embedding model and Weaviate (an assumption, not a measurement)."""
WEAVIATE_MIN_BYTES = 1 * GiB
"""The smallest memory limit Weaviate gets, however small the gateway machine."""


def inference_memory_limit(estimate_total: int, ram: int) -> int:
    """The memory limit of a lab PC's inference container in MiB: the plan's estimate and the process, never all of the RAM.

    The planner has checked that the estimate fits RAM less its reserve, so the limit stops a leak or a runaway
    request from taking the lab PC from its user, and never the model it planned."""
    return min(estimate_total + INFERENCE_PROCESS_BYTES, ram - DESKTOP_KEEPS_BYTES) // MiB


def weaviate_memory_limit(embeddings_total: int, ram: int) -> int:
    """Weaviate's memory limit on the gateway machine in MiB: what is left beside the system, the embedding model,
    the gateway and retrieval (Weaviate keeps its vector index in memory and grows with the school's documents)."""
    left = ram - OS_RESERVE_BYTES - embeddings_total - GATEWAY_SERVICES_BYTES
    return max(WEAVIATE_MIN_BYTES, left) // MiB


WEAVIATE_HTTP_PORT = 8080
"""Weaviate's HTTP port in the compose network (its image's default, which compose.yaml's health check asks)."""


def compose_address(service: str) -> str:
    """host:port of a schulki service in the compose network: its container name and its port from the service registry."""
    return f"{service}:{registry.spec(service).default_port}"


class FleetError(ValueError):
    """An inventory value is wrong; the message names the host and the variable."""


def _var(hostvars: dict, name: str) -> Any:
    value = hostvars.get(name)
    return FLEET_DEFAULTS[name] if value is None or (value == "" and FLEET_DEFAULTS[name] != "") else value


def _int_var(host: str, hostvars: dict, name: str) -> int:
    value = _var(hostvars, name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FleetError(f"{host}: {name} must be a whole number, not {value!r}") from None


def workload(host: str, hostvars: dict) -> Workload:
    """The chat workload the inventory sets for a host."""
    flash = _var(hostvars, "schulki_plan_flash_attention")
    auto = str(_var(hostvars, "schulki_plan_parallel_sequences")).lower() == "auto"
    return Workload(
        context_length=_int_var(host, hostvars, "schulki_plan_context_length"),
        parallel=1 if auto else _int_var(host, hostvars, "schulki_plan_parallel_sequences"),
        full_swa_cache=False,  # as the inference engine runs (inference.full_swa_cache)
        batch_size=_int_var(host, hostvars, "schulki_plan_batch_size"),
        kv_cache_type=str(_var(hostvars, "schulki_plan_kv_cache_type")),
        flash_attention=flash if isinstance(flash, bool) else str(flash).lower() in ("1", "true", "yes"),
    )


def _file_entry(catalog: Catalog, model_id: str, quant: str, role: str) -> list[dict]:
    model = catalog.model(model_id)
    f = model.file_for(quant)
    entries = [{"name": f.file, "sha256": f.sha256 or "", "size": f.size_bytes if f.size_exact else 0, "role": role}]
    folder = str(Path(f.file).parent)
    known = dict(model.extra_sha256)
    for extra in model.extra_files:
        entries.append({"name": f"{folder}/{extra}", "sha256": known.get(extra, ""), "size": 0, "role": role})
    return entries


def _memory(host: str, hostvars: dict, kind: str) -> tuple[int | None, int | None, int, str]:
    """GPU memory, RAM and the driver's GPU reserve in bytes, and an error where the host has less than the inventory says.

    The inventory wins, so that `schulki plan` (which sees only the inventory)
    and the playbook (which also sees the host) plan with the same figures; the
    playbook's own readings (nvidia-smi, gathered facts) fill what the
    inventory leaves out and catch an inventory that promises too much.
    """
    gpu_set = _int_var(host, hostvars, "schulki_plan_gpu_memory_mib")
    gpu_seen = int(hostvars.get("schulki_plan_gpu_memory_mib_detected") or 0)
    ram_set = _int_var(host, hostvars, "schulki_plan_ram_mib")
    ram_seen = int(hostvars.get("ansible_memtotal_mb") or 0)
    reserved_seen = int(hostvars.get("schulki_plan_gpu_reserved_mib_detected") or 0) * MiB
    error = ""
    if kind == "gpu" and gpu_set and gpu_seen and gpu_seen < gpu_set * GPU_FIGURE_TOLERANCE:
        error = f"{host}: the inventory says {gpu_set} MiB of GPU memory (schulki_plan_gpu_memory_mib), nvidia-smi reports {gpu_seen} MiB"
    elif ram_set and ram_seen and ram_seen < ram_set * RAM_FIGURE_TOLERANCE:
        error = f"{host}: the inventory says {ram_set} MiB of RAM (schulki_plan_ram_mib), the host reports {ram_seen} MiB"
    gpu_mib = gpu_set or gpu_seen
    ram_mib = ram_set or ram_seen
    return (gpu_mib * MiB or None), (ram_mib * MiB or None), max(DRIVER_RESERVED_BYTES, reserved_seen), error


def _hardware(host: str, hostvars: dict, kind: str) -> str:
    """Why the images cannot run on this host (CPU level, NVIDIA driver), from the inventory and the playbook's readings."""
    flags = hostvars.get("schulki_plan_cpu_flags_detected")
    error = cpu_error(
        host,
        str(_var(hostvars, "schulki_plan_cpu_level")),
        None if flags is None else str(flags),
        str(_var(hostvars, "schulki_plan_image_cpu_level")),
    )
    if error or kind != "gpu":
        return error
    rc = hostvars.get("schulki_plan_nvidia_smi_rc_detected")
    output = hostvars.get("schulki_plan_nvidia_smi_output_detected") or ""
    output = output if isinstance(output, list) else str(output)
    return driver_error(host, None if rc in (None, "") else int(rc), output, str(_var(hostvars, "schulki_plan_cuda_version")))


def _speech_that_fits(catalog: Catalog, usable: int) -> list[str]:
    """Speech models of the catalog whose GPU memory fits in `usable` bytes, largest first."""
    fitting = [m for m in catalog.of_kind("speech") if not m.test_only and speech_gpu_bytes(m.files[0].size_bytes, 1) <= usable]
    return [
        f"{m.id} ({speech_gpu_bytes(m.files[0].size_bytes, 1) / GiB:.1f} GiB)"
        for m in sorted(fitting, key=lambda m: -m.files[0].size_bytes)
    ]


def host_plan(
    host: str, hostvars: dict, catalog: Catalog | None = None, quality_floor: Callable[[str, str], frozenset[str]] | None = None
) -> dict:
    """Services, model files and schulki settings for one inventory host; "error" says what is missing.

    quality_floor(model id, node kind) names the chat quants the admin's quality floor rules out
    (``schulki.evaluation.planning.quality_floor``).
    """
    catalog = catalog or load_catalog()
    kind = str(_var(hostvars, "schulki_plan_node_kind"))
    if kind not in SERVICES:
        raise FleetError(f"{host}: schulki_plan_node_kind must be one of {', '.join(SERVICES)}, not {kind!r}")
    gpu, ram, driver_reserved, wrong_figure = _memory(host, hostvars, kind)
    wrong_hardware = _hardware(host, hostvars, kind)
    result: dict = {
        "host": host,
        "kind": kind,
        "services": SERVICES[kind],
        "chat": None,
        "embeddings": None,
        "speech": None,
        "files": [],
        "settings": {},
        "limits": {},
        "error": "",
    }
    if wrong_hardware or wrong_figure:
        result["error"] = wrong_hardware or wrong_figure
        return result
    work = workload(host, hostvars)
    if kind == "gateway":
        return _gateway_plan(host, hostvars, catalog, ram, result)
    machine = _chat_machine(host, hostvars, catalog, kind, gpu, ram, driver_reserved, result)
    if machine is None:
        return result
    return _chat_plan(host, hostvars, catalog, kind, machine, work, quality_floor, result)


def _gateway_plan(host: str, hostvars: dict, catalog: Catalog, ram: int | None, result: dict) -> dict:
    """The gateway host: the embedding model on its CPU, and retrieval over Weaviate."""
    settings = result["settings"]
    model_id = str(_var(hostvars, "schulki_plan_embeddings_model"))
    quant = str(_var(hostvars, "schulki_plan_embeddings_quant"))
    if ram is None:
        result["error"] = f"{host}: set schulki_plan_ram_mib (RAM in MiB) or let the playbook gather facts"
        return result
    model = catalog.model(model_id)
    emb_work = Workload(context_length=model.training_context, batch_size=min(512, model.training_context))
    p = plan(model_id, Machine("cpu", ram, name=host), emb_work, quant=quant, catalog=catalog)
    result["embeddings"] = p.as_dict()
    result["files"] = _file_entry(catalog, model_id, p.quant, "embeddings")
    settings["embeddings"] = {"model_path": f"{MODELS_DIR}/{p.file}", "gpu_layers": 0}
    result["limits"] = {"weaviate_memory_mib": weaviate_memory_limit(p.estimate.total, ram)}
    settings["retrieval"] = {
        "embeddings_address": compose_address("embeddings"),
        "store": "weaviate",
        "weaviate_url": f"http://weaviate:{WEAVIATE_HTTP_PORT}",
    }
    return result


def _chat_machine(
    host: str, hostvars: dict, catalog: Catalog, kind: str, gpu: int | None, ram: int | None, driver_reserved: int, result: dict
) -> Machine | None:
    """The machine the chat model is planned on (a GPU node keeps room for its speech model); None with result["error"] set
    when a figure is missing. A speech model too large for the GPU is an error too, but the chat plan still runs to say
    what the chat model would need."""
    settings = result["settings"]
    if kind != "gpu":
        if ram is None:
            result["error"] = f"{host}: set schulki_plan_ram_mib (RAM in MiB) or let the playbook gather facts"
            return None
        return Machine("cpu", ram, name=host)
    speech = catalog.model(str(_var(hostvars, "schulki_plan_speech_model")))
    # Unbatched first: the chat plan comes first, and batches get what it leaves (see _speech_batch).
    reserved = speech_gpu_bytes(speech.files[0].size_bytes, 1)
    result["speech"] = {
        "model": speech.id,
        "reserved_bytes": reserved,
        "batch_size": 1,
        "batch_bytes": 0,
        "chunk_bytes": batch_chunk_bytes(speech.files[0].size_bytes),
    }
    result["files"] += _file_entry(catalog, speech.id, speech.files[0].quant, "speech")
    settings["transcription"] = {
        "model_path": f"{MODELS_DIR}/{Path(speech.files[0].file).parent}",
        "device": "cuda",
        "batch_size": 1,
    }
    if gpu is None:
        result["error"] = f"{host}: GPU memory unknown: set schulki_plan_gpu_memory_mib or run the playbook, which reads it with nvidia-smi"
        return None
    machine = Machine("gpu", gpu, ram_bytes=ram, reserved_bytes=reserved, name=host, driver_reserved_bytes=driver_reserved)
    usable = max(0, gpu - driver_reserved)
    if reserved > usable:
        smaller = _speech_that_fits(catalog, usable)
        result["error"] = (
            f"{host}: {speech.id} needs about {reserved / GiB:.1f} GiB of GPU memory for transcription, the GPU has "
            f"{usable / GiB:.1f} GiB usable. "
            + (f"A smaller speech model fits: {', '.join(smaller)}. " if smaller else "")
            + "Put this machine in schulki_cpu_nodes, or set schulki_plan_speech_model."
        )
    return machine


def _chat_plan(
    host: str,
    hostvars: dict,
    catalog: Catalog,
    kind: str,
    machine: Machine,
    work: Workload,
    quality_floor: Callable[[str, str], frozenset[str]] | None,
    result: dict,
) -> dict:
    """The chat model's quant and workload on the machine, and the inference settings that serve it."""
    settings = result["settings"]
    reserved = machine.reserved_bytes
    chat_quant = str(_var(hostvars, "schulki_plan_chat_quant")) or None
    chat_model = str(_var(hostvars, "schulki_plan_chat_model"))
    if str(_var(hostvars, "schulki_plan_parallel_sequences")).lower() == "auto":
        work = replace(work, parallel=default_parallel(catalog.model(chat_model), machine, work))
    excluded = quality_floor(chat_model, kind) if quality_floor else frozenset()
    p = plan(chat_model, machine, work, quant=chat_quant, catalog=catalog, exclude_quants=excluded)
    result["chat"] = p.as_dict()
    # The name the node serves under and the gateway routes by; the gateway's settings list it beside the node's address.
    from schulki.models.served import served_name

    result["chat"]["served_model"] = served_name(Path(p.file).name, catalog=catalog)
    if reserved:
        speech = _speech_batch(result)
        reserved = speech["reserved_bytes"]
        batches = f", {speech['batch_bytes'] / GiB:.2f} GiB of it for batches of {speech['batch_size']}" if speech["batch_size"] > 1 else ""
        result["chat"]["reason"] += f" (Transcription keeps {reserved / GiB:.1f} GiB of the GPU{batches}.)"
    if result["error"]:  # Whisper does not fit: say too what the chat model would need
        if not p.fits:
            result["error"] += " " + p.reason
        return result
    if not p.fits:
        result["error"] = f"{host}: {p.reason}"
        return result
    result["files"] = _file_entry(catalog, p.model, p.quant, "chat") + result["files"]
    settings["inference"] = {
        "model_path": f"{MODELS_DIR}/{p.file}",
        "context_length": p.context_length,
        "parallel_sequences": p.parallel,
        "gpu_layers": -1 if kind == "gpu" and p.gpu_layers >= p.layers else p.gpu_layers,
        "batch_size": work.batch_size,
        "flash_attention": work.flash_attention,  # on CPUs too: faster there, and a smaller compute buffer
        "kv_cache_type": p.kv_cache_type,
    }
    settings["inference"]["model_name"] = result["chat"]["served_model"]
    if kind == "cpu":  # a lab PC: its user keeps the rest (a GPU node's model lives in GPU memory)
        result["limits"] = {"inference_memory_mib": inference_memory_limit(p.estimate.total, machine.memory_bytes)}
    return result


def read_inventory(inventory: str) -> dict[str, dict]:
    """Every host of an Ansible inventory with its merged variables, through ``ansible-inventory --list``."""
    command = shutil.which("ansible-inventory", path=str(Path(sys.executable).parent)) or shutil.which("ansible-inventory")
    if command is None:
        raise FleetError("ansible-inventory is not installed (pip install ansible-core)")
    run = subprocess.run([command, "-i", inventory, "--list"], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise FleetError(
            f"ansible-inventory cannot read {inventory}: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}"
        )
    data = json.loads(run.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    hosts = set(hostvars)
    for group in data.values():
        if isinstance(group, dict):
            hosts.update(group.get("hosts", []))
    return {host: hostvars.get(host, {}) for host in sorted(hosts)}


def plan_table(plans: list[dict]) -> str:
    """The table ``schulki plan`` prints: host, model, quant, context, GPU layers, memory, reason."""
    header = ("host", "kind", "model", "quant", "context", "GPU layers", "memory", "reason")
    rows = []
    for hp in plans:
        p = hp["chat"] or hp["embeddings"]
        if hp["error"] or p is None:
            rows.append((hp["host"], hp["kind"], "?", "?", "?", "?", "?", hp["error"]))
            continue
        layers = "all" if hp["kind"] == "gpu" and p["gpu_layers"] >= p["layers"] else f"{p['gpu_layers']}/{p['layers']}"
        if hp["kind"] != "gpu":
            layers = "0 (CPU)"
        ctx = f"{p['context_length']}x{p['parallel']}"
        memory = f"{p['estimate']['total'] / GiB:.1f}/{p['budget'] / GiB:.1f} GiB"
        reason = p["reason"] if p["fits"] else "DOES NOT FIT: " + p["reason"]
        rows.append(
            (hp["host"], hp["kind"], p["model"], p["quant"] + (" (last resort)" if p["last_resort"] else ""), ctx, layers, memory, reason)
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + str(r[-1]))
    return "\n".join(lines)


def plan_inventory(
    inventory: str, quality_floor: Callable[[str, str], frozenset[str]] | None = None, catalog: Catalog | None = None
) -> list[dict]:
    """The plan of every host of an inventory that has a schulki role."""
    catalog = catalog or load_catalog()
    plans = []
    for host, hostvars in read_inventory(inventory).items():
        if "schulki_plan_node_kind" not in hostvars:
            continue  # not a schulki host (for example the mirror)
        plans.append(host_plan(host, hostvars, catalog, quality_floor))
    return plans
