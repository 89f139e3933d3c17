"""The planner's choice rules as properties over many machines: more memory never plans worse, a CPU gets the fastest
quant at the quality floor, a GPU keeps every layer when a lighter workload allows it, and what cannot fit is refused
with a size that really would fit. Also how inventory figures and the host's own readings agree."""

from __future__ import annotations

import re

import pytest
from schulki.config import TranscriptionConfig
from schulki.models.catalog import load_catalog
from schulki.models.fleet import SPEECH_GPU_FACTOR, batch_chunk_bytes, host_plan, speech_gpu_bytes
from schulki.models.planner import DRIVER_RESERVED_BYTES, GiB, Machine, MiB, Workload, cpu_order, estimate, lighter_workloads, plan

CATALOG = load_catalog()
WHISPER_TURBO = speech_gpu_bytes(CATALOG.model("faster-whisper-large-v3-turbo").files[0].size_bytes, 1)  # before its batches
CHAT_MODELS = [m.id for m in CATALOG.of_kind("chat") if not m.test_only]
GPU_NODE = {
    "schulki_plan_node_kind": "gpu",
    "schulki_plan_chat_model": "llama-3.1-8b-instruct",
    "schulki_plan_context_length": 8192,
    "schulki_plan_parallel_sequences": 2,
    "schulki_plan_flash_attention": True,
    "schulki_plan_speech_model": "faster-whisper-large-v3-turbo",
}
CPU_NODE = {
    "schulki_plan_node_kind": "cpu",
    "schulki_plan_chat_model": "qwen3-4b",
    "schulki_plan_context_length": 4096,
    "schulki_plan_parallel_sequences": 1,
    "schulki_plan_flash_attention": False,
}


def gpu(mib: int, reserved: int = 0, ram: int | None = None) -> Machine:
    return Machine("gpu", mib * MiB, ram_bytes=ram, reserved_bytes=reserved, driver_reserved_bytes=DRIVER_RESERVED_BYTES)


def rank(p) -> tuple:
    """How good a plan is, best highest, in the order the planner tries its options."""
    on_device = p.kind == "cpu" or p.gpu_layers >= p.layers
    quality = 0 if p.kind == "cpu" else CATALOG.quant_rank(p.quant)  # on a CPU the quant is fixed by the speed rule
    return (p.fits, on_device, not p.last_resort, -p.workload_steps, quality, p.gpu_layers)


@pytest.mark.parametrize("kind", ["gpu", "cpu", "apple"])
@pytest.mark.parametrize(
    "model_id,work",
    [
        ("llama-3.1-8b-instruct", Workload(8192, 2, flash_attention=True)),
        ("aya-23-35b", Workload(8192, 1, flash_attention=True)),
        ("gemma-3-12b-it", Workload(32768, 1, full_swa_cache=False)),
        ("qwen3-4b", Workload(4096, 1)),
        ("mistral-small-3.1-24b-instruct", Workload(16384, 4, flash_attention=True)),
    ],
)
def test_more_memory_never_gets_a_worse_plan(kind, model_id, work):
    reserved = WHISPER_TURBO if kind == "gpu" else 0
    previous = None
    for mib in range(64, 64 * 1024, 96):
        machine = Machine(kind, mib * MiB, reserved_bytes=reserved, driver_reserved_bytes=DRIVER_RESERVED_BYTES if kind == "gpu" else 0)
        p = plan(model_id, machine, work, catalog=CATALOG)
        if previous is not None:
            assert rank(p) >= previous[1], (
                f"{model_id} on {kind}: {mib} MiB plans {p.quant}/{p.gpu_layers} layers/{p.workload_steps} steps, {previous[0]} MiB planned better"
            )
        previous = (mib, rank(p), p)
    assert p.fits and p.workload_steps == 0 and not p.last_resort
    assert p.quant == ("Q4_K_M" if kind == "cpu" else "Q8_0")


@pytest.mark.parametrize("model_id", CHAT_MODELS)
def test_cpu_nodes_never_get_a_quant_slower_than_the_fastest_one_at_the_quality_floor(model_id):
    model = CATALOG.model(model_id)
    standard = [f for f in model.files if not f.last_resort]
    at_floor = [f for f in standard if CATALOG.quant_rank(f.quant) >= CATALOG.quant_rank(CATALOG.quality_floor)]
    fastest = min(at_floor, key=lambda f: f.size_bytes)
    assert cpu_order(CATALOG, standard)[0] == fastest and fastest.quant == "Q4_K_M"
    work = Workload(4096, 1)
    for gib in range(4, 96, 2):
        p = plan(model_id, Machine("cpu", gib * GiB), work, catalog=CATALOG)
        if p.fits:
            assert model.file_for(p.quant).size_bytes <= fastest.size_bytes, (
                f"{model_id}, {gib} GiB RAM: {p.quant} is slower than {fastest.quant}"
            )
        if estimate(model, fastest, work, "cpu").total <= Machine("cpu", gib * GiB).budget:
            assert p.quant == fastest.quant and p.workload_steps == 0
            assert "fastest quant at the quality floor" in p.reason and "slower" in p.reason


def test_an_admin_may_still_force_a_slower_quant_on_a_cpu():
    p = plan("qwen3-4b", Machine("cpu", 32 * GiB), Workload(4096, 1), quant="Q8_0", catalog=CATALOG)
    assert p.quant == "Q8_0" and p.fits


@pytest.mark.parametrize("model_id", CHAT_MODELS)
def test_a_gpu_keeps_every_layer_whenever_a_lighter_workload_or_smaller_quant_allows_it(model_id):
    model = CATALOG.model(model_id)
    work = Workload(min(8192, model.training_context), 2, flash_attention=True)
    ladder = [work] + [w for w, _ in lighter_workloads(work, Machine("gpu", GiB))]
    for mib in range(2048, 48 * 1024, 256):
        machine = gpu(mib, reserved=WHISPER_TURBO)
        p = plan(model_id, machine, work, catalog=CATALOG)
        could = any(estimate(model, f, w, "gpu").total <= machine.budget for f in model.files for w in ladder)
        if could:
            assert p.fits and p.gpu_layers == model.layers, (
                f"{model_id} on {mib} MiB: {p.gpu_layers}/{model.layers} layers although every layer could fit"
            )


def test_an_8_gb_card_gets_every_layer_of_llama_with_a_lighter_workload_instead_of_offloading():
    model, work, machine = CATALOG.model("llama-3.1-8b-instruct"), Workload(8192, 2, flash_attention=True), gpu(8192)
    assert all(estimate(model, f, work, "gpu").total > machine.budget for f in model.files if not f.last_resort), (
        "no standard quant fits as asked"
    )
    p = plan(model.id, machine, work, catalog=CATALOG)
    assert p.fits and p.gpu_layers == 32 and not p.last_resort
    assert p.kv_cache_type == "q8_0" and p.workload_steps >= 1 and "q8_0 KV cache" in p.reason
    with_whisper = plan(model.id, gpu(8192, reserved=WHISPER_TURBO), work, catalog=CATALOG)
    assert (
        with_whisper.fits
        and with_whisper.gpu_layers == 32
        and with_whisper.parallel == 1
        and "one conversation at a time" in with_whisper.reason
    )


def test_the_gpu_budget_leaves_out_what_the_driver_keeps():
    assert Machine("gpu", 8 * GiB, driver_reserved_bytes=512 * MiB).budget == 8 * GiB - 512 * MiB
    assert Machine("gpu", 8 * GiB, driver_reserved_bytes=512 * MiB, reserved_bytes=GiB).budget == 7 * GiB - 512 * MiB
    assert Machine("cpu", 8 * GiB, driver_reserved_bytes=512 * MiB).budget == 6 * GiB, "RAM has no GPU driver reserve"
    inventory_only = host_plan("gpu12", {**GPU_NODE, "schulki_plan_gpu_memory_mib": 12288})
    assert inventory_only["chat"]["budget"] == 12288 * MiB - DRIVER_RESERVED_BYTES - WHISPER_TURBO
    bigger_reserve = host_plan(
        "gpu12",
        {
            **GPU_NODE,
            "schulki_plan_gpu_memory_mib": 12288,
            "schulki_plan_gpu_memory_mib_detected": 12288,
            "schulki_plan_gpu_reserved_mib_detected": 900,
        },
    )
    assert bigger_reserve["chat"]["budget"] == (12288 - 900) * MiB - WHISPER_TURBO


def _at_least(message: str) -> int:
    return int(float(re.search(r"at least (\d+\.\d) GiB", message)[1]) * GiB + 0.05 * GiB)


def test_a_gpu_too_small_for_the_smallest_quant_and_for_whisper_is_refused_with_what_would_fit():
    result = host_plan("tiny", {**GPU_NODE, "schulki_plan_gpu_memory_mib": 64})
    assert result["error"], "a 64 MiB GPU must not be deployed"
    message = result["error"]
    assert "faster-whisper-large-v3-turbo needs about 2.3 GiB" in message and "transcription" in message
    assert "Does not fit" in message and "needs a GPU with at least" in message
    # The size the message names really is enough: the same node with that much GPU memory plans every layer.
    enough = host_plan("tiny", {**GPU_NODE, "schulki_plan_gpu_memory_mib": _at_least(message) // MiB})
    assert (
        not enough["error"]
        and enough["chat"]["gpu_layers"] == enough["chat"]["layers"]
        and enough["settings"]["transcription"]["device"] == "cuda"
    )


def test_a_gpu_with_room_for_whisper_but_not_the_model_is_refused_and_told_a_smaller_model_or_size():
    result = host_plan("small", {**GPU_NODE, "schulki_plan_gpu_memory_mib": 4096})
    assert result["error"] and "Does not fit" in result["error"]
    assert "Use " in result["error"] or "No smaller model" in result["error"]
    assert not host_plan("small", {**GPU_NODE, "schulki_plan_gpu_memory_mib": _at_least(result["error"]) // MiB})["error"]
    p = plan("aya-23-35b", gpu(12 * 1024), Workload(8192, 1, flash_attention=True), catalog=CATALOG)
    assert not p.fits and p.suggestion and CATALOG.model(p.suggestion).parameters < 35e9 and p.suggestion in p.reason


def test_offloading_is_the_last_choice_and_checks_the_ram_when_it_is_known():
    work = Workload(8192, 2, flash_attention=True)
    with_ram = plan("aya-23-35b", gpu(14 * 1024, ram=8 * 1024 * MiB), work, catalog=CATALOG)
    without = plan("aya-23-35b", gpu(14 * 1024), work, catalog=CATALOG)
    assert 0 < without.gpu_layers < without.layers and without.fits and "RAM not given" in " ".join(without.notes)
    assert not with_ram.fits and "RAM" in with_ram.reason


def test_schulki_plan_and_the_playbook_plan_alike_and_a_host_with_less_than_the_inventory_says_is_refused():
    gpu_inventory = {**GPU_NODE, "schulki_plan_gpu_memory_mib": 12288}
    playbook = {
        **gpu_inventory,
        "schulki_plan_gpu_memory_mib_detected": 12282,
        "schulki_plan_gpu_reserved_mib_detected": 300,
        "ansible_memtotal_mb": 31900,
    }
    assert host_plan("n", gpu_inventory)["chat"] == host_plan("n", playbook)["chat"]
    wrong_gpu = host_plan("n", {**gpu_inventory, "schulki_plan_gpu_memory_mib_detected": 8188})
    assert "12288 MiB of GPU memory" in wrong_gpu["error"] and "8188" in wrong_gpu["error"]
    cpu_inventory = {**CPU_NODE, "schulki_plan_ram_mib": 16384}
    assert host_plan("pc", cpu_inventory)["chat"] == host_plan("pc", {**cpu_inventory, "ansible_memtotal_mb": 15890})["chat"]
    wrong_ram = host_plan("pc", {**cpu_inventory, "ansible_memtotal_mb": 7900})
    assert "16384 MiB of RAM" in wrong_ram["error"] and "7900" in wrong_ram["error"]
    assert "schulki_plan_ram_mib" in host_plan("pc", CPU_NODE)["error"], "without a RAM figure schulki plan says so rather than guess"


def test_the_rendered_settings_carry_the_lighter_workload_the_plan_chose():
    result = host_plan("gpu08", {**GPU_NODE, "schulki_plan_gpu_memory_mib": 8192})
    chat, inference = result["chat"], result["settings"]["inference"]
    assert not result["error"] and chat["gpu_layers"] == chat["layers"] and inference["gpu_layers"] == -1
    assert (inference["kv_cache_type"], inference["parallel_sequences"], inference["context_length"]) == (
        chat["kv_cache_type"],
        chat["parallel"],
        chat["context_length"],
    )
    assert chat["workload_steps"] >= 1


def test_a_batch_of_large_v2_takes_what_faster_whisper_measured():
    """faster-whisper's README: large-v2 at fp16 on a GPU, 4525 MB unbatched and 6090 MB with batch_size 8."""
    assert 7 * batch_chunk_bytes(3_090_000_000) == pytest.approx((6090 - 4525) * 1e6, rel=0.15)


def test_the_plan_keeps_room_for_the_transcription_batch():
    """A GPU node's plan reserves the speech model and, beside it, each further chunk of a transcription batch, and
    sets the node to decode exactly that batch; the batch gets only what the chat plan leaves, so a small card gets a
    smaller batch and keeps every layer of the chat model."""
    batch = TranscriptionConfig().batch_size
    assert batch > 1
    model_bytes = CATALOG.model("faster-whisper-large-v3-turbo").files[0].size_bytes
    chunk = batch_chunk_bytes(model_bytes)
    assert 7 * chunk > 0.5 * GiB  # large-v3-turbo in batches of 8 (faster-whisper's README: large-v2 needs 1.5 GB more)
    roomy = host_plan("gpu1", {**GPU_NODE, "schulki_plan_gpu_memory_mib": 24576, "schulki_plan_ram_mib": 65536}, CATALOG)
    assert not roomy["error"], roomy["error"]
    assert roomy["speech"]["batch_size"] == batch and roomy["speech"]["batch_bytes"] == (batch - 1) * chunk
    assert roomy["speech"]["reserved_bytes"] == int(model_bytes * SPEECH_GPU_FACTOR) + (batch - 1) * chunk
    assert roomy["settings"]["transcription"]["batch_size"] == batch
    assert f"for batches of {batch}" in roomy["chat"]["reason"]
    small = host_plan("gpu8", {**GPU_NODE, "schulki_plan_gpu_memory_mib": 8192, "schulki_plan_ram_mib": 32768}, CATALOG)
    chat, speech = small["chat"], small["speech"]
    assert chat["fits"] and chat["gpu_layers"] >= chat["layers"], chat["reason"]
    assert 1 <= speech["batch_size"] < batch and small["settings"]["transcription"]["batch_size"] == speech["batch_size"]
    assert chat["estimate"]["total"] + speech["batch_bytes"] <= chat["budget"], "the batch fits beside the chat model"
    assert chat["estimate"]["total"] + speech["batch_bytes"] + chunk > chat["budget"], "and one more chunk would not"
