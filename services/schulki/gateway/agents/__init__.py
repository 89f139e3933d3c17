"""The chat tab's agent mode: a bounded loop in which the chat model picks one vetted server tool per step.

``switch.py`` says which roles the admin lets use it, ``tools.py`` holds the
tools (each a use case of the Gateway, with the Gateway's own checks),
``loop.py`` runs one task to its answer or to its limits, step by step, with
a German trace. The Gateway's ``run_agent`` is the door.
"""
