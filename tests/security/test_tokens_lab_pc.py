"""What a lab PC node can see and do: only the requests routed to it (issue 9, finding 7: lab PCs students sit at).

What the roll-out puts on a lab PC (its own token, certificate and key, the CA's certificate, and nothing
that opens another node) is checked on the rendered files in tests/test_deploy_ansible.py.
"""

from __future__ import annotations

import grpc
from schulki.config import RuntimeConfig

from tests.security.nodes import embed, new_token, node, refusal, school_ca


def test_a_lab_pcs_certificate_cannot_stand_in_for_another_node(tmp_path):
    """Attack: a student with root on a lab PC answers in place of a GPU node (ARP or DNS spoofing) to read other classes' prompts."""
    ca = school_ca(tmp_path)
    lab_token = new_token()
    # The lab PC's certificate names the lab PC only ("localhost" here); the gateway expects the GPU node at 127.0.0.1.
    with node(tmp_path, "lab", lab_token, ["localhost"]) as lab:
        port = lab.running.port
        gateway = RuntimeConfig(tls_ca_file=ca, service_token=lab_token)
        assert embed(f"localhost:{port}", gateway) == 384, "by its own name the lab PC is served"
        assert refusal(lambda: embed(f"127.0.0.1:{port}", gateway)) == grpc.StatusCode.UNAVAILABLE, "in another node's place it is not"
