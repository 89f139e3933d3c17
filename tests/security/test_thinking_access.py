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
