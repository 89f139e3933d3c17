"""The gateway students see: the Gradio web UI in German (and English) and the OpenAI-compatible API.

``create_app(config)`` in ``app.py`` builds the FastAPI app with the UI mounted;
``python -m schulki.gateway`` serves it. Gradio reads its privacy switches from
the environment when it is imported, so they are set here, before any module
of the gateway can import it.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, whatever the environment says
os.environ.setdefault("GRADIO_RUN_HISTORY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
