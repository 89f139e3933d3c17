"""Strict settings (a misspelt key stops the start and is named), their limits, and the one service registry."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from schulki import cli
from schulki.config import REPO_ROOT, Config, SettingsError, load_config
from schulki.gateway.web.i18n import strings
from schulki.runtime import registry


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHULKI_")}
    return {**env, **extra}


@pytest.fixture
def no_settings(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SCHULKI_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "schulki.cli", "serve", "inference"],
        ["-m", "schulki.cli", "up"],
        ["-m", "schulki.gateway"],
    ],
)
def test_a_misspelt_key_in_the_settings_file_stops_the_start_and_is_named(tmp_path, argv):
    settings = tmp_path / "schulki.toml"
    settings.write_text("[inference]\ncontxt_length = 8192\n")
    run = subprocess.run(
        [sys.executable, *argv], env=clean_env(SCHULKI_CONFIG=str(settings)), capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2, run.stderr
    assert "unknown setting inference.contxt_length" in run.stderr
    assert "did you mean context_length?" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_misspelt_environment_variable_is_named(no_settings, monkeypatch):
    monkeypatch.setenv("SCHULKI_EMBEDDINGS__TREADS", "1")
    with pytest.raises(SettingsError, match=r"unknown setting embeddings\.treads \(did you mean threads\?\)"):
        load_config()


@pytest.mark.parametrize("section", ["runtime", "inference", "embeddings", "transcription", "retrieval", "gateway", "evaluation"])
def test_every_section_refuses_unknown_keys(no_settings, section):
    with pytest.raises(SettingsError, match=rf"unknown setting {section}\.no_such_key"):
        load_config(**{section: {"no_such_key": 1}})


def test_a_nested_inference_node_refuses_unknown_keys(no_settings):
    with pytest.raises(SettingsError, match=r"unknown setting gateway\.inference_nodes\.0\.modell \(did you mean model\?\)"):
        load_config(gateway={"inference_nodes": [{"address": "gpu1:50051", "modell": "x"}]})


def test_an_unknown_key_far_from_every_field_gets_no_guess(no_settings):
    with pytest.raises(SettingsError) as caught:
        load_config(retrieval={"zzzzzz": 1})
    assert "unknown setting retrieval.zzzzzz" in str(caught.value)
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("inference", "port", 0),
        ("inference", "port", 65536),
        ("embeddings", "port", -1),
        ("gateway", "port", 70000),
        ("gateway", "redirect_port", 0),
        ("retrieval", "weaviate_grpc_port", 0),
        ("inference", "threads", 0),
        ("inference", "max_queued", 0),
        ("inference", "max_queued_per_user", 0),
        ("inference", "parallel_sequences", 0),
        ("inference", "batch_size", 0),
        ("inference", "context_length", 0),
        ("inference", "gpu_layers", -2),
        ("inference", "default_temperature", -0.1),
        ("inference", "default_top_p", 0),
        ("embeddings", "threads", 0),
        ("embeddings", "max_sequences_per_batch", 257),
        ("embeddings", "batch_tokens", 0),
        ("transcription", "threads", -1),
        ("transcription", "max_queued", 0),
        ("transcription", "max_concurrent", 0),
        ("transcription", "beam_size", 0),
        ("transcription", "max_duration_s", 0),
        ("retrieval", "max_concurrent_ingests", 0),
        ("retrieval", "parse_timeout_s", 0),
        ("retrieval", "url_timeout_s", -1),
        ("retrieval", "embeddings_timeout_s", 0),
        ("retrieval", "vector_weight", 1.5),
        ("retrieval", "chunk_overlap_chars", -1),
        ("retrieval", "workspace_quota_mb", {"u-": -5}),
        ("gateway", "health_interval_s", 0),
        ("gateway", "body_idle_timeout_s", 0),
        ("gateway", "login_concurrency", 0),
        ("gateway", "trusted_proxies", ["proxy.schule.example"]),
        ("gateway", "nat_addresses", ["10.0.0.0/33"]),
        ("gateway", "sessions_per_user", 0),
        ("gateway", "max_chat_tokens", 0),
        ("gateway", "max_request_bytes", 0),
        ("gateway", "tokens_per_day", {"student": -1}),
        ("gateway", "chat_retention_days", -1),
        ("runtime", "max_message_bytes", 1000),
        ("evaluation", "threads", 0),
    ],
)
def test_each_limit_is_checked_and_the_key_named(no_settings, section, key, value):
    with pytest.raises(SettingsError, match=rf"setting {section}\.{key}"):
        load_config(**{section: {key: value}})


def test_the_overlap_must_stay_below_the_chunk(no_settings):
    with pytest.raises(SettingsError, match=r"chunk_overlap_chars \(300\) must be below chunk_chars \(300\)"):
        load_config(retrieval={"chunk_chars": 300, "chunk_overlap_chars": 300})
    assert load_config(retrieval={"chunk_chars": 300, "chunk_overlap_chars": 299}).retrieval.chunk_overlap_chars == 299


def test_auto_means_the_default_that_an_empty_value_means(no_settings, tmp_path, monkeypatch):
    settings = tmp_path / "schulki.toml"
    settings.write_text('[inference]\nthreads = "auto"\nparallel_sequences = "auto"\n[embeddings]\nthreads = "AUTO"\n')
    monkeypatch.setenv("SCHULKI_CONFIG", str(settings))
    config = load_config()
    assert config.inference.threads is None and config.inference.parallel_sequences is None and config.embeddings.threads is None
    monkeypatch.setenv("SCHULKI_INFERENCE__THREADS", "3")
    assert load_config().inference.threads == 3


def test_the_defaults_are_within_every_limit(no_settings):
    config = load_config()
    assert config == Config()


def test_the_settings_the_planner_writes_for_the_example_school_load(no_settings):
    from schulki.models.fleet import plan_inventory

    if importlib.util.find_spec("ansible") is None:
        pytest.skip("ansible-core is not installed (the planner reads the inventory with ansible-inventory)")
    plans = plan_inventory(str(REPO_ROOT / "inventory" / "example"))
    assert plans
    for plan in plans:
        load_config(**plan["settings"])
    gateway = next(plan for plan in plans if plan["kind"] == "gateway")
    # The address comes from the registry, not a copy of the port.
    assert gateway["settings"]["retrieval"]["embeddings_address"] == f"embeddings:{registry.spec('embeddings').default_port}"


def test_every_settings_file_in_the_repository_loads(no_settings, monkeypatch):
    found = [
        path
        for path in REPO_ROOT.rglob("*.toml")
        if not {".venv", "var", "node_modules", ".git"} & set(path.relative_to(REPO_ROOT).parts)
        and path.name not in ("pyproject.toml", "catalog.toml", "rules_de.toml")  # the build, the model catalog, moderation rules
    ]
    for path in found:
        monkeypatch.setenv("SCHULKI_CONFIG", str(path))
        load_config()


def test_the_settings_examples_in_the_docs_load(no_settings, tmp_path, monkeypatch):
    import re

    blocks = [
        block
        for document in (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
        for block in re.findall(r"```toml\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.S)
    ]
    assert blocks, "the README shows an example of the settings"
    for number, block in enumerate(blocks):
        example = tmp_path / f"example-{number}.toml"
        example.write_text(block)
        monkeypatch.setenv("SCHULKI_CONFIG", str(example))
        load_config()


# -- the service registry ----------------------------------------------------


def test_the_registry_matches_the_settings_and_the_protos():
    config = Config()
    assert registry.NAMES == ("inference", "embeddings", "transcription", "retrieval")
    for service in registry.SERVICES:
        assert service.port(config) == service.default_port
        stub = service.stub_class()
        module = sys.modules[stub.__module__.replace("_pb2_grpc", "_pb2")]
        assert service.proto_service in {s.full_name for s in module.DESCRIPTOR.services_by_name.values()}
        assert strings("de").service(service.name) == service.label_de
        assert strings("en").service(service.name) == service.label_en
    assert cli.SERVICES == registry.NAMES


def test_available_services_reports_only_what_can_be_imported(monkeypatch):
    assert cli.available_services() == list(registry.NAMES)  # this machine has every extra installed
    real_find_spec = importlib.util.find_spec

    def without_whisper(name, *args):
        return None if name == "faster_whisper" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_whisper)
    assert cli.available_services() == ["inference", "embeddings", "retrieval"]
    assert cli.main(["up", "--services", "transcription"]) == 2


def test_the_health_check_asks_for_the_registry_name(no_settings):
    run = subprocess.run(
        [sys.executable, "-m", "schulki.runtime.healthcheck", "embeddings", "--address", "127.0.0.1:1", "--timeout", "0.5"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(REPO_ROOT),
    )
    assert run.returncode == 1
    assert "embeddings at 127.0.0.1:1" in run.stderr
