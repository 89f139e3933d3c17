"""compose.yaml against the Compose Specification, the Dockerfiles against schulki's image rules, the install step outside Docker, and the HEALTHCHECK."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import yaml
from schulki.config import Config
from schulki.inference import build

from tests.conftest import REPO_ROOT, InProcessServer, free_port

COMPOSE_SCHEMA = REPO_ROOT.parent / "shared" / "compose-spec.json"
IMAGES = REPO_ROOT / "deploy" / "images"
SERVICES = ("inference", "embeddings", "transcription", "retrieval", "gateway")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())


@pytest.mark.skipif(not COMPOSE_SCHEMA.exists(), reason="../shared/compose-spec.json is not beside this checkout")
def test_compose_yaml_is_valid_against_the_compose_specification(compose):
    # The spec names draft-07 as "draft-07/schema" without the "#" jsonschema looks for.
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    validator.validate(compose)
    broken = {**compose, "services": {**compose["services"], "gateway": {**compose["services"]["gateway"], "ports": "7860"}}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_only_the_gateway_publishes_a_port_to_everyone(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name == "gateway":
                assert port.endswith((":7860", ":8080"))  # HTTPS, and the port that only redirects plain HTTP to it
            else:
                assert port.startswith("${SCHULKI_NODE_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} beyond the node's LAN address"
                assert set(service["profiles"]) <= {"gpu", "cpu"}, f"{name} runs on the gateway machine and must not publish"
    assert compose["networks"]["internal"]["internal"] is True
    for name in ("retrieval", "embeddings", "weaviate"):
        assert compose["services"][name]["networks"] == ["internal"] and "ports" not in compose["services"][name]


def test_weaviate_is_pinned_private_and_persistent(compose):
    weaviate = compose["services"]["weaviate"]
    assert re.search(r":\d+\.\d+\.\d+\$\{SCHULKI_IMAGE_DIGEST_WEAVIATE:-\}$", weaviate["image"]), weaviate["image"]
    env = weaviate["environment"]
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false" and env["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert env["DISABLE_TELEMETRY"] == "true"
    assert "./secrets/weaviate.env" in weaviate["env_file"], "the API key comes from a secret file"
    volumes = {v.rsplit(":", 1)[1]: v.rsplit(":", 1)[0] for v in weaviate["volumes"]}
    assert volumes[env["PERSISTENCE_DATA_PATH"]] in compose["volumes"]
    assert env["BACKUP_FILESYSTEM_PATH"] in volumes and "backup-filesystem" in env["ENABLE_MODULES"]


def _interpolated(service: dict, env: dict[str, str] | None = None) -> dict:
    """A service as compose runs it: ${VAR:-default} filled from env, else the default."""
    text = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: (env or {}).get(m[1]) or (m[2] or ""), json.dumps(service))
    return json.loads(text)


def _mib(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mg])", size).groups()
    return int(number) * (1024 if unit == "g" else 1)


def test_weaviate_runs_without_capabilities_on_a_read_only_image_within_limits(compose):
    weaviate = compose["services"]["weaviate"]
    assert weaviate["read_only"] is True and weaviate["cap_drop"] == ["ALL"] and "no-new-privileges:true" in weaviate["security_opt"]
    assert weaviate["tmpfs"] == ["/tmp"] and weaviate["pids_limit"] > 0
    for env in ({}, {"SCHULKI_WEAVIATE_MEMORY_MIB": "12000", "SCHULKI_WEAVIATE_GOMEMLIMIT_MIB": "9600", "SCHULKI_WEAVIATE_CPUS": "4"}):
        run = _interpolated(weaviate, env)
        assert run["mem_limit"] == run["memswap_limit"], "no swap beyond the limit"
        # Go's collector works to stay below GOMEMLIMIT, so Weaviate slows down before the kernel kills it.
        assert int(run["environment"]["GOMEMLIMIT"].removesuffix("MiB")) < _mib(run["mem_limit"])
        assert float(run["cpus"]) >= 1
    # Everything it writes is on its two volumes (data and backups) or /tmp.
    assert {v.rsplit(":", 1)[1] for v in weaviate["volumes"]} == {"/var/lib/weaviate", "/var/lib/weaviate-backups"}


def test_a_lab_pcs_inference_has_a_memory_and_cpu_limit_from_the_plan(compose):
    inference = compose["services"]["inference-cpu"]
    run = _interpolated(inference, {"SCHULKI_INFERENCE_CPU_MEMORY_MIB": "6015", "SCHULKI_INFERENCE_CPU_CPUS": "7"})
    assert run["mem_limit"] == run["memswap_limit"] == "6015m" and run["cpus"] == "7" and run["pids_limit"] > 0
    for name in ("inference-gpu", "transcription-gpu"):  # on a GPU node the model lives in GPU memory
        assert "mem_limit" not in compose["services"][name], name


def test_gpu_services_reserve_the_gpu_and_profiles_split_the_nodes(compose):
    services = compose["services"]
    for name, service in services.items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        is_gpu = any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
        assert is_gpu == ("gpu" in service["profiles"]), name
        if "gpu" in service["profiles"]:
            assert re.search(r"-cuda\$\{SCHULKI_IMAGE_DIGEST_\w+:-\}$", service["image"]) and service["build"]["args"]["VARIANT"] == "cuda"
    assert {p for s in services.values() for p in s["profiles"]} == {"gateway", "gpu", "cpu"}
    assert "cuda" not in json.dumps(services["gateway"]), "the gateway image has no CUDA"


def test_secrets_and_settings_come_from_files_never_from_the_image(compose):
    assert {s["file"] for s in compose["secrets"].values()} == {
        "./secrets/service_token",
        "./secrets/tls.crt",
        "./secrets/tls.key",
        "./secrets/ca.crt",
        "./secrets/node_tokens",
        "./secrets/https.crt",
        "./secrets/https.key",
        "./secrets/ldap_bind_password",
        "./secrets/oidc_client_secret",
        "./secrets/sso_ca.crt",
    }
    for name, service in compose["services"].items():
        if name == "weaviate":
            continue
        # Only the gateway holds every node's token, the HTTPS certificate and the school directory's secrets; a node
        # has its own token and TLS files.
        gateway_only = {"node_tokens", "https_cert", "https_key", "ldap_bind_password", "oidc_client_secret", "sso_ca"}
        assert set(service["secrets"]) == set(compose["secrets"]) - (set() if name == "gateway" else gateway_only), name
        assert service["environment"]["SCHULKI_RUNTIME__SERVICE_TOKEN_FILE"] == "/run/secrets/service_token"
        assert "./schulki.toml:/etc/schulki/schulki.toml:ro" in service["volumes"]
        assert service["user"] == "10001:10001" and service["read_only"] is True
        assert Path(REPO_ROOT / service["build"]["dockerfile"]).exists()
        assert not any(re.search(r"(TOKEN|KEY|PASSWORD)=", line) for line in json.dumps(service["environment"]).split(","))


def _instructions(text: str) -> list[tuple[str, str]]:
    """The instructions of a Dockerfile: (KEYWORD, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in joined.splitlines()
        if line.strip()
    ]


def lint_dockerfile(text: str, service: str) -> list[str]:
    """schulki's rules for an image; returns the problems found."""
    problems = []
    steps = _instructions(text)
    args = {}
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip()
    stages = [i for i, (k, _) in enumerate(steps) if k == "FROM"]
    if not stages:
        return ["no FROM"]
    for i in stages:
        image = steps[i][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], ""), image)
        if not image or ("@sha256:" not in image and not re.search(r":[\w.-]*\d[\w.-]*$", image)):
            problems.append(f"FROM {steps[i][1]} is not pinned to a tag or digest")
        if image.endswith(":latest"):
            problems.append(f"FROM {image} uses latest")
    final = steps[stages[-1] :]
    users = [rest.strip() for k, rest in final if k == "USER"]
    if not users or users[-1] in ("root", "0", "0:0"):
        problems.append("the final stage does not switch to a non-root USER")
    health = [rest for k, rest in final if k == "HEALTHCHECK"]
    if not health or "schulki.runtime.healthcheck" not in health[-1] or service not in health[-1]:
        problems.append("no HEALTHCHECK through schulki.runtime.healthcheck for this service")
    for keyword, rest in steps:
        if keyword == "ADD":
            problems.append(f"ADD {rest} (use COPY; never fetch URLs at build time)")
        if (
            keyword == "RUN"
            and "apt-get install" in rest
            and ("--no-install-recommends" not in rest or "rm -rf /var/lib/apt/lists/*" not in rest or "apt-get update" not in rest)
        ):
            problems.append("apt-get install without update, --no-install-recommends and cleaned lists in the same RUN")
        if keyword == "ENV" and re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\w*=", rest):
            problems.append(f"a secret in ENV: {rest}")
        if keyword in ("ENTRYPOINT", "CMD") and not rest.strip().startswith("["):
            problems.append(f"{keyword} is not in exec form")
        if keyword == "COPY" and re.search(r"\b(var|secrets|\.venv)\b", rest):
            problems.append(f"COPY {rest} copies models, secrets or a venv into the image")
    installs = [rest for k, rest in steps if k == "RUN" and "install.sh" in rest]
    if len(installs) != 1 or not re.search(rf"install\.sh {service} ", installs[0]):
        problems.append(f"the image does not install exactly its own extra with deploy/images/install.sh {service}")
    return problems


@pytest.mark.parametrize("service", SERVICES)
def test_each_dockerfile_passes_the_image_rules(service):
    text = (IMAGES / f"{service}.Dockerfile").read_text()
    assert lint_dockerfile(text, service) == []
    if service in ("gateway", "retrieval"):
        assert "cuda" not in str(_instructions(text)).lower(), "no CUDA in the gateway and retrieval images"
    else:
        assert "VARIANT=cuda" in text and "ARG VARIANT=cpu" in text


def test_the_image_rules_catch_a_bad_dockerfile():
    bad = "FROM python:latest\nADD https://example.org/x.tar.gz /x\nRUN apt-get install -y curl\nENV SCHULKI_TOKEN=abc\nCMD schulki serve inference\n"
    problems = " | ".join(lint_dockerfile(bad, "inference"))
    for expected in (
        "latest",
        "non-root USER",
        "HEALTHCHECK",
        "ADD",
        "apt-get install",
        "secret in ENV",
        "exec form",
        "install.sh inference",
    ):
        assert expected in problems, expected
    assert lint_dockerfile("FROM ${BASE}\nUSER 0\n", "gateway")[0].startswith("FROM")


def test_every_image_install_step_resolves_outside_docker(tmp_path):
    """The command each Dockerfile runs, as a dry run into a fresh venv (llama-cpp-python would take minutes to build)."""

    def install(extra):
        return extra, subprocess.run(
            ["sh", str(IMAGES / "install.sh"), extra, str(tmp_path / extra), "--dry-run"], capture_output=True, text=True, timeout=600
        )

    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        for extra, run in pool.map(install, SERVICES):
            assert run.returncode == 0, f"{extra}: {run.stderr[-3000:]}"
            assert "Would install" in run.stdout, f"{extra}: {run.stdout[-2000:]}"
    refused = subprocess.run(["sh", str(IMAGES / "install.sh"), "everything", str(tmp_path / "x")], capture_output=True, text=True)
    assert refused.returncode == 2 and "unknown extra" in refused.stderr


def healthcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schulki.runtime.healthcheck", *args], capture_output=True, text=True, timeout=60)


def test_the_healthcheck_speaks_the_grpc_health_protocol():
    config = Config()
    config.inference.threads = 1
    with InProcessServer([build(config)], start=False) as loading:
        run = healthcheck("inference", "--address", loading.address)
        assert run.returncode == 1 and "NOT_SERVING" in run.stderr
    with InProcessServer([build(config)]) as serving:
        assert healthcheck("inference", "--address", serving.address).returncode == 0
        wrong = healthcheck("embeddings", "--address", serving.address)
        assert wrong.returncode == 1 and "NOT_FOUND" in wrong.stderr
    gone = healthcheck("gateway", "--address", f"127.0.0.1:{free_port()}")
    assert gone.returncode == 1 and "unhealthy" in gone.stderr
