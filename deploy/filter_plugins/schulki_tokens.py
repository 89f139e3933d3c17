"""Ansible filter that applies schulki's rule for weak service tokens, so the roll-out refuses what a node would."""

from __future__ import annotations

import sys
from pathlib import Path

DOCUMENTATION = r"""
name: schulki_token_problem
short_description: Why a service token is weak or an example, or an empty string
description:
  - Applies services/schulki/runtime/tokens.py (at least 32 characters, no example words, enough randomness).
"""

try:
    from schulki.runtime.tokens import token_problem
except ImportError:  # running from a checkout without schulki installed on the controller
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))
    from schulki.runtime.tokens import token_problem


def schulki_token_problem(token) -> str:
    """The reason a token must not be used, or ""."""
    return token_problem(str(token)) or ""


class FilterModule:
    """schulki's token filter."""

    def filters(self):
        return {"schulki_token_problem": schulki_token_problem}
