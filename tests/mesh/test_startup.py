"""A node whose p2p port is taken says so in one line and exits non-zero (the library itself only logs the
failed listen and would run on without a listener)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from .cluster import node_command


@pytest.mark.slow
def test_p2p_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = node_command(tmp_path / "data", p2p_port=port)
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("cmnode: cannot start: cannot listen on /ip4/127.0.0.1/tcp/")
    assert "Traceback" not in out.stderr
