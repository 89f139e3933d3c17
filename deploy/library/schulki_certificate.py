#!/usr/bin/python
"""Ansible module: the school CA, or a host certificate it signs, in a folder on the admin's machine."""

from __future__ import annotations

DOCUMENTATION = r"""
module: schulki_certificate
short_description: Make the school CA, or a host's certificate signed by it, and renew it before it runs out
description:
  - With C(name=ca), makes C(folder)/ca.crt and C(folder)/ca.key (a CA valid for ten years) when they are missing,
    and renews the CA certificate with the same key when fewer than C(renew_days) are left.
  - The CA carries a critical name constraint, so it can sign only for C(permitted) (domains with every name under them,
    addresses, networks); a CA that permits less is renewed with both, and one without any constraint is made again with
    a new key (a warning says to install the new ca.crt on the devices). Its key is kept encrypted with C(ca_passphrase).
  - With any other C(name), makes C(folder)/<name>.crt (the certificate, then the CA's) and C(folder)/<name>.key,
    signed by the CA in C(folder), for every host name in C(names). An address in C(names) stops the task: gRPC's TLS
    (BoringSSL) refuses any certificate naming an address under a CA limited to address ranges, as the school CA is.
    It is made again when the names
    change, the CA changed, or fewer than C(renew_days) are left; otherwise nothing changes. A name outside the
    CA's constraint stops the task with the names the CA permits.
  - Runs on the admin's machine (delegate_to localhost) with schulki's Python package (services/schulki/certificates.py)
    importable, as it is in the repository's .venv. Keys are written mode 0600.
  - Supports check mode (then it only says whether it would change anything).
options:
  folder: {description: Folder for the CA and the host certificates., required: true, type: path}
  name: {description: C(ca) for the CA; else the certificate's file name (the host)., required: true, type: str}
  names: {description: Host names the certificate is for (not for the CA; no addresses)., type: list, elements: str, default: []}
  permitted: {description: What the CA may sign for (only for the CA; required there)., type: list, elements: str, default: []}
  ca_passphrase: {description: The passphrase of the CA's key (from ansible-vault); required., type: str, required: true}
  common_name: {description: The CA's name (only for the CA)., type: str, default: schulki CA}
  valid_days: {description: Days a new certificate is valid., type: int, default: 397}
  renew_days: {description: A certificate with fewer days left is renewed., type: int, default: 30}
"""

EXAMPLES = r"""
- name: Make the school CA on the admin's machine
  schulki_certificate:
    folder: "{{ inventory_dir }}/credentials/tls"
    name: ca
    permitted: [schule.example, 10.0.0.0/16, localhost, 127.0.0.0/8]
    ca_passphrase: "{{ schulki_stack_tls_ca_passphrase }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
reason: {description: Why it was made or renewed, or "valid"., returned: always, type: str}
cert_file: {description: The certificate file., returned: always, type: str}
key_file: {description: The key file., returned: always, type: str}
days_left: {description: Days until the certificate ends., returned: when it exists, type: float}
notes: {description: What the admin must do after this change (also shown as warnings)., returned: always, type: list, elements: str}
"""

import logging
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule


class _Warnings(logging.Handler):
    """The certificate library's warnings (a CA made again, names added), shown as the task's warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "folder": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "names": {"type": "list", "elements": "str", "default": []},
            "common_name": {"type": "str", "default": "schulki CA"},
            "valid_days": {"type": "int", "default": 397},
            "renew_days": {"type": "int", "default": 30},
            "permitted": {"type": "list", "elements": "str", "default": []},
            "ca_passphrase": {"type": "str", "required": True, "no_log": True},
        },
        supports_check_mode=True,
    )
    try:
        from schulki import certificates
    except ImportError as error:
        module.fail_json(msg=f"schulki's Python package is not importable here ({error}); run Ansible from the repository's .venv")
    folder, name, params = Path(module.params["folder"]), module.params["name"], module.params
    if not params["ca_passphrase"]:
        module.fail_json(
            msg="the school CA's key is kept encrypted: give its passphrase (schulki_stack_tls_ca_passphrase, in ansible-vault)"
        )
    addresses = certificates.split_names(params["names"])[1]
    if name != "ca" and addresses:
        module.fail_json(
            msg=f"certificate {name}: {', '.join(addresses)} is an address: a host's certificate names host names only, because"
            " gRPC's TLS (BoringSSL) refuses every certificate that names an address under a CA limited to address ranges"
            ' ("unsupported name constraint type"); name the host by its name in the inventory and in schulki_stack_tls_names'
        )
    if name == "ca" and not params["permitted"]:
        module.fail_json(msg="the school CA needs the names it may sign for (permitted): a CA for any name could intercept any web site")
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    if module.check_mode:
        result = {"cert_file": str(cert_file), "key_file": str(key_file)}
        if not (cert_file.exists() and key_file.exists()):
            module.exit_json(changed=True, reason="would be made", **result)
        left = certificates.days_left(certificates.load_certificate(cert_file))
        module.exit_json(
            changed=left <= params["renew_days"],
            reason="would be renewed" if left <= params["renew_days"] else "valid",
            days_left=round(left, 1),
            **result,
        )
    warnings = _Warnings()
    logging.getLogger(certificates.__name__).addHandler(warnings)
    passphrase = params["ca_passphrase"]
    try:
        if name == "ca":
            issued = certificates.ensure_ca(
                folder, params["common_name"], 3650, params["renew_days"], permitted=params["permitted"], passphrase=passphrase
            )
        else:
            issued = certificates.ensure_certificate(
                folder, name, params["names"], folder, params["valid_days"], params["renew_days"], ca_passphrase=passphrase
            )
    except (OSError, ValueError) as error:
        module.fail_json(msg=f"certificate {name}: {error}")
    for message in warnings.messages:
        module.warn(message)
    left = certificates.days_left(certificates.load_certificate(issued.cert_file))
    module.exit_json(
        changed=issued.changed,
        reason=issued.reason,
        cert_file=str(issued.cert_file),
        key_file=str(issued.key_file),
        days_left=round(left, 1),
        notes=warnings.messages,
    )


if __name__ == "__main__":
    main()
