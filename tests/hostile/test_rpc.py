"""Hostile JSON-RPC, generated: the protocol with every real method (``rpc/methods.py``) bound to a real node
(a real store, the executor on ``FakeRuntime``), driven with request bodies bent with hostile values.

Whatever the body, ``Dispatcher.handle`` answers (or, for notifications only, stays silent) without raising;
the answer is strict JSON (no NaN, no Infinity); an error is one of the protocol's codes or a node's own, and
never -32603 (an internal error means an input nobody foresaw); and the store holds only what re-validates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rpc.methods import build_methods
from rpc.protocol import INTERNAL_ERROR, Dispatcher

from .hostile import SETTINGS, Harness, Raw, assert_store_valid, bent, dumps, node_on_store, values
from .hostile import VALID_PARAMS as VALID


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"the answer holds {name}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


@st.composite
def calls(draw: st.DrawFn) -> Any:
    method = draw(st.sampled_from([*VALID, "Nope.Nothing"]))
    params: Any = VALID.get(method, {})
    if draw(st.booleans()):
        params = draw(bent(params))
    request: Any = {"jsonrpc": "2.0", "method": method, "params": [params] if draw(st.booleans()) else params}
    request["id"] = draw(st.sampled_from([1, "a", None, Raw("1e400"), 2**63, Raw("NaN"), "\ud800", [1], 1.5]))
    return draw(bent(request)) if draw(st.integers(min_value=0, max_value=3)) == 0 else request


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["call", "call", "call", "batch", "raw", "value"]))
    if kind == "raw":
        return draw(st.binary(max_size=64))
    if kind == "value":
        return dumps(draw(values)).encode()
    if kind == "batch":
        return dumps(draw(st.lists(calls(), max_size=4))).encode()
    return dumps(draw(calls())).encode()


FINDING_12 = [
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox"}],"id":1e400}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Status","params":[{"job_id":"\\ud800"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox","env":{"\\udfff":"x"}}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.List","params":[{"cursor":"1e400:1"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.List","params":[{"cursor":"-1e999:999999999999999999"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.List","params":[{"cursor":"..:1"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox\\n"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox","timeout":1e400}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox","retries":NaN}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Logs","params":[{"job_id":"j","tail":18446744073709551616}],"id":1}',
    b"[" * 100_000,
]


async def _check(h: Harness, body: bytes) -> list[dict[str, Any]]:
    """Send ``body``; assert the answer is well-formed; return its responses."""
    answer = await Dispatcher(build_methods(h.node)).handle(body)
    if answer is None:
        return []
    decoded = _strict(answer.decode())
    responses = decoded if isinstance(decoded, list) else [decoded]
    assert responses, answer
    for response in responses:
        assert response["jsonrpc"] == "2.0" and "id" in response, response
        assert ("result" in response) != ("error" in response), response
        if "error" in response:
            code = response["error"]["code"]
            assert isinstance(code, int) and code != INTERNAL_ERROR, response
            assert -32700 <= code <= -32600 or -32099 <= code <= -32000, response
    return responses


@SETTINGS
@given(body=bodies())
@example(body=FINDING_12[0])
@example(body=b"[" + b",".join(FINDING_12[:-1]) + b"]")
async def test_any_body_gets_a_well_formed_answer(tmp_path: Path, body: bytes) -> None:
    async with node_on_store(tmp_path, run_executor=True) as h:
        await _check(h, body)
        await assert_store_valid(h)


@pytest.mark.parametrize("body", FINDING_12, ids=range(len(FINDING_12)))
async def test_finding_12_inputs_are_refused_as_bad_requests(tmp_path: Path, body: bytes) -> None:
    async with node_on_store(tmp_path, run_executor=True) as h:
        (response,) = await _check(h, body)
        if b'"cursor":"1e400' in body or b'"cursor":"-1e999' in body:  # an absurd but readable cursor: any page
            assert "result" in response or response["error"]["code"] == -32602, response
        else:
            assert response["error"]["code"] in (-32700, -32600, -32602), response
        assert await assert_store_valid(h) == 0  # in particular, the Create with id 1e400 did not run
