#!/usr/bin/python
"""Ansible module: remove the model files of earlier plans from a host's model folder, and nothing else."""

from __future__ import annotations

DOCUMENTATION = r"""
module: schulki_model_prune
short_description: Remove schulki model files a host's plan no longer names
description:
  - Removes from C(dir) each file of C(remove) (names relative to C(dir), as the mirror serves them) with the
    C(.sha256) record and the C(.part) download beside it, and a speech model's folder once it is empty.
  - C(remove) is the catalog's files less the ones the host's plan names (the filter schulki_stale_model_files),
    so a file the catalog does not know (the admin's own, another program's) is never touched.
  - A name that leaves C(dir) (absolute, or with ..) is refused. Supports check mode.
options:
  dir: {description: The host's model folder., required: true, type: path}
  remove: {description: Names of model files to remove where present., required: true, type: list, elements: str}
"""

RETURN = r"""
removed: {description: The files removed (or, in check mode, that would be)., returned: always, type: list}
freed_bytes: {description: Bytes those files took., returned: always, type: int}
"""

import os

COMPANIONS = ("", ".sha256", ".part")


class PruneError(Exception):
    """A name that must not be removed; the message is for the admin."""


def prune(folder, remove, check_mode=False):
    """Remove the named model files under folder; returns (removed paths, freed bytes)."""
    root = os.path.realpath(folder)
    removed, freed, emptied = [], 0, set()
    for name in remove:
        if os.path.isabs(name) or ".." in name.split("/"):
            raise PruneError(f"refused to remove {name!r}: a model file's name stays inside {folder}")
        for suffix in COMPANIONS:
            path = os.path.join(root, name + suffix)
            # A link is removed as a link; a folder of that name is not a model file.
            if not os.path.islink(path) and not os.path.isfile(path):
                continue
            freed += os.lstat(path).st_size
            removed.append(path)
            if not check_mode:
                os.remove(path)
        if "/" in name:
            emptied.add(os.path.dirname(os.path.join(root, name)))
    for parent in sorted(emptied, reverse=True):
        if not check_mode and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
    return removed, freed


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={"dir": {"type": "path", "required": True}, "remove": {"type": "list", "elements": "str", "required": True}},
        supports_check_mode=True,
    )
    try:
        removed, freed = prune(module.params["dir"], module.params["remove"], module.check_mode)
    except (PruneError, OSError) as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=bool(removed), removed=removed, freed_bytes=freed)


if __name__ == "__main__":
    main()
