"""Nodes for the logs and pull tests: the real in-process node fixture of tests/node."""

from __future__ import annotations

from tests.node.conftest import start_node

__all__ = ["start_node"]
