#!/usr/bin/python
"""Ansible module: write a host's secret files (the ones its containers mount) in one go, each only when it differs."""

from __future__ import annotations

DOCUMENTATION = r"""
module: schulki_secret_files
short_description: Write the secret files of a schulki host, only those that differ
description:
  - Writes each of C(files) into C(dir) with C(mode) and C(owner); a file whose content, mode and owner are already
    right is left as it is. Each file is written to a temporary file beside it and renamed over the old one, so a
    container never reads half a secret.
  - One module run for all of a host's secrets: the copy module took a round trip and a module run per file,
    eight of them on every host.
  - A name with a slash or .. is refused. Supports check mode. The contents never appear in the result.
options:
  dir: {description: The host's secrets folder (it exists)., required: true, type: path}
  files:
    description: The files, each with its C(name) and C(content).
    required: true
    type: list
    elements: dict
  owner: {description: The user (a name or a uid) who owns the files., required: true, type: str}
  mode: {description: The files' mode., default: "0400", type: str}
"""

RETURN = r"""
written: {description: The names of the files written (or, in check mode, that would be)., returned: always, type: list}
"""

import os
import pwd
import stat
import tempfile


class SecretFileError(Exception):
    """A file that must not be written; the message is for the admin."""


def uid_of(owner):
    """The uid of a user name or a uid given as text."""
    owner = str(owner)
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise SecretFileError(f"there is no user {owner!r} on this host to own the secret files") from None


def differs(path, content, mode, uid):
    """Whether the file at path is missing or has other content, mode or owner."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(found.st_mode) or stat.S_IMODE(found.st_mode) != mode or found.st_uid != uid:  # a link is replaced
        return True
    with open(path, "rb") as f:
        return f.read() != content


def write(path, content, mode, uid):
    """Write the file beside its place and rename it there."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".schulki-secret-")
    try:
        with os.fdopen(handle, "wb") as f:
            os.fchmod(f.fileno(), mode)
            os.fchown(f.fileno(), uid, -1)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_secrets(folder, files, owner, mode="0400", check_mode=False):
    """Write the files that differ; returns their names."""
    uid, bits = uid_of(owner), int(str(mode), 8)
    written = []
    for item in files:
        name = str(item["name"])
        if not name or "/" in name or name in (".", ".."):
            raise SecretFileError(f"refused to write the secret {name!r}: a secret's name is a file name inside {folder}")
        content = str(item.get("content") or "").encode()
        path = os.path.join(folder, name)
        if differs(path, content, bits, uid):
            written.append(name)
            if not check_mode:
                write(path, content, bits, uid)
    return written


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "files": {"type": "list", "elements": "dict", "required": True, "no_log": True},
            "owner": {"type": "str", "required": True},
            "mode": {"type": "str", "default": "0400"},
        },
        supports_check_mode=True,
    )
    try:
        written = write_secrets(
            module.params["dir"], module.params["files"], module.params["owner"], module.params["mode"], module.check_mode
        )
    except (SecretFileError, OSError, ValueError) as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=bool(written), written=written)


if __name__ == "__main__":
    main()
