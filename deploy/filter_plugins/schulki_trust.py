"""Ansible filters for the school CA in the lab PCs' browsers: Chromium's CACertificates and Firefox's policies."""

from __future__ import annotations

import base64
import json
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: schulki_pem_der_base64
short_description: The certificates of a PEM text as base64 DER (Chromium's CACertificates policy)
description:
  - schulki_firefox_policies adds a certificate file to Certificates.Install of a policies.json text, keeping the rest.
"""

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def schulki_pem_der_base64(pem: str) -> list[str]:
    """Each certificate of a PEM text, as the base64 of its DER (PEM's body without line breaks)."""
    found = []
    for body in _PEM.findall(str(pem)):
        der = base64.b64decode("".join(body.split()), validate=True)
        found.append(base64.b64encode(der).decode())
    if not found:
        raise AnsibleFilterError("schulki trust: no certificate in the CA file")
    return found


def schulki_firefox_policies(existing: str, cert_file: str) -> dict:
    """Firefox's policies.json with cert_file in Certificates.Install; whatever else the school set stays."""
    try:
        policies = json.loads(existing) if str(existing).strip() else {}
    except json.JSONDecodeError as error:
        raise AnsibleFilterError(f"Firefox's policies.json does not read as JSON, so schulki leaves it alone: {error}") from error
    if not isinstance(policies, dict):
        raise AnsibleFilterError("Firefox's policies.json is not a JSON object, so schulki leaves it alone")
    install = policies.setdefault("policies", {}).setdefault("Certificates", {}).setdefault("Install", [])
    if cert_file not in install:
        install.append(cert_file)
    return policies


class FilterModule:
    """schulki's trust filters."""

    def filters(self):
        return {"schulki_pem_der_base64": schulki_pem_der_base64, "schulki_firefox_policies": schulki_firefox_policies}
