"""Nodes for the event tests: the real node fixture of tests/node, and a reader of Server-Sent Events."""

from __future__ import annotations

from tests.node.conftest import start_node

__all__ = ["start_node"]
