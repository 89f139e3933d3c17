"""Attacks on the "Wie denkt die KI?" tab through Gradio's own API, as a student with curl would make them."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import gradio_call

EVENTS = {
    "thinking_next": ["Der Himmel ist", 1.0],
    "thinking_temperature": ["Der Himmel ist", 2.0],
    "thinking_extend": [None, "Der Himmel ist", 1.0, []],
    "thinking_compare": ["Der Himmel ist blau.", "Der Himmel ist lila."],
    "thinking_attention": ["Gut Ding braucht Weile"],
    "thinking_attention_layer": [{"labels": ["a"], "layers": {"1": [[1.0]]}}, "1", "1"],
    "thinking_attention_head": [{"labels": ["a"], "layers": {"1": [[1.0]]}}, "1", "1"],
    "thinking_leaderboard": [],
}


@pytest.mark.parametrize("api_name", sorted(EVENTS))
def test_the_tabs_events_refuse_a_caller_without_a_session(security_stack, api_name):
    with httpx.Client(base_url=security_stack.url, timeout=60) as stranger:
        refused = stranger.post(f"/gradio_api/call/{api_name}", json={"data": EVENTS[api_name]})
    assert refused.status_code == 401, refused.text


def test_a_beginning_longer_than_the_context_gets_a_plain_refusal_and_the_tab_keeps_serving(security_stack, student):
    with student.browser() as client:
        status, event, payload = gradio_call(client, "thinking_next", ["Der Himmel ist blau. " * 5000, 1.0])
        assert status == 200 and event == "error", (event, payload)
        assert "Traceback" not in str(payload) and "zu lang" in str(payload), payload
        status, event, payload = gradio_call(client, "thinking_next", ["Der Himmel ist", 1.0])
        assert status == 200 and event == "complete", (event, payload)


@pytest.mark.parametrize(
    "sentence",
    ["Gut Ding braucht Weile. " * 20, "Gut Ding braucht Weile, und Rom wurde auch nicht an einem Tag erbaut."],
    ids=["characters", "tokens"],
)
def test_a_sentence_too_long_for_the_attention_view_gets_a_plain_refusal(security_stack, student, sentence):
    with student.browser() as client:
        status, event, payload = gradio_call(client, "thinking_attention", [sentence])
        assert status == 200 and event == "error", (event, payload)
        assert "Traceback" not in str(payload) and "zu lang" in str(payload), payload


def test_the_tabs_events_are_all_attacked(security_stack, student):
    """Every event of the tab that Gradio's API names is in EVENTS: a new one cannot slip in unattacked. The service
    banner's two events, which every tab has (ui/common.status_banner), only say whether the model is up."""
    with student.browser() as client:
        info = client.get("/gradio_api/info").json()
    banner = {"thinking_status", "thinking_status_load"}
    named = {name.lstrip("/") for name in info["named_endpoints"] if name.lstrip("/").startswith("thinking_")} - banner
    assert named == set(EVENTS)
