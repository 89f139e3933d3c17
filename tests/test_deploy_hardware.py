"""A host the images cannot run on is refused before anything is installed there: an NVIDIA driver older than the CUDA
images need, a GPU node whose nvidia-smi fails, a CPU without AVX2 (x86-64-v3).

The planner's rules are checked directly; the schulki_plan role runs with ansible-playbook against local test hosts,
each with its own PATH: one without nvidia-smi, and tests/fake_nvidia_smi.py reporting Debian 12's driver 535 or a
560 one (no NVIDIA GPU here). The CPU flags are this machine's own /proc/cpuinfo.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from schulki.models.fleet import FLEET_DEFAULTS, host_plan
from schulki.models.hardware import CUDA_IMAGE_VERSION, CUDA_MIN_DRIVER, IMAGE_CPU_LEVEL, X86_64_V3_FLAGS

from tests import fake_nvidia_smi
from tests.conftest import REPO_ROOT
from tests.test_deploy_ansible import DEPLOY, ansible, recap

GPU_NODE = {
    "schulki_plan_node_kind": "gpu",
    "schulki_plan_gpu_memory_mib": 12288,
    "schulki_plan_chat_model": "gemma-3-270m",
    "schulki_plan_speech_model": "faster-whisper-base",
}
LAB_PC = {"schulki_plan_node_kind": "cpu", "schulki_plan_chat_model": "gemma-3-270m", "schulki_plan_ram_mib": 8192}
# The flags line of a Sandy Bridge Core i5 (2011): AVX and SSE4.2, no AVX2/FMA/F16C/BMI.
SANDY_BRIDGE = "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx rdtscp lm constant_tsc pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 x2apic popcnt aes xsave avx lahf_lm"
HASWELL = SANDY_BRIDGE + " abm fma movbe f16c avx2 bmi1 bmi2"


def smi(rc: int, output: str) -> dict:
    """What the schulki_plan role passes the planner from its nvidia-smi task."""
    return {"schulki_plan_nvidia_smi_rc_detected": str(rc), "schulki_plan_nvidia_smi_output_detected": output}


def test_an_old_driver_is_refused_naming_the_driver_found_and_the_one_needed():
    error = host_plan("gpu12", {**GPU_NODE, **smi(0, "\n12282, 535.216.01\n")})["error"]
    assert "NVIDIA-Treiber 535.216.01 ist zu alt" in error and "NVIDIA driver 535.216.01 is too old" in error
    assert ">= 560.28.03" in error and "CUDA 12.6" in error
    assert not host_plan("gpu12", {**GPU_NODE, **smi(0, "\n12282, 560.35.05\n")})["error"]
    assert not host_plan("gpu12", {**GPU_NODE, **smi(0, "\n12282, 560.28.03\n")})["error"], "the minimum itself is enough"
    # A school that built its images on CUDA 12.2 says so, and Debian's 535 driver is then enough.
    assert not host_plan("gpu12", {**GPU_NODE, **smi(0, "12282, 535.216.01"), "schulki_plan_cuda_version": "12.2"})["error"]
    assert "schulki_plan_cuda_version must be one of" in host_plan("gpu12", {**GPU_NODE, "schulki_plan_cuda_version": "11"})["error"]


def test_a_failing_nvidia_smi_on_a_gpu_node_is_an_error_not_the_inventorys_figure():
    missing = host_plan("gpu12", {**GPU_NODE, **smi(2, "Error executing command.")})
    assert "nvidia-smi funktioniert nicht" in missing["error"] and "nvidia-smi fails on this GPU node" in missing["error"]
    assert "(exit status 2: Error executing command.)" in missing["error"] and ">= 560.28.03" in missing["error"]
    no_driver = host_plan(
        "gpu12",
        {
            **GPU_NODE,
            **smi(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"),
        },
    )
    assert "couldn't communicate with the NVIDIA driver" in no_driver["error"] and no_driver["chat"] is None
    # schulki plan runs no nvidia-smi: it plans from the inventory's figure as before.
    assert not host_plan("gpu12", GPU_NODE)["error"]
    assert not host_plan("pc", {**LAB_PC, **smi(2, "not found")})["error"], "a lab PC needs no nvidia-smi"


def test_a_cpu_without_avx2_is_refused_from_the_inventory_and_from_its_flags():
    from_inventory = host_plan("pc-old", {**LAB_PC, "schulki_plan_cpu_level": "x86-64-v2"})["error"]
    assert "Die CPU hat kein AVX2" in from_inventory and "has no AVX2: the images need x86-64-v3" in from_inventory
    from_flags = host_plan("pc-old", {**LAB_PC, "schulki_plan_cpu_flags_detected": SANDY_BRIDGE})["error"]
    assert "The CPU lacks avx2, bmi1, bmi2, f16c, fma, abm, movbe (/proc/cpuinfo)" in from_flags
    assert not host_plan("pc-new", {**LAB_PC, "schulki_plan_cpu_flags_detected": HASWELL})["error"]
    # a GPU node and the gateway run x86-64-v3 images too; an ARM board has no flags line at all
    assert "lacks avx2" in host_plan("gpu12", {**GPU_NODE, "schulki_plan_cpu_flags_detected": SANDY_BRIDGE})["error"]
    gateway = {"schulki_plan_node_kind": "gateway", "schulki_plan_ram_mib": 8192}
    assert "The CPU lacks cx16" in host_plan("gw", {**gateway, "schulki_plan_cpu_flags_detected": ""})["error"]
    # A school that built its images with CPU_LEVEL=x86-64-v2 says so, and the old PC may run them.
    v2_images = {**LAB_PC, "schulki_plan_image_cpu_level": "x86-64-v2"}
    assert not host_plan("pc-old", {**v2_images, "schulki_plan_cpu_level": "x86-64-v2", "schulki_plan_cpu_flags_detected": SANDY_BRIDGE})[
        "error"
    ]
    assert "must be one of" in host_plan("pc", {**LAB_PC, "schulki_plan_cpu_level": "haswell"})["error"]
    assert not host_plan("pc", {**LAB_PC, "schulki_plan_cpu_level": "x86-64-v4"})["error"]


def test_the_driver_table_and_the_cpu_level_match_the_images():
    assert FLEET_DEFAULTS["schulki_plan_cuda_version"] == CUDA_IMAGE_VERSION and CUDA_IMAGE_VERSION in CUDA_MIN_DRIVER
    for dockerfile in (REPO_ROOT / "deploy" / "images").glob("*.Dockerfile"):
        text = dockerfile.read_text()
        assert f"ARG CPU_LEVEL={IMAGE_CPU_LEVEL}" in text, dockerfile.name
        for version in re.findall(r"nvidia/cuda:(\d+\.\d+)\.\d+", text):
            assert version == CUDA_IMAGE_VERSION, f"{dockerfile.name} builds on CUDA {version}: update CUDA_IMAGE_VERSION"
    # Debian 12's driver series is below what the images need: the reason the check exists.
    assert CUDA_MIN_DRIVER["12.2"][0] == 535 < CUDA_MIN_DRIVER[CUDA_IMAGE_VERSION][0]
    assert set(X86_64_V3_FLAGS) >= {"avx2", "fma", "f16c"}


def test_schulki_plan_refuses_the_example_lab_pc_without_avx2():
    run = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "plan", "-i", str(REPO_ROOT / "inventory" / "example")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {line.split()[0]: line for line in run.stdout.strip().splitlines()[1:]}
    assert run.returncode == 1, "a host that cannot run the images makes the plan fail"
    assert "Die CPU hat kein AVX2" in rows["pc-raum014-01.schule.example"]
    assert "x86-64-v2 (schulki_plan_cpu_level) and has no AVX2" in rows["pc-raum014-01.schule.example"]
    assert [host for host, row in rows.items() if "?" in row.split()[2]] == ["pc-raum014-01.schule.example"]


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory):
    """The schulki_plan role on five local hosts, each with its own PATH (with or without a stand-in nvidia-smi)."""
    base = tmp_path_factory.mktemp("hardware")
    old, new = base / "driver-535", base / "driver-560"
    fake_nvidia_smi.install(old, 12288, "535.216.01")
    fake_nvidia_smi.install(new, 12288, "560.35.05")
    system_path = f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    hosts = {
        "gpu-no-driver": {**GPU_NODE, "schulki_test_path": system_path},
        "gpu-535": {**GPU_NODE, "schulki_test_path": f"{old}{os.pathsep}{system_path}"},
        "gpu-560": {**GPU_NODE, "schulki_test_path": f"{new}{os.pathsep}{system_path}"},
        "pc-old": {**LAB_PC, "schulki_plan_cpu_level": "x86-64-v2", "schulki_test_path": system_path},
        "pc-new": {**LAB_PC, "schulki_test_path": system_path},
    }
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "hosts": hosts,
        }
    }
    (base / "hosts.yml").write_text(yaml.safe_dump(inventory))
    play = [
        {
            "name": "Plan the test hosts",
            "hosts": "all",
            "gather_facts": False,
            "environment": {"PATH": "{{ schulki_test_path }}"},
            "roles": ["schulki_plan"],
        }
    ]
    (base / "plan.yml").write_text(yaml.safe_dump(play))
    (base / "ansible.cfg").write_text(f"[defaults]\nroles_path = {DEPLOY / 'roles'}\nfilter_plugins = {DEPLOY / 'filter_plugins'}\n")
    return ansible("ansible-playbook", "-i", str(base / "hosts.yml"), str(base / "plan.yml"), cwd=base, timeout=300)


def _failure(output: str, host: str) -> str:
    match = re.search(rf"fatal: \[{re.escape(host)}\]: FAILED! => (.*)", output)
    return match[1] if match else ""


def test_the_playbook_stops_a_gpu_node_with_an_old_driver_or_no_nvidia_smi_and_a_pc_without_avx2(plan_run):
    output = plan_run.stdout
    result = recap(output)
    assert result["gpu-560"]["failed"] == 0 and result["pc-new"]["failed"] == 0, output[-4000:]
    assert "NVIDIA driver 535.216.01 is too old: the CUDA 12.6 images need >= 560.28.03" in _failure(output, "gpu-535"), output[-4000:]
    assert "nvidia-smi fails on this GPU node (exit status 2: Error executing command.)" in _failure(output, "gpu-no-driver")
    assert "has no AVX2: the images need x86-64-v3" in _failure(output, "pc-old")
    assert all(result[h]["failed"] == 1 for h in ("gpu-535", "gpu-no-driver", "pc-old"))
