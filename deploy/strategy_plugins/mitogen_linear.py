"""Ansible's linear strategy run through Mitogen (deploy/ansible.cfg names it), from the mitogen package in .venv.

Mitogen keeps one Python interpreter per host for the whole run and sends it each module once, where plain
Ansible starts a fresh interpreter for every task and compiles the module and its helpers from source each
time. Its strategy plugin has to be found on Ansible's plugin path, and the package's own folder lies in
site-packages under a Python version's name: this file names it by import instead. `ANSIBLE_STRATEGY=linear`
in front of a command runs the play without Mitogen.
"""

from __future__ import annotations

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
