"""Generate the Python gRPC code from proto/.

The generated modules land beside the service that owns them, for example
``services/schulki/inference/v1/inference_service_pb2.py``. They are not
committed: the set-up script runs this module before every run and every test
run, and ``--check`` fails when the files on disk differ from what the protos
give, so stale generated code cannot be run or tested.

    python -m schulki.codegen          # write the generated code
    python -m schulki.codegen --check  # exit 1 if it is missing or stale
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

SERVICES_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = SERVICES_DIR.parent
PROTO_DIR = REPO_ROOT / "proto"


def proto_files() -> list[Path]:
    """Return every service contract under proto/, sorted."""
    return sorted(PROTO_DIR.glob("schulki/*/v1/*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Generate messages, stubs and type hints for every proto into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = proto_files()
    if not files:
        raise SystemExit(f"schulki codegen: no .proto files under {PROTO_DIR}")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(f.relative_to(PROTO_DIR)) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("schulki codegen: protoc failed (see above)")
    written = []
    for f in files:
        package_dir = out_dir / f.parent.relative_to(PROTO_DIR)
        init = package_dir / "__init__.py"
        init.write_text('"""Generated from proto/ by schulki.codegen; do not edit."""\n')
        written.extend(sorted(package_dir.iterdir()))
    return written


def stale_files() -> list[str]:
    """Return the generated files that are missing or differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        problems = []
        for path in fresh:
            rel = path.relative_to(tmp)
            if path.suffix not in {".py", ".pyi"}:
                continue
            current = SERVICES_DIR / rel
            if not current.exists() or not filecmp.cmp(path, current, shallow=False):
                problems.append(str(rel))
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schulki.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the generated code is current")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("schulki codegen: generated code is stale or missing: " + ", ".join(stale), file=sys.stderr)
            print("run: python -m schulki.codegen", file=sys.stderr)
            return 1
        return 0
    generate(SERVICES_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
