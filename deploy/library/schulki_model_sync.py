#!/usr/bin/python
"""Ansible module: download one model file from the school's mirror, resumably, and check its sha256."""

from __future__ import annotations

DOCUMENTATION = r"""
module: schulki_model_sync
short_description: Download a model file from the school's mirror and check its sha256
description:
  - Downloads C(mirror_url)/C(name) to C(dest). An interrupted download is kept as C(dest).part
    and resumed with an HTTP Range request, in this run (up to C(retries) times) or the next.
  - The file is checked against C(sha256), the catalog's pinned hash. A file without one is refused
    unless C(allow_unpinned) is set: then it is checked against the line for C(name) in the mirror's
    SHA256SUMS, which comes over the same plain HTTP as the file and so proves only that the download
    is whole. A file with the wrong hash is refused and removed.
  - A file that is already there and checked is not read again: its hash, size and time are kept
    in C(dest).sha256, so a second run costs a stat, not a re-read of many gigabytes.
  - Supports check mode and diff mode.
options:
  mirror_url: {description: Base URL of the school's model mirror., required: true, type: str}
  name: {description: The file name as the mirror serves it (a speech model's files carry their folder)., required: true, type: str}
  dest: {description: Where the file goes on the host., required: true, type: path}
  sha256: {description: The catalog's pinned sha256; empty means none is pinned (see allow_unpinned)., type: str, default: ""}
  allow_unpinned: {description: Without a pinned sha256 trust the mirror's SHA256SUMS instead of refusing the file., type: bool, default: false}
  size: {description: The exact size in bytes when known; 0 means not checked., type: int, default: 0}
  retries: {description: Resumed attempts after a cut-off download within one run., type: int, default: 3}
  timeout: {description: Seconds without data before a download counts as cut off., type: int, default: 60}
"""

EXAMPLES = r"""
- name: Download the chat model from the school's mirror
  schulki_model_sync:
    mirror_url: http://nas.schule.example/schulki-models
    name: Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf
    dest: /opt/schulki/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf
    sha256: 7b064f5842bf9532c91456deda288a1b672397a54fa729aa665952863033557c
"""

RETURN = r"""
sha256: {description: The checked sha256 of the file., returned: success, type: str}
resumed_from: {description: Bytes already there when the download (last) resumed., returned: changed, type: int}
"""

import hashlib
import os
import urllib.error
import urllib.request
from http.client import HTTPException

BLOCK = 1024 * 1024
HASH_SUFFIX = ".sha256"
PART_SUFFIX = ".part"


class SyncError(Exception):
    """The file cannot be synced; the message is for the admin."""


def _url(mirror_url, name):
    return mirror_url.rstrip("/") + "/" + urllib.request.quote(name)


def expected_sha256(mirror_url, name, sha256, timeout=60, allow_unpinned=False):
    """The hash to check: the catalog's, else (only where the admin allows it) the mirror's SHA256SUMS line for this name."""
    if sha256:
        return sha256.lower()
    if not allow_unpinned:
        raise SyncError(unpinned_message([name]))
    url = _url(mirror_url, "SHA256SUMS")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, HTTPException) as error:
        raise SyncError(f"{name} has no published sha256 and the mirror's SHA256SUMS cannot be read ({url}: {error})") from error
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") in (name, "./" + name):
            return parts[0].lower()
    raise SyncError(f"{name} has no published sha256 and is not in the mirror's SHA256SUMS: add it when filling the mirror")


def unpinned_message(names):
    """Why files without a pinned sha256 are refused, and the two ways on (German first)."""
    return (
        "Keine festgelegte sha256 (no pinned sha256) for " + ", ".join(names) + ": the mirror's SHA256SUMS comes over "
        "the same plain HTTP as the file, so whoever can change the mirror or the network changes both. Pin the hash "
        "in services/schulki/models/catalog.toml (sha256 or extra_sha256) after checking the file once, or set "
        "schulki_models_allow_unpinned: true to trust the mirror's SHA256SUMS."
    )


def _stamp(path):
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns}"


def is_current(dest, sha256):
    """True when dest exists and its recorded hash, size and time still hold."""
    try:
        with open(dest + HASH_SUFFIX) as f:
            recorded = f.read().split()
        return recorded[0] == sha256 and " ".join(recorded[1:]) == _stamp(dest)
    except (OSError, IndexError):
        return False


def file_sha256(path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest


def record(dest, sha256):
    with open(dest + HASH_SUFFIX, "w") as f:
        f.write(f"{sha256} {_stamp(dest)}\n")


def _download_once(url, part, timeout):
    """Fetch what is missing of part; True when the server sent the whole rest."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is already complete
            return True
        raise SyncError(f"the mirror answered HTTP {error.code} for {url}") from error
    with response:
        if have and response.status != 206:
            have = 0  # the mirror ignored the Range header: start again
        remaining = response.headers.get("Content-Length")
        expected = int(remaining) if remaining is not None else None
        got = 0
        with open(part, "ab" if have else "wb") as out:
            try:
                for block in iter(lambda: response.read(BLOCK), b""):
                    out.write(block)
                    got += len(block)
            except (OSError, HTTPException):
                return False
        return expected is None or got >= expected


def sync(mirror_url, name, dest, sha256="", size=0, retries=3, timeout=60, check_mode=False, allow_unpinned=False):
    """Bring dest up to date; returns (changed, facts). Raises SyncError with the reason."""
    want = expected_sha256(mirror_url, name, sha256, timeout, allow_unpinned)
    if os.path.exists(dest):
        if is_current(dest, want):
            return False, {"sha256": want}
        if file_sha256(dest).hexdigest() == want:
            if not check_mode:
                record(dest, want)
            return False, {"sha256": want}
    if check_mode:
        return True, {"sha256": want, "resumed_from": 0}
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + PART_SUFFIX
    url = _url(mirror_url, name)
    resumed_from = os.path.getsize(part) if os.path.exists(part) else 0
    for attempt in range(retries + 1):
        if attempt:
            resumed_from = os.path.getsize(part)
        try:
            complete = _download_once(url, part, timeout)
        except (urllib.error.URLError, OSError, HTTPException) as error:
            if attempt == retries:
                raise SyncError(f"cannot download {url}: {error} (what arrived is kept and resumed next time)") from error
            continue
        if complete:
            break
    else:
        raise SyncError(f"the download of {url} was cut off {retries + 1} times; what arrived is kept and resumed next time")
    got_size = os.path.getsize(part)
    got = file_sha256(part).hexdigest()
    if (size and got_size != size) or got != want:
        os.remove(part)
        raise SyncError(f"refused {name}: sha256 {got} ({got_size} bytes) is not the expected {want}; the file was removed")
    os.replace(part, dest)
    record(dest, want)
    return True, {"sha256": want, "resumed_from": resumed_from}


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "mirror_url": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "sha256": {"type": "str", "default": ""},
            "size": {"type": "int", "default": 0},
            "retries": {"type": "int", "default": 3},
            "timeout": {"type": "int", "default": 60},
            "allow_unpinned": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    existed = os.path.exists(p["dest"])
    try:
        changed, facts = sync(
            p["mirror_url"],
            p["name"],
            p["dest"],
            p["sha256"],
            p["size"],
            p["retries"],
            p["timeout"],
            module.check_mode,
            p["allow_unpinned"],
        )
    except SyncError as error:
        module.fail_json(msg=str(error))
    diff = {
        "before": f"{p['dest']}: {'present, other content' if existed else 'absent'}\n",
        "after": f"{p['dest']}: sha256 {facts['sha256']}\n",
    }
    module.exit_json(changed=changed, diff=diff if changed else {}, **facts)


if __name__ == "__main__":
    main()
