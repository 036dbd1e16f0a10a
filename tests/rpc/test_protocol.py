"""The JSON-RPC 2.0 engine, driven with raw bodies the way the HTTP server will drive it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio

from node.errors import NotFoundError, QueueFullError, ValidationError
from rpc.protocol import MAX_BATCH, Dispatcher, Method

CREATE_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "minLength": 1},
        "arguments": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["image"],
    "additionalProperties": False,
}
ANY_OBJECT = {"type": "object"}
PARAMS_MSG = "invalid request: params must be an array or an object"


class Recorder:
    """Local handlers that remember what they were given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.metrics: list[tuple[str, float, int | None]] = []

    async def create(self, params: dict[str, Any]) -> Any:
        self.seen.append(("create", params))
        return {"id": "job-1", "image": params["image"]}

    async def echo(self, params: dict[str, Any]) -> Any:
        self.seen.append(("echo", params))
        return params

    async def sleep(self, params: dict[str, Any]) -> Any:
        await trio.sleep(params["seconds"])
        self.seen.append(("sleep", params))
        return params["seconds"]

    async def not_found(self, params: dict[str, Any]) -> Any:
        raise NotFoundError("no job abc", data={"id": "abc"})

    async def queue_full(self, params: dict[str, Any]) -> Any:
        raise QueueFullError("queue full (10 jobs)")

    async def invalid(self, params: dict[str, Any]) -> Any:
        raise ValidationError([{"field": "timeout", "message": "must be > 0"}])

    async def boom(self, params: dict[str, Any]) -> Any:
        self.seen.append(("boom", params))
        raise RuntimeError("secret-internal-detail")

    async def unserialisable(self, params: dict[str, Any]) -> Any:
        return {"x": object()}

    async def grouped(self, params: dict[str, Any]) -> Any:
        async def fail() -> None:
            raise NotFoundError("gone")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)

    def on_call(self, name: str, seconds: float, code: int | None) -> None:
        self.metrics.append((name, seconds, code))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def rpc(rec: Recorder) -> Dispatcher:
    methods = [
        Method(name="ContainerService.Create", handler=rec.create, params=CREATE_SCHEMA, summary="Create a job"),
        Method(name="Test.Echo", handler=rec.echo, params=ANY_OBJECT),
        Method(name="Test.Sleep", handler=rec.sleep, params=ANY_OBJECT),
        Method(name="Test.NotFound", handler=rec.not_found, params=ANY_OBJECT),
        Method(name="Test.QueueFull", handler=rec.queue_full, params=ANY_OBJECT),
        Method(name="Test.Invalid", handler=rec.invalid, params=ANY_OBJECT),
        Method(name="Test.Boom", handler=rec.boom, params=ANY_OBJECT),
        Method(name="Test.Unserialisable", handler=rec.unserialisable, params=ANY_OBJECT),
        Method(name="Test.Grouped", handler=rec.grouped, params=ANY_OBJECT),
    ]
    return Dispatcher(methods, on_call=rec.on_call)


async def send(rpc: Dispatcher, request: Any) -> Any:
    """Send a request (raw bytes, or anything JSON-able) and decode the reply; None when nothing came back."""
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    out = await rpc.handle(body)
    return None if out is None else json.loads(out)


def req(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not ...:
        message["id"] = id
    return message


def error(code: int, message: str, id: Any = None, data: Any = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        detail["data"] = data
    return {"jsonrpc": "2.0", "error": detail, "id": id}


# --- success, params conventions, ids ----------------------------------------------------------------


async def test_seed_request_byte_for_byte(rpc: Dispatcher, rec: Recorder) -> None:
    body = (
        b'{"jsonrpc":"2.0","method":"ContainerService.Create",'
        b'"params":[{"image":"nginx","arguments":[],"env":{}}],"id":1}'
    )
    out = await rpc.handle(body)
    assert out == b'{"jsonrpc":"2.0","result":{"id":"job-1","image":"nginx"},"id":1}'
    assert rec.seen == [("create", {"image": "nginx", "arguments": [], "env": {}})]


async def test_params_by_name(rpc: Dispatcher, rec: Recorder) -> None:
    reply = await send(rpc, req("ContainerService.Create", {"image": "redis"}))
    assert reply == {"jsonrpc": "2.0", "result": {"id": "job-1", "image": "redis"}, "id": 1}
    assert rec.seen == [("create", {"image": "redis"})]


@pytest.mark.parametrize("params", [[], None])
async def test_empty_or_absent_params_mean_empty_object(rpc: Dispatcher, rec: Recorder, params: Any) -> None:
    assert await send(rpc, req("Test.Echo", params)) == {"jsonrpc": "2.0", "result": {}, "id": 1}
    assert rec.seen == [("echo", {})]


async def test_result_key_order_is_kept(rpc: Dispatcher) -> None:
    out = await rpc.handle(json.dumps(req("Test.Echo", [{"z": 1, "a": 2, "m": 3}])).encode())
    assert out == b'{"jsonrpc":"2.0","result":{"z":1,"a":2,"m":3},"id":1}'


@pytest.mark.parametrize("rid", ["abc", 7, -3, 2.5, None, ""])
async def test_id_is_echoed(rpc: Dispatcher, rid: Any) -> None:
    reply = await send(rpc, req("Test.Echo", {}, id=rid))
    assert reply == {"jsonrpc": "2.0", "result": {}, "id": rid}
    assert type(reply["id"]) is type(rid)


async def test_id_null_is_not_a_notification(rpc: Dispatcher) -> None:
    assert await rpc.handle(b'{"jsonrpc":"2.0","method":"Test.Echo","id":null}') == (
        b'{"jsonrpc":"2.0","result":{},"id":null}'
    )


async def test_unknown_request_members_are_ignored(rpc: Dispatcher) -> None:
    reply = await send(rpc, {**req("Test.Echo", {}), "extra": True})
    assert reply == {"jsonrpc": "2.0", "result": {}, "id": 1}


async def test_non_ascii_round_trip(rpc: Dispatcher) -> None:
    reply = await send(rpc, req("Test.Echo", {"name": "café ✓"}))
    assert reply["result"] == {"name": "café ✓"}


# --- notifications -------------------------------------------------------------------------------------


async def test_notification_runs_without_response(rpc: Dispatcher, rec: Recorder) -> None:
    assert await rpc.handle(b'{"jsonrpc":"2.0","method":"Test.Echo","params":[{"n":1}]}') is None
    assert rec.seen == [("echo", {"n": 1})]


@pytest.mark.parametrize("method", ["Test.Boom", "Test.NotFound", "No.Such", "Test.Unserialisable"])
async def test_failing_notification_is_silent(rpc: Dispatcher, method: str) -> None:
    assert await send(rpc, req(method, id=...)) is None


async def test_invalid_params_notification_is_silent(rpc: Dispatcher, rec: Recorder) -> None:
    assert await send(rpc, req("ContainerService.Create", {}, id=...)) is None
    assert rec.seen == []


async def test_invalid_request_without_id_still_gets_an_answer(rpc: Dispatcher) -> None:
    assert await send(rpc, {"jsonrpc": "1.0", "method": "Test.Echo"}) == error(
        -32600, 'invalid request: jsonrpc must be "2.0"'
    )


# --- parse errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"jsonrpc":"2.0","method":"Test.Echo"', b"", b"   ", b"{}x", b"{'a': 1}", b"[1,]", b'{"a":NaN}', b"Infinity"],
)
async def test_parse_error(rpc: Dispatcher, body: bytes) -> None:
    reply = await send(rpc, body)
    assert reply["id"] is None
    assert reply["error"]["code"] == -32700
    assert reply["error"]["message"].startswith("parse error: ")
    assert "result" not in reply


async def test_non_utf8_body(rpc: Dispatcher) -> None:
    body = b'{"jsonrpc":"2.0","method":"Test.Echo","params":{"a":"\xff"},"id":1}'
    assert await send(rpc, body) == error(-32700, "parse error: body is not valid UTF-8")


async def test_utf16_body_is_refused(rpc: Dispatcher) -> None:
    body = json.dumps(req("Test.Echo")).encode("utf-16")
    assert (await send(rpc, body))["error"]["code"] == -32700


async def test_absurdly_nested_body(rpc: Dispatcher) -> None:
    assert await send(rpc, b"[" * 100_000 + b"]" * 100_000) == error(-32700, "parse error: nested too deeply")


# --- invalid requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"1", b'"x"', b"null", b"true"])
async def test_not_object_or_array(rpc: Dispatcher, body: bytes) -> None:
    assert await send(rpc, body) == error(-32600, "invalid request: must be an object or an array")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"method": "Test.Echo", "id": 1}, 'invalid request: jsonrpc must be "2.0"'),
        ({"jsonrpc": "1.0", "method": "Test.Echo", "id": 1}, 'invalid request: jsonrpc must be "2.0"'),
        ({"jsonrpc": 2.0, "method": "Test.Echo", "id": 1}, 'invalid request: jsonrpc must be "2.0"'),
        ({"jsonrpc": "2.0", "id": 1}, "invalid request: method must be a string"),
        ({"jsonrpc": "2.0", "method": 5, "id": 1}, "invalid request: method must be a string"),
        ({"jsonrpc": "2.0", "method": None, "id": 1}, "invalid request: method must be a string"),
        (
            {"jsonrpc": "2.0", "method": "Test.Echo", "params": "x", "id": 1},
            PARAMS_MSG,
        ),
        ({"jsonrpc": "2.0", "method": "Test.Echo", "params": 3, "id": 1}, PARAMS_MSG),
        ({"jsonrpc": "2.0", "method": "Test.Echo", "params": None, "id": 1}, PARAMS_MSG),
    ],
)
async def test_invalid_request_echoes_a_valid_id(rpc: Dispatcher, request_: Any, message: str) -> None:
    assert await send(rpc, request_) == error(-32600, message, id=1)


@pytest.mark.parametrize("rid", [True, False, [1], {"a": 1}])
async def test_id_of_wrong_type(rpc: Dispatcher, rec: Recorder, rid: Any) -> None:
    reply = await send(rpc, req("Test.Echo", {}, id=rid))
    assert reply == error(-32600, "invalid request: id must be a string, a number or null")
    assert rec.seen == []


@pytest.mark.parametrize("body", [b'"id":1e400', b'"id":-1e400', b'"id":123456789012345678901234567890'])
async def test_an_id_that_cannot_be_echoed_is_refused_before_the_call(
    rpc: Dispatcher, rec: Recorder, body: bytes
) -> None:
    """Once the call ran and the answer failed to encode (HTTP 500): a retrying client duplicated the job."""
    reply = await send(rpc, b'{"jsonrpc":"2.0","method":"Test.Echo","params":{},' + body + b"}")
    assert reply == error(-32600, "invalid request: id must be a string, a number or null")
    assert rec.seen == []


@pytest.mark.parametrize("rid", [-(2**63), 2**63 - 1, 1.5])
async def test_the_int64_edges_are_echoed(rpc: Dispatcher, rid: Any) -> None:
    """An id obeys the rule every value obeys (node/schema.py): -2^63 fits, as it does in a spec."""
    reply = await send(rpc, req("Test.Echo", {}, id=rid))
    assert "error" not in reply and reply["id"] == rid


async def test_lone_surrogates_in_params_are_invalid_params(rpc: Dispatcher, rec: Recorder) -> None:
    body = b'{"jsonrpc":"2.0","method":"Test.Echo","params":{"a":"\\ud800"},"id":1}'
    reply = await send(rpc, body)
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["errors"] == [
        {"field": "a", "message": "must be valid Unicode (it holds a lone surrogate)"}
    ]
    assert rec.seen == []


async def test_invalid_params_type_on_unknown_method_is_invalid_request(rpc: Dispatcher) -> None:
    reply = await send(rpc, req("No.Such", "x"))
    assert reply["error"]["code"] == -32600


# --- method not found ----------------------------------------------------------------------------------


async def test_method_not_found(rpc: Dispatcher, rec: Recorder) -> None:
    assert await send(rpc, req("ContainerService.Nope", {}, id="q")) == error(
        -32601, "method not found: ContainerService.Nope", id="q"
    )
    assert rec.metrics == []  # unknown names never reach metrics


async def test_method_names_are_case_sensitive(rpc: Dispatcher) -> None:
    assert (await send(rpc, req("containerservice.create", {"image": "x"})))["error"]["code"] == -32601


# --- invalid params ------------------------------------------------------------------------------------


async def test_schema_errors_are_invalid_params(rpc: Dispatcher, rec: Recorder) -> None:
    reply = await send(rpc, req("ContainerService.Create", [{"arguments": [1], "env": {"A": 2}, "x": 0}], id=9))
    errors = [
        {"field": "image", "message": "is required"},
        {"field": "arguments[0]", "message": "must be a string, got int"},
        {"field": "env.A", "message": "must be a string, got int"},
        {"field": "x", "message": "unknown field"},
    ]
    message = (
        "invalid params: image: is required; arguments[0]: must be a string, got int; "
        "env.A: must be a string, got int; x: unknown field"
    )
    assert reply == error(-32602, message, id=9, data={"errors": errors})
    assert rec.seen == []


async def test_more_than_one_positional_param(rpc: Dispatcher, rec: Recorder) -> None:
    reply = await send(rpc, req("Test.Echo", [{}, {}]))
    errors = [{"field": "params", "message": "must hold one params object, got 2 positional values"}]
    assert reply == error(-32602, "invalid params: params: " + errors[0]["message"], id=1, data={"errors": errors})
    assert rec.seen == []


@pytest.mark.parametrize(("params", "kind"), [([5], "int"), (["x"], "str"), ([[]], "list"), ([None], "NoneType")])
async def test_positional_param_that_is_not_an_object(rpc: Dispatcher, params: Any, kind: str) -> None:
    reply = await send(rpc, req("Test.Echo", params))
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"] == {"errors": [{"field": "params", "message": f"must be an object, got {kind}"}]}


async def test_handler_validation_error(rpc: Dispatcher) -> None:
    errors = [{"field": "timeout", "message": "must be > 0"}]
    assert await send(rpc, req("Test.Invalid", {})) == error(
        -32602, "invalid params: timeout: must be > 0", id=1, data={"errors": errors}
    )


# --- handler errors ------------------------------------------------------------------------------------


async def test_handler_not_found_error(rpc: Dispatcher) -> None:
    assert await send(rpc, req("Test.NotFound", {}, id="a")) == error(-32001, "no job abc", id="a", data={"id": "abc"})


async def test_handler_queue_full_error_omits_null_data(rpc: Dispatcher) -> None:
    out = await rpc.handle(json.dumps(req("Test.QueueFull", {})).encode())
    assert out == b'{"jsonrpc":"2.0","error":{"code":-32002,"message":"queue full (10 jobs)"},"id":1}'


async def test_node_error_wrapped_in_a_handler_nursery(rpc: Dispatcher) -> None:
    assert await send(rpc, req("Test.Grouped", {})) == error(-32001, "gone", id=1)


async def test_unexpected_exception_is_internal_error_and_logged(
    rpc: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cmnode.rpc"):
        out = await rpc.handle(json.dumps(req("Test.Boom", {})).encode())
    assert out is not None
    assert json.loads(out) == error(-32603, "internal error", id=1)
    assert b"secret-internal-detail" not in out
    assert b"Traceback" not in out
    assert b"RuntimeError" not in out
    logged = [r for r in caplog.records if r.name == "cmnode.rpc" and r.exc_info]
    assert len(logged) == 1
    assert "Test.Boom" in logged[0].getMessage()
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], RuntimeError)


async def test_unserialisable_result_is_internal_error(rpc: Dispatcher, rec: Recorder) -> None:
    assert await send(rpc, req("Test.Unserialisable", {})) == error(-32603, "internal error", id=1)
    assert rec.metrics[-1][2] == -32603


async def test_cancellation_propagates(rpc: Dispatcher) -> None:
    with trio.move_on_after(0.01) as scope:
        await rpc.handle(json.dumps(req("Test.Sleep", {"seconds": 10})).encode())
        pytest.fail("handle returned despite cancellation")
    assert scope.cancelled_caught


async def test_cancellation_propagates_from_a_batch(rpc: Dispatcher) -> None:
    body = json.dumps([req("Test.Sleep", {"seconds": 10}, id=i) for i in range(3)]).encode()
    with trio.move_on_after(0.01) as scope:
        await rpc.handle(body)
        pytest.fail("handle returned despite cancellation")
    assert scope.cancelled_caught


# --- batches -------------------------------------------------------------------------------------------


async def test_empty_batch(rpc: Dispatcher) -> None:
    assert await send(rpc, []) == error(-32600, "invalid request: empty batch")


async def test_batch_too_large(rpc: Dispatcher, rec: Recorder) -> None:
    reply = await send(rpc, [req("Test.Echo", {}, id=i) for i in range(MAX_BATCH + 1)])
    assert reply == error(-32600, f"invalid request: batch too large ({MAX_BATCH + 1} entries, at most {MAX_BATCH})")
    assert rec.seen == []


async def test_batch_at_the_cap_is_served(rpc: Dispatcher) -> None:
    reply = await send(rpc, [req("Test.Echo", {"i": i}, id=i) for i in range(MAX_BATCH)])
    assert [r["result"]["i"] for r in reply] == list(range(MAX_BATCH))


async def test_mixed_batch(rpc: Dispatcher, rec: Recorder) -> None:
    reply = await send(
        rpc,
        [
            req("Test.Echo", [{"a": 1}], id="1"),
            req("Test.Echo", {"note": True}, id=...),
            {"foo": "boo"},
            req("No.Such", {}, id="5"),
            req("Test.NotFound", {}, id=9),
            1,
            req("ContainerService.Create", {}, id=10),
            req("Test.Boom", {}, id=11),
        ],
    )
    assert reply == [
        {"jsonrpc": "2.0", "result": {"a": 1}, "id": "1"},
        error(-32600, 'invalid request: jsonrpc must be "2.0"'),
        error(-32601, "method not found: No.Such", id="5"),
        error(-32001, "no job abc", id=9, data={"id": "abc"}),
        error(-32600, "invalid request: must be an object"),
        error(
            -32602,
            "invalid params: image: is required",
            id=10,
            data={"errors": [{"field": "image", "message": "is required"}]},
        ),
        error(-32603, "internal error", id=11),
    ]
    assert ("echo", {"note": True}) in rec.seen


async def test_batch_of_invalid_entries(rpc: Dispatcher) -> None:
    assert await send(rpc, [1, 2, 3]) == [error(-32600, "invalid request: must be an object")] * 3


async def test_nested_batch_is_an_invalid_entry(rpc: Dispatcher) -> None:
    assert await send(rpc, [[req("Test.Echo")]]) == [error(-32600, "invalid request: must be an object")]


async def test_all_notification_batch(rpc: Dispatcher, rec: Recorder) -> None:
    out = await rpc.handle(json.dumps([req("Test.Echo", {"n": n}, id=...) for n in range(3)]).encode())
    assert out is None
    assert sorted(params["n"] for _, params in rec.seen) == [0, 1, 2]


async def test_batch_runs_concurrently_and_answers_in_request_order(rpc: Dispatcher, rec: Recorder) -> None:
    delays = [0.3, 0.1, 0.2]
    start = trio.current_time()
    reply = await send(rpc, [req("Test.Sleep", {"seconds": d}, id=i) for i, d in enumerate(delays)])
    elapsed = trio.current_time() - start
    assert [r["id"] for r in reply] == [0, 1, 2]
    assert [r["result"] for r in reply] == delays
    assert [params["seconds"] for _, params in rec.seen] == [0.1, 0.2, 0.3]  # finished out of order
    assert elapsed < sum(delays)


async def test_batch_with_one_request_is_still_an_array(rpc: Dispatcher) -> None:
    assert await send(rpc, [req("Test.Echo", {})]) == [{"jsonrpc": "2.0", "result": {}, "id": 1}]


async def test_batch_output_is_compact(rpc: Dispatcher) -> None:
    out = await rpc.handle(json.dumps([req("Test.Echo", {"a": [1, 2]}, id=1), req("Test.Echo", {}, id=2)]).encode())
    assert out == b'[{"jsonrpc":"2.0","result":{"a":[1,2]},"id":1},{"jsonrpc":"2.0","result":{},"id":2}]'


async def test_unserialisable_result_in_batch_spares_the_others(rpc: Dispatcher) -> None:
    reply = await send(rpc, [req("Test.Unserialisable", {}, id=1), req("Test.Echo", {}, id=2)])
    assert reply == [error(-32603, "internal error", id=1), {"jsonrpc": "2.0", "result": {}, "id": 2}]


# --- metrics hook, registry ----------------------------------------------------------------------------


async def test_on_call_reports_name_duration_and_code(rpc: Dispatcher, rec: Recorder) -> None:
    await send(rpc, req("Test.Echo", {}))
    await send(rpc, req("Test.NotFound", {}))
    await send(rpc, req("ContainerService.Create", {}))
    await send(rpc, req("Test.Boom", {}, id=...))
    assert [(name, code) for name, _, code in rec.metrics] == [
        ("Test.Echo", None),
        ("Test.NotFound", -32001),
        ("ContainerService.Create", -32602),
        ("Test.Boom", -32603),
    ]
    assert all(seconds >= 0 for _, seconds, _ in rec.metrics)


async def test_on_call_duration_covers_the_handler(rpc: Dispatcher, rec: Recorder) -> None:
    await send(rpc, req("Test.Sleep", {"seconds": 0.05}))
    assert rec.metrics[0][1] >= 0.04


async def test_failing_on_call_hook_does_not_break_the_reply(rec: Recorder) -> None:
    def broken(name: str, seconds: float, code: int | None) -> None:
        raise ValueError("metrics down")

    rpc = Dispatcher([Method(name="Test.Echo", handler=rec.echo, params=ANY_OBJECT)], on_call=broken)
    assert await send(rpc, req("Test.Echo", {})) == {"jsonrpc": "2.0", "result": {}, "id": 1}


async def test_without_on_call(rec: Recorder) -> None:
    rpc = Dispatcher([Method(name="Test.Echo", handler=rec.echo, params=ANY_OBJECT)])
    assert await send(rpc, req("Test.Echo", {})) == {"jsonrpc": "2.0", "result": {}, "id": 1}


def test_methods_mapping_is_read_only(rpc: Dispatcher) -> None:
    assert rpc.methods["ContainerService.Create"].summary == "Create a job"
    assert rpc.methods["Test.Echo"].result == {}
    assert len(rpc.methods) == 9
    with pytest.raises(TypeError):
        rpc.methods["X"] = rpc.methods["Test.Echo"]  # type: ignore[index]


def test_duplicate_method_names_are_refused(rec: Recorder) -> None:
    method = Method(name="Test.Echo", handler=rec.echo, params=ANY_OBJECT)
    with pytest.raises(ValueError, match=r"Test\.Echo"):
        Dispatcher([method, method])
