"""Gateway is the one door: the quotas and the service clients are reachable only through its use cases.

Two checks: a real Gateway hands out neither object (no public attribute,
none of its public parts' attributes, holds one), and no module of schulki
outside gateway/context.py reads the private ones (``x._services`` or
``x._quotas`` of anything but ``self``) or counts a request itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

from schulki.config import Config
from schulki.gateway.accounts.quotas import Quotas
from schulki.gateway.context import Gateway
from schulki.gateway.nodes.clients import Services

SOURCES = Path(__file__).resolve().parents[1] / "services" / "schulki"
DOOR = SOURCES / "gateway" / "context.py"
PRIVATE = {"_services", "_quotas"}
QUOTA_CALLS = {"admit", "reserve", "add_tokens"}


def _reachable(gateway: Gateway) -> dict[str, object]:
    """Every object one or two public attribute steps away from the gateway, by its path."""
    found: dict[str, object] = {}
    for name in dir(gateway):
        if name.startswith("_") or name == "files_root":
            continue
        value = getattr(gateway, name)
        found[name] = value
        for inner in vars(value) if hasattr(value, "__dict__") and not callable(value) else ():
            if not inner.startswith("_"):
                found[f"{name}.{inner}"] = getattr(value, inner)
    return found


def test_the_gateway_hands_out_neither_its_quotas_nor_its_service_clients(tmp_path):
    gateway = Gateway.create(Config(data_dir=tmp_path))
    leaks = [path for path, value in _reachable(gateway).items() if isinstance(value, (Services, Quotas))]
    assert leaks == []
    assert not hasattr(gateway, "services") and not hasattr(gateway, "quotas")


def _reaches_inside(path: Path) -> list[str]:
    """Lines of a module that read a private gateway part of another object, or call a quota method."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        owner_is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
        if node.attr in PRIVATE and not owner_is_self:
            problems.append(f"{path.name}:{node.lineno} reads .{node.attr}")
        if node.attr in QUOTA_CALLS and isinstance(node.value, ast.Attribute) and node.value.attr in ("quotas", "_quotas"):
            problems.append(f"{path.name}:{node.lineno} calls quotas.{node.attr}")
    return problems


def test_nothing_outside_the_gateway_reaches_its_quotas_or_service_clients():
    modules = [path for path in SOURCES.rglob("*.py") if path != DOOR and "/v1/" not in path.as_posix()]
    assert len(modules) > 50
    problems = [problem for path in modules for problem in _reaches_inside(path)]
    assert problems == []


def test_the_source_check_finds_a_planted_quota_call(tmp_path):
    planted = tmp_path / "route.py"
    planted.write_text("def route(gateway, account):\n    gateway._quotas.admit(account)\n    gateway.quotas.reserve(account)\n")
    assert len(_reaches_inside(planted)) == 3
