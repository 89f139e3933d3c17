"""Gateway is the one door: the quotas and the service clients are reachable only through its use cases.

Three checks: a real Gateway hands out neither object (no public attribute,
none of its public parts' attributes, holds one); no module of schulki
outside gateway/context.py reads the private ones (``x._services`` or
``x._quotas`` of anything but ``self``) or counts a request itself; and the
routes and tabs (gateway/api, gateway/ui) ask no role or ownership question
themselves: the workspace rule, a store's owner, the model a user may pick
and the admin role are checked inside the Gateway's use cases, which take
the account.
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
DOORS = [SOURCES / "gateway" / "api", SOURCES / "gateway" / "ui"]
OWN_CHECKS = {"workspace_access", "visible_workspaces", "store_for", "require_admin", "allowed"}
"""Role and ownership helpers a route or tab must not call (the Dokumente tab's ``allowed``, the API's ``store_for``,
the Admin tab's ``require_admin``, the workspace rule itself)."""
NO_USER_CALLS = {"list_workspaces", "delete_workspace", "stored_documents", "purge_document"}
"""The Gateway's calls that no user asks for (the retention purge, a user's deletion): they check nobody."""
QUOTA_NAMES = {"quotas", "_quotas", "Quotas", "StoreIngests", "_ingests", "ingests"}
"""The quota objects and the vector stores' running ingests: the Gateway's alone."""


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


def _asks_itself(path: Path) -> list[str]:
    """Lines of a route or tab module that ask a role or ownership question itself, choose the model itself, reach a
    quota object, or call one of the Gateway's no-user operations."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else function.attr if isinstance(function, ast.Attribute) else ""
            # ``gateway.models.allowed(account)`` lists the models a user may pick; a bare or other ``allowed()`` is a rule
            listing = isinstance(function, ast.Attribute) and isinstance(function.value, ast.Attribute) and function.value.attr == "models"
            if name in OWN_CHECKS and not (name == "allowed" and listing):
                problems.append(f"{where} calls {name}()")
            if name == "resolve" and listing:
                problems.append(f"{where} chooses the model itself (models.resolve)")
            if name in NO_USER_CALLS:
                problems.append(f"{where} calls {name}(), which checks no user")
        elif isinstance(node, ast.Attribute) and node.attr in QUOTA_NAMES:
            problems.append(f"{where} reaches .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in QUOTA_NAMES:
            problems.append(f"{where} names {node.id}")
        elif isinstance(node, ast.ImportFrom) and any(alias.name in OWN_CHECKS | QUOTA_NAMES for alias in node.names):
            problems.append(f"{where} imports {', '.join(alias.name for alias in node.names)}")
    return problems


def test_routes_and_tabs_ask_no_role_or_ownership_question_themselves():
    modules = [path for folder in DOORS for path in folder.rglob("*.py")]
    assert len(modules) > 20
    problems = [problem for path in modules for problem in _asks_itself(path)]
    assert problems == []


def test_the_role_check_reader_names_each_planted_question(tmp_path):
    planted = tmp_path / "tab.py"
    planted.write_text(
        "from schulki.gateway.documents.workspaces import workspace_access\n"
        "def handler(gateway, files, actions, allowed, account, request):\n"
        "    workspace_access(gateway, account, 'u-2', write=True)\n"
        "    allowed(account, 'u-2')\n"
        "    files.store_for(account, 'vs_u-2')\n"
        "    actions.require_admin(request)\n"
        "    model = gateway.models.resolve(account, None)\n"
        "    gateway.quotas.admit(account)\n"
        "    gateway.delete_workspace('u-2')\n"
        "    return gateway.models.allowed(account), model\n"
    )
    found = _asks_itself(planted)
    assert [problem.split(" ", 1)[1] for problem in found] == [
        "imports workspace_access",
        "calls workspace_access()",
        "calls allowed()",
        "calls store_for()",
        "calls require_admin()",
        "chooses the model itself (models.resolve)",
        "calls delete_workspace(), which checks no user",
        "reaches .quotas",
    ]
