"""The service runtime: health, reflection, service token, SIGTERM, logs, start-up errors, settings."""

from __future__ import annotations

import random
import struct
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from schulki import codegen
from schulki.config import Config, RuntimeConfig
from schulki.inference import build
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
from schulki.runtime.client import health_status

from tests.conftest import InProcessServer, ServiceProcess

QUESTION = [pb.Message(role=pb.ROLE_USER, content="Erzähl mir etwas über die Schule.")]
SERVICE = "schulki.inference.v1.InferenceService"


def small_config() -> Config:
    config = Config()
    config.inference.threads = 2
    return config


def test_generated_code_matches_the_protos():
    assert codegen.stale_files() == []


def test_health_is_not_serving_until_the_model_is_loaded_and_reflection_lists_the_service():
    service = build(small_config())
    with InProcessServer([service], start=False) as server, server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as early:
            pb_grpc.InferenceServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
        assert early.value.code() == grpc.StatusCode.UNAVAILABLE
        server.call(service.start())
        server.call(server.running.set_serving(True))
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_only_callers_with_the_service_token_get_in():
    service = build(small_config())
    runtime = RuntimeConfig(service_token="s3cret-token")
    with InProcessServer([service], runtime) as server, server.channel() as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        for metadata in (None, [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as refused_stream:
            list(stub.Chat(pb.ChatRequest(messages=QUESTION, max_tokens=3)))
        assert refused_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=[("authorization", "Bearer s3cret-token")])
        assert info.quant == "Q4_K_M"
        # Health checks (container HEALTHCHECK) work without the token.
        assert health_status(server.address, SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_sigterm_during_a_stream_lets_it_finish_then_exits_cleanly():
    # One llama.cpp thread and 24 tokens: two threads that spin waiting for each other crawl when the machine is
    # oversubscribed, and 60 tokens then outlasted a 30 s grace. The grace period is generous on purpose: it only
    # bounds the wait, the test checks that the running answer ends complete after SIGTERM, not how fast.
    tokens = 24
    proc = ServiceProcess("inference", env={"SCHULKI_INFERENCE__THREADS": "1", "SCHULKI_RUNTIME__GRACE_PERIOD_S": "180"}).start()
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        stream = stub.Chat(
            pb.ChatRequest(messages=QUESTION, max_tokens=tokens, sampling=pb.SamplingOptions(temperature=0)),
            metadata=[("x-request-id", "req-sigterm-1")],
        )
        first = next(stream)
        assert first.HasField("text")
        proc.terminate()
        rest = list(stream)
        assert any(piece.HasField("text") for piece in rest)  # the answer went on streaming after SIGTERM
        assert rest[-1].HasField("finish")
        assert rest[-1].finish.usage.completion_tokens == tokens
        # While it shuts down, or once it is gone, new calls are refused rather than hanging.
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    code, err = proc.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert "stopped" in err


def test_sigterm_cancels_a_stream_that_outlasts_the_grace_period():
    proc = ServiceProcess("inference", env={"SCHULKI_INFERENCE__THREADS": "2", "SCHULKI_RUNTIME__GRACE_PERIOD_S": "1"}).start()
    with grpc.insecure_channel(proc.address) as channel:
        stream = pb_grpc.InferenceServiceStub(channel).Chat(
            pb.ChatRequest(messages=QUESTION, max_tokens=3000, sampling=pb.SamplingOptions(temperature=0))
        )
        next(stream)
        started = time.monotonic()
        proc.terminate()
        with pytest.raises(grpc.RpcError) as ended:
            list(stream)
        assert ended.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    code, err = proc.stop()
    assert code == 0, err
    assert time.monotonic() - started < 20
    assert "Traceback" not in err


def test_logs_carry_the_request_id_and_never_the_prompt():
    secret = "Mein Geheimnis ist Zitronenkuchen"
    proc = ServiceProcess("inference", env={"SCHULKI_INFERENCE__THREADS": "2"}).start()
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        list(
            stub.Chat(
                pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=secret)], max_tokens=5),
                metadata=[("x-request-id", "req-log-42")],
            )
        )
    code, err = proc.stop()
    assert code == 0
    lines = [line for line in err.splitlines() if "req-log-42" in line]
    assert lines, err
    assert any("chat" in line for line in lines)
    assert "Zitronenkuchen" not in err
    assert "chars hidden" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "model file not found"),
        (b"this is not a model", "not a GGUF model file"),
        (b"GGUF\x03\x00\x00\x00" + random.Random(7).randbytes(2048), "cannot load model"),
        # A header whose first key claims to be 2**60 bytes long.
        (b"GGUF\x03\x00\x00\x00" + struct.pack("<QQQ", 1, 3, 2**60) + b"general.name", "cannot load model"),
    ],
)
def test_a_missing_or_corrupt_model_gives_one_line_and_a_non_zero_exit(tmp_path, content, expected):
    model = tmp_path / "broken.gguf"
    if content is not None:
        model.write_bytes(content)
    proc = ServiceProcess("inference", env={"SCHULKI_INFERENCE__MODEL_PATH": str(model)}).start(wait=False)
    code, err = proc.stop(terminate=False)
    assert code == 2
    assert "Traceback" not in err
    problem = [line for line in err.splitlines() if line.startswith("schulki serve inference:")]
    assert len(problem) == 1 and expected in problem[0], err


def test_settings_come_from_a_toml_file_and_the_environment_wins(tmp_path, monkeypatch):
    config_file = tmp_path / "schulki.toml"
    config_file.write_text('[inference]\ncontext_length = 8192\nmax_queued = 5\n[runtime]\nlog_level = "DEBUG"\n')
    monkeypatch.setenv("SCHULKI_CONFIG", str(config_file))
    monkeypatch.setenv("SCHULKI_INFERENCE__MAX_QUEUED", "9")
    config = Config()
    assert config.inference.context_length == 8192
    assert config.inference.max_queued == 9
    assert config.runtime.log_level == "DEBUG"


def test_the_service_token_can_come_from_a_secret_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    assert RuntimeConfig(service_token_file=secret).resolved_service_token() == "from-a-file"


def test_services_speak_tls_between_machines_when_given_a_certificate(tmp_path):
    import subprocess

    from schulki.runtime.client import open_channel

    key, cert = tmp_path / "service.key", tmp_path / "service.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    service = build(small_config())
    runtime = RuntimeConfig(tls_cert_file=cert, tls_key_file=key)
    with InProcessServer([service], runtime) as server:
        address = f"localhost:{server.running.port}"
        with open_channel(address, RuntimeConfig(tls_ca_file=cert)) as channel:
            assert pb_grpc.InferenceServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10).quant == "Q4_K_M"
        with grpc.insecure_channel(address) as plain:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.InferenceServiceStub(plain).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_retrieval_finds_the_embeddings_service_at_its_configured_port(monkeypatch):
    from schulki.retrieval.service import RetrievalService

    monkeypatch.setenv("SCHULKI_EMBEDDINGS__PORT", "50999")
    assert RetrievalService(Config()).embedder.address == "127.0.0.1:50999"
    monkeypatch.setenv("SCHULKI_RETRIEVAL__EMBEDDINGS_ADDRESS", "gpu-node-1:50052")
    assert RetrievalService(Config()).embedder.address == "gpu-node-1:50052"
