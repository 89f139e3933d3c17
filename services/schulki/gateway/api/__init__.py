"""The OpenAI-compatible API under /v1, on the same port as the web UI."""
