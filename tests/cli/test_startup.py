"""Client commands stay light: no libp2p, Docker SDK, trio or httpx in the process; rich only for tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import NodeProcess, clean_env

pytestmark = pytest.mark.slow  # each test runs the executable

HEAVY = ("libp2p", "docker", "trio", "httpx", "quart", "hypercorn", "prometheus_client", "zeroconf")
PROBE = """
import atexit, json, sys
def report():
    loaded = sorted({m.split(".")[0] for m in sys.modules})
    sys.stderr.write("MODULES " + json.dumps(loaded) + "\\n")
atexit.register(report)
sys.argv = ["cmnode", *sys.argv[1:]]
from node.cli import main
main()
"""


def loaded_modules(*args: str, url: str) -> tuple[int, set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                         env=clean_env(CMNODE_URL=url), stdin=subprocess.DEVNULL)  # fmt: skip
    line = next(line for line in out.stderr.splitlines() if line.startswith("MODULES "))
    return out.returncode, set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize("args", [("status", "some-job", "--json"), ("jobs", "--json"), ("info", "--json")])
def test_client_commands_import_nothing_heavy(args: tuple[str, ...]) -> None:
    code, modules = loaded_modules(*args, url="http://127.0.0.1:1")  # unreachable: the whole path to the error
    assert code == 3
    assert modules.isdisjoint(HEAVY), modules & set(HEAVY)
    assert "rich" not in modules  # no table printed, no rich


def test_a_table_imports_rich_and_still_nothing_heavy(no_docker_node: NodeProcess) -> None:
    code, modules = loaded_modules("info", url=no_docker_node.url)
    assert code == 0
    assert "rich" in modules
    assert modules.isdisjoint(HEAVY), modules & set(HEAVY)
