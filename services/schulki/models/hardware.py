"""What a host must have before schulki's images run there: an NVIDIA driver new enough for the CUDA images, a CPU with AVX2.

``hardware_error`` is part of ``fleet.host_plan``: ``schulki plan`` checks what
the inventory says, the playbook also what it read on the host (nvidia-smi,
/proc/cpuinfo), so a host the images cannot run on stops before anything is
installed or started there. Each message says in German and English what was
found and what is needed.
"""

from __future__ import annotations

CUDA_MIN_DRIVER: dict[str, tuple[int, ...]] = {
    "12.0": (525, 60, 13),
    "12.1": (530, 30, 2),
    "12.2": (535, 54, 3),
    "12.3": (545, 23, 6),
    "12.4": (550, 54, 14),
    "12.5": (555, 42, 2),
    "12.6": (560, 28, 3),
    "12.8": (570, 26),
}
"""Oldest Linux driver per CUDA version (NVIDIA's CUDA release notes, "CUDA Toolkit and Corresponding Driver Versions").

The NVIDIA container toolkit refuses a container whose image requires ``cuda>=X.Y``
(``NVIDIA_REQUIRE_CUDA`` of the nvidia/cuda images) on a driver older than this: on
GeForce cards no compatibility package helps. Debian 12 ships driver 535 (CUDA 12.2).
"""

CUDA_IMAGE_VERSION = "12.6"
"""The CUDA version of the -cuda images as deploy/images/*.Dockerfile build them (nvidia/cuda:12.6.3); the inventory's
schulki_plan_cuda_version names another where a school builds them on another base."""

IMAGE_CPU_LEVEL = "x86-64-v3"
"""The CPU level the images are compiled for by default (deploy/images/install.sh, CPU_LEVEL): AVX2, FMA, F16C."""

_V2 = ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
X86_64_V3_FLAGS = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
"""The /proc/cpuinfo flags x86-64-v3 adds to v2 (``abm`` is how Linux names LZCNT); a program built for it dies with
"illegal instruction" on a CPU without one of them."""
LEVEL_FLAGS: dict[str, tuple[str, ...]] = {
    "x86-64-v2": _V2,
    "x86-64-v3": _V2 + X86_64_V3_FLAGS,
    "x86-64-v4": _V2 + X86_64_V3_FLAGS + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}
"""Every flag a CPU needs for each level (the x86-64 psABI's levels, as Linux names the flags)."""
CPU_LEVELS = tuple(LEVEL_FLAGS)


def parse_driver(version: str) -> tuple[int, ...] | None:
    """(535, 216, 1) from nvidia-smi's "535.216.01"; None when it is no version."""
    try:
        return tuple(int(part) for part in version.strip().split("."))
    except ValueError:
        return None


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(f"{part:02d}" if i else str(part) for i, part in enumerate(version))


def driver_error(host: str, nvidia_smi_rc: int | None, nvidia_smi_output: str | list[str], cuda_version: str) -> str:
    """Why this GPU node cannot run the CUDA images, or "" when it can (or when nvidia-smi was not run: schulki plan).

    nvidia_smi_output is what `nvidia-smi --query-gpu=memory.total,driver_version` printed (lines, or one text).
    """
    if cuda_version not in CUDA_MIN_DRIVER:
        return f"{host}: schulki_plan_cuda_version must be one of {', '.join(CUDA_MIN_DRIVER)}, not {cuda_version!r}"
    needed = _dotted(CUDA_MIN_DRIVER[cuda_version])
    if nvidia_smi_rc is None:
        return ""
    text = nvidia_smi_output if isinstance(nvidia_smi_output, str) else "\n".join(map(str, nvidia_smi_output))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if nvidia_smi_rc != 0:
        said = f"exit status {nvidia_smi_rc}" + (f": {lines[-1]}" if lines else "")
        return (
            f"{host}: nvidia-smi funktioniert nicht ({said}); installieren Sie den NVIDIA-Treiber >= {needed} und starten Sie neu. "
            f"nvidia-smi fails on this GPU node ({said}): install the NVIDIA driver >= {needed} (CUDA {cuda_version} images) and reboot, "
            "or put the host in schulki_cpu_nodes."
        )
    found = [parse_driver(line.split(",")[-1]) for line in lines if "," in line]  # "memory, driver" per card
    if not found or None in found:
        return f"{host}: nvidia-smi reports no driver version ({text.strip()!r})"
    oldest = min(v for v in found if v is not None)
    if oldest < CUDA_MIN_DRIVER[cuda_version]:
        return (
            f"{host}: NVIDIA-Treiber {_dotted(oldest)} ist zu alt, die CUDA-{cuda_version}-Images brauchen >= {needed}. "
            f"NVIDIA driver {_dotted(oldest)} is too old: the CUDA {cuda_version} images need >= {needed} "
            "(Debian 12 ships 535: install one from NVIDIA's Debian 12 repository, "
            "or build the images on a CUDA version this driver has and set schulki_plan_cuda_version)."
        )
    return ""


def cpu_error(host: str, inventory_level: str, cpu_flags: str | None, image_level: str = IMAGE_CPU_LEVEL) -> str:
    """Why this host's CPU cannot run images built for image_level, or "" when it can or nothing is known about it.

    inventory_level is schulki_plan_cpu_level ("" when the inventory does not say); cpu_flags the
    "flags" line of the host's /proc/cpuinfo (None where the host was not asked: schulki plan).
    """
    for name, level in (("schulki_plan_cpu_level", inventory_level), ("schulki_plan_image_cpu_level", image_level)):
        if level and level not in CPU_LEVELS:
            return f"{host}: {name} must be one of {', '.join(CPU_LEVELS)}, not {level!r}"
    german = f"{host}: Die CPU hat nicht alles von {image_level}, für das die schulki-Images gebaut sind; nehmen Sie den Rechner aus dem Inventar. "
    if image_level == "x86-64-v3":
        german = (
            f"{host}: Die CPU hat kein AVX2 ({image_level}), das die schulki-Images brauchen; nehmen Sie den Rechner aus dem Inventar. "
        )
    needs = f"the images need {image_level}" + (" (AVX2, FMA, F16C; Intel from 2013, AMD from 2015)" if image_level == "x86-64-v3" else "")
    if inventory_level and CPU_LEVELS.index(inventory_level) < CPU_LEVELS.index(image_level):
        return (
            german
            + f"The CPU is {inventory_level} (schulki_plan_cpu_level)"
            + (" and has no AVX2" if inventory_level == "x86-64-v2" else "")
            + f": {needs}. Take this PC out of the inventory, or build the images with CPU_LEVEL={inventory_level} "
            "and set schulki_plan_image_cpu_level."
        )
    if cpu_flags is None:
        return ""
    have = set(cpu_flags.split(":", 1)[-1].split())
    missing = [flag for flag in LEVEL_FLAGS[image_level] if flag not in have]
    if missing:
        return (
            german + f"The CPU lacks {', '.join(missing)} (/proc/cpuinfo): {needs} and would stop with 'illegal instruction'. "
            "Take this PC out of the inventory."
        )
    return ""
