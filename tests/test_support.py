"""The shared test helpers themselves: the gate that turns a missing dependency into a failure in CI, and the
waits that give up at their deadline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from tests.mesh import test_mdns
from tests.support import REQUIRE, eventually, missing, poll

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in REQUIRE:  # scripts/test sets one of them for this very run
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("not_required")
def test_a_missing_dependency_skips_on_a_developer_machine() -> None:
    with pytest.raises(pytest.skip.Exception, match="network namespaces unavailable: no root"):
        missing("network namespaces", "no root")


@pytest.mark.usefixtures("not_required")
@pytest.mark.parametrize("variable", REQUIRE)
def test_a_missing_dependency_fails_where_everything_is_required(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "1")  # CMNODE_REQUIRE_ALL, and the older CMNODE_REQUIRE_DOCKER still
    with pytest.raises(pytest.fail.Exception, match="Docker daemon unavailable: no daemon answers"):
        missing("Docker daemon", "no daemon answers")


@pytest.mark.usefixtures("not_required")
@pytest.mark.parametrize(("required", "outcome"), [(False, {"skipped": 1}), (True, {"errors": 1})])
def test_the_mdns_test_fails_in_ci_without_namespaces(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, required: bool, outcome: dict[str, int]
) -> None:
    """The real mDNS test module, run with ``ip`` refusing as it does without root: in CI, an error, not a skip."""

    def refuse(*args: str, ns: str | None = None) -> None:
        raise subprocess.CalledProcessError(1, ["ip", *args], stderr="Operation not permitted")

    monkeypatch.setattr(test_mdns, "_ip", refuse)
    if required:
        monkeypatch.setenv("CMNODE_REQUIRE_ALL", "1")
    result = pytester.runpytest_inprocess(
        str(ROOT / "tests" / "mesh" / "test_mdns.py"), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
        "-p", "no:cacheprovider", "-rs",
    )  # fmt: skip
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(["*network namespaces unavailable: cannot create them here*Operation not permitted*"])


async def test_eventually_returns_the_first_result_that_holds(autojump_clock: trio.abc.Clock) -> None:
    answers = iter([None, False, 0, 1])

    async def check() -> int | None:
        return next(answers)  # type: ignore[return-value]

    assert await eventually(check, timeout=5) == 0  # 0 is a result; only None and False mean "not yet"


async def test_eventually_gives_up_at_its_deadline(autojump_clock: trio.abc.Clock) -> None:
    async def never() -> bool:
        return False

    began = trio.current_time()
    with pytest.raises(AssertionError, match=r"the thing not within 30s \(last: False\)"):
        await eventually(never, timeout=30, what="the thing")
    assert 30 <= trio.current_time() - began < 31


def test_poll_gives_up_at_its_deadline() -> None:
    calls: list[int] = []
    with pytest.raises(AssertionError, match=r"never not within 0.05s"):
        poll(lambda: calls.append(1), timeout=0.05, interval=0.01, what="never")
    assert len(calls) >= 2
