"""A folder that stands in for a lab PC's / in the roll-out tests: the school CA goes into its trust store and browser
policy folders, and Debian's real update-ca-certificates rebuilds the bundle there, never the machine's own."""

from __future__ import annotations

import shlex
from pathlib import Path


def trust_vars(root: Path) -> dict[str, object]:
    """The schulki_trust role's variables for a lab PC whose / is root."""
    for folder in ("etc/ssl/certs", "usr/share/ca-certificates", "etc/ca-certificates/update.d"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "ca-certificates.conf").touch()
    update = [
        "update-ca-certificates",
        *("--certsconf", str(root / "etc" / "ca-certificates.conf")),
        *("--certsdir", str(root / "usr" / "share" / "ca-certificates")),
        *("--localcertsdir", str(root / "usr" / "local" / "share" / "ca-certificates")),
        *("--etccertsdir", str(root / "etc" / "ssl" / "certs")),
        *("--hooksdir", str(root / "etc" / "ca-certificates" / "update.d")),
    ]
    return {
        "schulki_trust_system_dir": str(root / "usr" / "local" / "share" / "ca-certificates"),
        "schulki_trust_update_command": shlex.join(update),
        "schulki_trust_chromium_policy_dirs": [str(root / "etc" / "chromium" / "policies" / "managed")],
        "schulki_trust_firefox_policies_file": str(root / "etc" / "firefox" / "policies" / "policies.json"),
    }
