"""The planner with measurements: figures beside the chosen quant, and the admin's quality floor (no quant above a mean KLD)."""

from __future__ import annotations

import subprocess
import sys

from schulki.evaluation import report
from schulki.evaluation.planning import measured_beside, quality_floor
from schulki.evaluation.results import load_results, save_result
from schulki.models.catalog import load_catalog
from schulki.models.planner import Machine, Workload, estimate, plan

from tests.conftest import REPO_ROOT

MODEL = "llama-3.1-8b-instruct"
WORK = Workload(context_length=8192, parallel=2, flash_attention=True)


def record(quant: str, kind: str, kld: float, host: str = "ki-gpu", reference: bool = False) -> dict:
    """A stored result as schulki eval writes it, for a catalog file measured on a machine of one kind."""
    file = load_catalog().model(MODEL).file_for(quant).file
    return {
        "schema": 1,
        "host": host,
        "node_kind": kind,
        "device": "GPU" if kind == "gpu" else "CPU",
        "measured_at": "2026-11-29T05:00:00+00:00",
        "file": file,
        "size_bytes": 1,
        "quant": quant,
        "model_name": "Llama 3.1 8B",
        "is_reference": reference,
        "reference_file": "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf",
        "perplexity": 7.0 + 10 * kld,
        "perplexity_error": 0.1,
        "mean_kld": kld,
        "same_top_percent": 100 - 100 * kld,
        "questions": {"correct": 90, "total": 120, "accuracy": 0.75},
        "speed": {"prompt_tokens_per_s": 900.0, "generation_tokens_per_s": 40.0 + 10 * kld},
        "memory": {"total": 2**33},
    }


def stored(tmp_path, records: list[dict]) -> list[dict]:
    for r in records:
        save_result(tmp_path, r)
    return load_results(tmp_path)


def machine_between(quant_fits: str, quant_too_big: str) -> Machine:
    """A GPU whose memory fits one quant but not the next larger one."""
    model = load_catalog().model(MODEL)
    low = estimate(model, model.file_for(quant_fits), WORK).total
    high = estimate(model, model.file_for(quant_too_big), WORK).total
    return Machine("gpu", (low + high) // 2, name="ki-gpu")


def test_the_quality_floor_leaves_out_quants_measured_above_it(tmp_path):
    catalog = load_catalog()
    records = stored(
        tmp_path,
        [
            record("Q8_0", "gpu", 0.0, reference=True),
            record("Q6_K", "gpu", 0.002),
            record("Q5_K_M", "gpu", 0.008),
            record("Q4_K_M", "gpu", 0.03),
            record("Q6_K", "cpu", 0.5, host="pc"),
        ],
    )
    machine = machine_between("Q5_K_M", "Q6_K")
    assert plan(MODEL, machine, WORK).quant == "Q5_K_M"  # memory alone
    excluded = quality_floor(records, catalog, 0.005)(MODEL, "gpu")
    assert excluded == {"Q5_K_M", "Q4_K_M"}  # the CPU measurement of Q6_K does not count for a GPU node
    floored = plan(MODEL, machine, WORK, exclude_quants=excluded)
    # better quality, bought with a lighter workload (or layers on the CPU), since Q6_K does not fit as asked
    assert floored.quant == "Q6_K" and (floored.workload_steps > 0 or floored.gpu_layers < floored.layers)
    assert any("quality floor" in note and "Q5_K_M" in note for note in floored.notes)
    # no floor, or a quant never measured: nothing is left out
    assert quality_floor(records, catalog, None)(MODEL, "gpu") == frozenset()
    assert quality_floor(records, catalog, 0.005)("qwen3-4b", "gpu") == frozenset()


def test_a_floor_no_quant_meets_is_said_plainly(tmp_path):
    catalog = load_catalog()
    records = stored(
        tmp_path,
        [record(q, "gpu", kld) for q, kld in (("Q8_0", 0.001), ("Q6_K", 0.004), ("Q5_K_M", 0.01), ("Q4_K_M", 0.03), ("Q3_K_M", 0.1))],
    )
    p = plan(MODEL, Machine("gpu", 80 * 2**30), WORK, exclude_quants=quality_floor(records, catalog, 0.0005)(MODEL, "gpu"))
    assert not p.fits and "quality floor" in p.reason


def test_plan_shows_measured_figures_beside_the_next_larger_and_smaller_quant(tmp_path):
    catalog = load_catalog()
    records = stored(
        tmp_path, [record("Q8_0", "gpu", 0.0, reference=True), record("Q6_K", "gpu", 0.002), record("Q5_K_M", "cpu", 0.01, host="pc")]
    )
    p = plan(MODEL, machine_between("Q6_K", "Q8_0"), WORK).as_dict()
    assert p["quant"] == "Q6_K"
    larger, chosen, smaller = measured_beside(p, "gpu", records, catalog)
    assert larger.startswith("Q8_0 (larger): PPL 7.00, KLD reference")
    assert chosen.startswith("Q6_K (chosen): PPL 7.02, KLD 0.0020, same top 99.8 %, 40.0 tok/s")
    assert smaller == "Q5_K_M (smaller): not measured on a gpu machine"


def test_schulki_plan_prints_measurements_and_respects_the_floor(tmp_path):
    save_result(tmp_path, record("Q8_0", "gpu", 0.0, reference=True))
    for quant, kld in (("Q6_K", 0.002), ("Q5_K_M", 0.008), ("Q4_K_M", 0.03)):
        save_result(tmp_path, record(quant, "gpu", kld))
    command = [sys.executable, "-m", "schulki.cli", "plan", "-i", str(REPO_ROOT / "inventory" / "example"), "--results", str(tmp_path)]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    floored = subprocess.run([*command, "--max-kld", "0.01"], capture_output=True, text=True, timeout=120)
    assert "Measured (schulki eval)" in plain.stdout and "(chosen): PPL" in plain.stdout
    lines = {line.split()[0]: line for line in plain.stdout.splitlines() if line.startswith("ki-gpu08")}
    floored_lines = {line.split()[0]: line for line in floored.stdout.splitlines() if line.startswith("ki-gpu08")}
    assert "Q4_K_M" in lines["ki-gpu08.schule.example"].split()[3]  # the 8 GB card gets Q4_K_M by memory
    assert "Q4_K_M" not in floored_lines["ki-gpu08.schule.example"].split()[3]  # its KLD is above the floor


def test_the_table_reads_like_a_slide():
    text = report.table([record("Q6_K", "gpu", 0.002), record("Q8_0", "gpu", 0.0, reference=True)])
    header, rule, first, second = text.splitlines()
    assert header.split()[:3] == ["host", "file", "quant"] and set(rule) <= {"-", " "}
    assert "Q8_0" in first and "Referenz" in first and "Q6_K" in second and "0.0020" in second and "99.8 %" in second
    assert "90/120 (75 %)" in second
