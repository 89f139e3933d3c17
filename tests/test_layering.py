"""The import direction of services/schulki: floors from the runtime up to the command line, no arrow back up, no circle.

Every import of every module is read from its source (ast), wherever it
stands: at the top, inside a function (the service images import their heavy
libraries late) and inside ``if TYPE_CHECKING:``. Type-only imports count: a
type named from a higher floor ties the lower module to the higher one just as
well (a change up there breaks the check down here), and two modules that name
each other's types are the circle this test is meant to stop.

The generated gRPC code (``schulki.<service>.v1``) is the contract below
everything and is not read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "services"

LAYERS: list[tuple[str, list[str]]] = [
    # The shared ground: settings, the runtime every service runs on, the model catalog and planner, certificates and cores.
    # schulki.retrieval.url_addresses imports nothing of schulki; the settings check allowed_url_hosts with it.
    (
        "runtime",
        [
            "schulki.config",
            "schulki.runtime",
            "schulki.models",
            "schulki.certificates",
            "schulki.cores",
            "schulki.retrieval.url_addresses",
        ],
    ),
    # The gRPC services (retrieval calls the embeddings service, so both share a floor).
    ("services", ["schulki.embeddings", "schulki.inference", "schulki.retrieval", "schulki.transcription"]),
    # `schulki eval` measures the inference engine; the gateway's admin tab shows its results.
    ("evaluation", ["schulki.evaluation"]),
    # The gateway's domain, one package per subject, with the one door (context.py: Gateway) and the one error table.
    # A module put straight into schulki/gateway/ stands on no gateway floor but on the commands' (the prefix "schulki"),
    # so the domain may not import it: it belongs in one of these packages.
    (
        "gateway",
        [
            "schulki.gateway.accounts",  # accounts and sign-in
            "schulki.gateway.agents",  # the chat tab's agent mode: its tools and its loop
            "schulki.gateway.documents",  # documents, vector stores and files
            "schulki.gateway.lessons",  # teachers' tasks for classes, their oversight and the emergency stop
            "schulki.gateway.nodes",  # the service nodes and the chat models they serve
            "schulki.gateway.privacy",  # data protection: retention, export, deletion
            "schulki.gateway.moderation",  # moderation rules, their outcomes and flags
            "schulki.gateway.web",  # web plumbing under the API and the UI
            "schulki.gateway.context",
            "schulki.gateway.errors",
        ],
    ),
    # HTTP and web page over the domain.
    ("gateway api and ui", ["schulki.gateway.api", "schulki.gateway.ui"]),
    # What puts the gateway together and starts it.
    (
        "gateway assembly",
        ["schulki.gateway.app", "schulki.gateway.launch", "schulki.gateway.__main__", "schulki.gateway.accounts.users_cli"],
    ),
    # Commands: schulki up, the command line, the code generator.
    ("commands", ["schulki.stack", "schulki.cli", "schulki.codegen", "schulki"]),
]
"""Floors from the ground up; a module stands on the floor of the longest prefix that names it."""

ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
"""Known arrows back up, each to be removed: (importer, imported) -> why it is still there."""


def module_name(path: Path, root: Path = SOURCE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_generated(name: str) -> bool:
    return "v1" in name.split(".")


def all_modules() -> dict[str, Path]:
    modules = {module_name(path): path for path in (SOURCE / "schulki").rglob("*.py")}
    return {name: path for name, path in modules.items() if not is_generated(name)}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The schulki modules that name imports, resolved to modules (``from pkg import mod`` names pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            if not target.startswith("schulki") or is_generated(target):
                continue
            module = target
            while module and module not in modules:  # ``from schulki.runtime.errors import X`` names the module
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def floor(name: str) -> int:
    best, best_length = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(source, target) for source, targets in graph.items() for target in targets if floor(target) > floor(source)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_stands_on_a_floor(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 100  # the reader found the package
    assert [name for name in sorted(graph) if floor(name) < 0] == []


def test_no_module_imports_from_a_higher_floor(graph: dict[str, set[str]]) -> None:
    upward = upward_imports(graph) - ALLOWED_UPWARD.keys()
    described = [f"{source} ({LAYERS[floor(source)][0]}) -> {target} ({LAYERS[floor(target)][0]})" for source, target in sorted(upward)]
    assert described == []


def test_every_allowed_upward_import_still_exists(graph: dict[str, set[str]]) -> None:
    # Once an allowed arrow is gone its entry must go too, so that it cannot come back unnoticed.
    assert [edge for edge in ALLOWED_UPWARD if edge not in upward_imports(graph)] == []


def test_no_modules_import_each_other_in_a_circle(graph: dict[str, set[str]]) -> None:
    assert circles(graph) == []


def test_the_reader_sees_imports_inside_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    package = tmp_path / "schulki"
    (package / "runtime").mkdir(parents=True)
    for name in ("__init__.py", "runtime/__init__.py", "runtime/a.py", "runtime/b.py", "runtime/c.py"):
        (package / name).touch()
    (package / "runtime" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from schulki.runtime.b import Thing\n"
        "def late():\n    from schulki.runtime import c\n    from . import b\n"
    )
    modules = {module_name(path, tmp_path): path for path in package.rglob("*.py")}
    assert imported_modules("schulki.runtime.a", package / "runtime" / "a.py", modules) == {"schulki.runtime.b", "schulki.runtime.c"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
