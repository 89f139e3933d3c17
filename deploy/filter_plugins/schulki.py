"""Ansible filters that call schulki's quant planner, so the playbook and `schulki plan` agree."""

from __future__ import annotations

import sys
from pathlib import Path

DOCUMENTATION = r"""
name: schulki_host_plan
short_description: The services, model files and settings for one schulki host
description:
  - Runs schulki's quant planner (services/schulki/models/planner.py) on the host's inventory
    variables and returns its plan as a dictionary.
"""

try:
    from schulki.models.catalog import load_catalog
    from schulki.models.fleet import host_plan
except ImportError:  # running from a checkout without schulki installed on the controller
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))
    from schulki.models.catalog import load_catalog
    from schulki.models.fleet import host_plan


def schulki_host_plan(hostvars, host):
    """The plan of one host from a dict of its schulki_plan_* variables."""
    return host_plan(str(host), dict(hostvars))


def schulki_stale_model_files(files):
    """Every model file of the catalog (a speech model's extra files too) that the plan's files do not name:
    what schulki_model_prune may remove from the host. Names outside the catalog never appear."""
    keep = {f["name"] for f in files}
    known = set()
    for model in load_catalog().models.values():
        for f in model.files:
            known.add(f.file)
            folder = str(Path(f.file).parent)
            known.update(f"{folder}/{extra}" for extra in model.extra_files if folder != ".")
    return sorted(known - keep)


class FilterModule:
    """schulki's filters."""

    def filters(self):
        return {"schulki_host_plan": schulki_host_plan, "schulki_stale_model_files": schulki_stale_model_files}
