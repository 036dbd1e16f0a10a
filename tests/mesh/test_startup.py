"""A node's start: a taken p2p port is one clear line (the library itself only logs the failed listen and would
run on without a listener), and the modules a node never runs are left out of it (node/startup.py)."""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.startup import LEFT_OUT, REFUSED, WITHOUT_MDNS, Unavailable, leave_out, left_out
from tests.support import clean_env

from .cluster import node_command

ROOT = Path(__file__).resolve().parents[2]


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


# ``cmnode run`` up to the node's start, with the runner replaced by one that imports what a node imports
# (node/runner.py imports node.app, and with it py-libp2p), makes a host as the node does, and reports.
PROBE = """
import json, sys
import node.runner

prefixes = sys.argv[1].split(",")

def main(config):
    import trio
    from node.app import run_node
    from node.host import Host
    from node.identity import load_or_create
    from node.startup import left_out

    async def host_up():
        host = Host(config=config, identity=load_or_create(config.data_dir))
        async with host.running():  # listening, pubsub and gossipsub running, as in a node
            transports = host.host.get_network().transport_manager.get_transports()
            return sorted(type(t).__name__ for t in transports)

    loaded = sorted(n for n in sys.modules if any(n == p or n.startswith(p + ".") for p in prefixes))
    real = [n for n in loaded if not left_out(n)]
    from Crypto.Util._raw_api import backend

    print(json.dumps({"real": real, "left_out": [n for n in loaded if left_out(n)], "transports": trio.run(host_up),
                      "cffi": "cffi" in sys.modules, "pycryptodome": backend}))
    return 0

node.runner.main = main
from node.cli import main as cli
sys.argv = ["cmnode", "run", *sys.argv[2:]]
cli()
"""


def probe(tmp_path: Path, *flags: str) -> dict[str, Any]:
    names = ",".join([*LEFT_OUT, *WITHOUT_MDNS, *REFUSED])
    flags = ("--data-dir", str(tmp_path), "--listen-address", "127.0.0.1", "--p2p-port", "0", *flags)
    out = subprocess.run([sys.executable, "-c", PROBE, names, *flags], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=clean_env())  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_a_node_without_mdns_loads_no_quic_relay_autotls_upnp_websocket_or_zeroconf(tmp_path: Path) -> None:
    result = probe(tmp_path, "--no-mdns")
    assert result["real"] == []
    assert {"aioquic", "libp2p.relay", "libp2p.security.tls.autotls", "zeroconf"} <= set(result["left_out"])
    assert result["transports"] == ["TCP"]  # the host it makes is the same: TCP only, as before
    assert not result["cffi"] and result["pycryptodome"] == "ctypes"  # its other backend, with the same C code


@pytest.mark.slow
def test_a_node_with_mdns_loads_zeroconf(tmp_path: Path) -> None:
    result = probe(tmp_path, "--mdns")
    assert [n for n in result["real"] if n.split(".")[0] != "zeroconf"] == []
    assert "zeroconf" in result["real"]


@pytest.fixture
def finder() -> Iterator[None]:
    """``leave_out`` in this process, undone afterwards (it is meant to last a node process's life)."""
    meta_path, modules = list(sys.meta_path), set(sys.modules)
    try:
        yield
    finally:
        sys.meta_path[:] = meta_path
        for name in set(sys.modules) - modules:
            del sys.modules[name]


def test_a_left_out_module_holds_names_that_refuse_to_run(finder: None) -> None:
    leave_out({"cmnode_left_out_example": "an example feature"})
    from cmnode_left_out_example.transport import Transport, make  # type: ignore[import-not-found]

    assert left_out("cmnode_left_out_example") and left_out("cmnode_left_out_example.transport")
    assert not isinstance(object(), Transport)
    assert Transport[int] is Transport  # in an annotation evaluated at import

    class Sub(Transport):  # type: ignore[misc]  # a subclass made at import (py-libp2p has some)
        pass

    Transport.method = lambda self: None  # a patch at import (py-libp2p's aioquic fixes)
    with pytest.raises(Unavailable, match="an example feature is left out"):
        make()
    with pytest.raises(Unavailable):
        Transport.Config.default()
    with pytest.raises(Unavailable):
        Sub()
    with pytest.raises(ValueError):  # an except clause naming a placeholder catches nothing it should not
        try:
            raise ValueError("real")
        except Transport:
            pass


def test_a_refused_module_cannot_be_imported(finder: None) -> None:
    leave_out({}, {"cmnode_refused_example": "an example backend"})
    with pytest.raises(ImportError, match="an example backend: left out"):
        importlib.import_module("cmnode_refused_example")
    with pytest.raises(ImportError):
        importlib.import_module("cmnode_refused_example.sub")


def test_a_module_already_imported_cannot_be_left_out(finder: None) -> None:
    with pytest.raises(RuntimeError, match="already imported: json"):
        leave_out({"json": "the JSON module"})
