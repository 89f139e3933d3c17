"""A stand-in for `nvidia-smi` where no NVIDIA GPU is: answers the two queries of the schulki_plan role like a card would."""

from __future__ import annotations

from pathlib import Path


def install(folder: Path, memory_mib: int, driver: str) -> Path:
    """Write an `nvidia-smi` into folder that reports one card with memory_mib MiB and the given driver version."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *memory.total,driver_version*) echo "{memory_mib}, {driver}" ;;\n'
        '  *memory.reserved*) echo "[N/A]" ;;\n'  # what drivers before the field existed print
        '  *) echo "fake nvidia-smi: unsupported $*" >&2; exit 2 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script
