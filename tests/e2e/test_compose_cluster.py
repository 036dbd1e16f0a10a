"""The three-node compose cluster, end to end: runs ``examples/e2e-cluster.sh`` as CI does.

The script builds the image with no registry, starts docker/compose.yaml under a unique project name, checks jobs
across the nodes and removes everything it created; this test only runs it and checks its verdict, so that CI runs
the cluster through the one test command. Its output is printed (visible with ``-s`` and on failure).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "e2e-cluster.sh"
# Cold (base image from Debian packages, wheelhouse from the index) the script takes about 3 minutes here, warm
# about 30 s; the bound leaves room for a loaded CI machine and still ends a hung run well inside the CI budget.
TIMEOUT = 15 * 60
TEARDOWN_GRACE = 3 * 60

# pytest-timeout's default (pyproject) is far shorter: this test bounds the script itself, and the teardown after.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(TIMEOUT + TEARDOWN_GRACE + 60)]


def run_script(env: dict[str, str]) -> tuple[int, str]:
    """Run the script in its own process group; on timeout, SIGTERM the group so the script's EXIT trap still
    removes the cluster, and SIGKILL it only if the teardown itself hangs."""
    proc = subprocess.Popen(
        [str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=TEARDOWN_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"{SCRIPT.name} did not finish within {TIMEOUT}s:\n{out}", pytrace=False)
    return proc.returncode, out


def test_compose_cluster_end_to_end() -> None:
    env = dict(os.environ)
    env["E2E_MESH"] = "1"  # the mesh checks are required: a skipped mesh check is a failure
    code, out = run_script(env)
    sys.stdout.write(out)
    assert code == 0, f"{SCRIPT.name} failed (exit {code}):\n{out}"
    assert "PASSED" in out and "teardown: no container, network or volume" in out, out
    assert "SKIP" not in out, out
