"""The JSON-RPC 2.0 engine: one HTTP body in, one HTTP body out, no I/O.

Keeping the transport out lets the server stay a thin adapter and lets tests drive every protocol rule
without a socket. Params follow Go's net/rpc convention, which the original service used and whose
clients must keep working: each method takes ONE params object, sent either by name (``"params": {...}``)
or as the only element of a positional array (``"params": [{...}]``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import trio

from node import schema
from node.errors import NodeError, ValidationError

log = logging.getLogger("cmnode.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MAX_BATCH = 1000
"""Most entries one batch may hold; a bound on the work and memory a single HTTP request can cause."""

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
OnCall = Callable[[str, float, int | None], None]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads/dumps with keyword arguments build a new decoder/encoder on every call. NaN and
# Infinity are not JSON; refusing them keeps us from accepting or emitting what other peers reject.
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_ABSENT: Any = object()


@dataclass(frozen=True, kw_only=True)
class Method:
    """One callable RPC method; ``params`` both validates requests and documents them in OpenRPC."""

    name: str
    handler: Handler
    params: Mapping[str, Any]
    result: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


_Call = tuple[Method, Any, Any, bool]
"""A request that passed the structural checks: (method, raw params, id, is_notification)."""


class Dispatcher:
    """Routes JSON-RPC request bodies to methods and turns every outcome into a protocol response.

    ``on_call(method, seconds, error_code_or_None)`` runs after each call to a known method (unknown
    names are not reported: they would let any client create unbounded metric labels).
    """

    def __init__(self, methods: Iterable[Method], *, on_call: OnCall | None = None) -> None:
        table: dict[str, Method] = {}
        for method in methods:
            if method.name in table:
                raise ValueError(f"duplicate RPC method {method.name!r}")
            table[method.name] = method
        self._methods = table
        self._view: Mapping[str, Method] = MappingProxyType(table)
        self._on_call = on_call

    @property
    def methods(self) -> Mapping[str, Method]:
        """The registered methods by name (read-only)."""
        return self._view

    async def handle(self, body: bytes) -> bytes | None:
        """Answer one HTTP body; ``None`` means send nothing (the body held only notifications).

        Handler exceptions never escape (they become error responses); cancellation does.
        """
        try:
            request = _decode(body.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(PARSE_ERROR, "parse error: body is not valid UTF-8", None).encode()
        except RecursionError:
            return _error(PARSE_ERROR, "parse error: nested too deeply", None).encode()
        except ValueError as exc:
            return _error(PARSE_ERROR, f"parse error: {exc}", None).encode()
        if type(request) is dict:  # the fast path: one call, no nursery, no list
            call = self._prepare(request)
            out = call if call is None or isinstance(call, str) else await self._invoke(*call)
            return None if out is None else out.encode()
        if type(request) is list:
            return await self._batch(request)
        return _error(INVALID_REQUEST, "invalid request: must be an object or an array", None).encode()

    async def _batch(self, requests: list[Any]) -> bytes | None:
        """Run a batch concurrently, answering in request order (the spec allows any; clients like this)."""
        count = len(requests)
        if count == 0:
            return _error(INVALID_REQUEST, "invalid request: empty batch", None).encode()
        if count > MAX_BATCH:
            message = f"invalid request: batch too large ({count} entries, at most {MAX_BATCH})"
            return _error(INVALID_REQUEST, message, None).encode()
        answers: list[str | None] = [None] * count

        async def run(index: int, call: _Call) -> None:
            answers[index] = await self._invoke(*call)

        async with trio.open_nursery() as nursery:
            for index, request in enumerate(requests):
                call = self._prepare(request)
                if call is None or isinstance(call, str):
                    answers[index] = call
                else:
                    nursery.start_soon(run, index, call)
        parts = [answer for answer in answers if answer is not None]
        return ("[" + ",".join(parts) + "]").encode() if parts else None

    def _prepare(self, request: Any) -> _Call | str | None:
        """Check a request's structure: a call to run, or already its final answer (``str``/``None``)."""
        if type(request) is not dict:
            return _error(INVALID_REQUEST, "invalid request: must be an object", None)
        notify = "id" not in request
        rid = request.get("id")
        if not notify and not (rid is None or isinstance(rid, str) or _is_finite_number(rid)):
            return _error(INVALID_REQUEST, "invalid request: id must be a string, a number or null", None)
        if isinstance(rid, str) and schema.validate({"type": "string"}, rid):  # a lone surrogate
            return _error(INVALID_REQUEST, "invalid request: id must be valid Unicode", None)
        if request.get("jsonrpc") != "2.0":
            return _error(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"', rid)
        name = request.get("method")
        if type(name) is not str:
            return _error(INVALID_REQUEST, "invalid request: method must be a string", rid)
        params = request.get("params", _ABSENT)
        if params is not _ABSENT and type(params) is not dict and type(params) is not list:
            return _error(INVALID_REQUEST, "invalid request: params must be an array or an object", rid)
        method = self._methods.get(name)
        if method is None:
            return None if notify else _error(METHOD_NOT_FOUND, f"method not found: {name}", rid)
        return method, params, rid, notify

    async def _invoke(self, method: Method, params: Any, rid: Any, notify: bool) -> str | None:
        """Validate and run one call, encoding its response (``None`` for a notification)."""
        start = time.perf_counter()
        code: int | None = None
        out: str | None = None
        try:
            obj = _params_object(params)
            errors = schema.validate(method.params, obj)
            if errors:
                raise ValidationError(errors)
            result = await method.handler(obj)
            if not notify:  # encoded here, so an unserialisable result counts as this call's failure
                out = '{"jsonrpc":"2.0","result":' + _encode(result) + ',"id":' + _encode(rid) + "}"
        except Exception as exc:
            error = _node_error(exc)
            if error is None:
                log.exception("RPC method %s failed", method.name)
                code = INTERNAL_ERROR
                if not notify:
                    out = _error(INTERNAL_ERROR, "internal error", rid)
            else:
                code = error.code
                if notify:
                    log.debug("notification %s failed: %s", method.name, error.message)
                else:
                    out = _error(error.code, error.message, rid, error.data)
        if self._on_call is not None:
            try:
                self._on_call(method.name, time.perf_counter() - start, code)
            except Exception:
                log.exception("on_call hook failed")
        return out


def _is_finite_number(value: Any) -> bool:
    """An id we can echo: ``1e400`` parses as infinity, which JSON cannot carry back (an answer the client
    never gets would make it retry, and run a Create twice)."""
    return type(value) in (int, float) and schema.out_of_range(value) is None


def _params_object(params: Any) -> dict[str, Any]:
    """The one params object of the net/rpc convention, from whichever form the client sent."""
    if params is _ABSENT:
        return {}
    if type(params) is list:
        if len(params) > 1:
            message = f"must hold one params object, got {len(params)} positional values"
            raise ValidationError([{"field": schema.ROOT, "message": message}])
        params = params[0] if params else {}
    if type(params) is not dict:
        raise ValidationError([{"field": schema.ROOT, "message": f"must be an object, got {type(params).__name__}"}])
    return params


def _node_error(exc: Exception) -> NodeError | None:
    """The NodeError to report, also when a handler's own nursery wrapped a lone one in a group."""
    inner: BaseException = exc
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner if isinstance(inner, NodeError) else None


def _error(code: int, message: str, rid: Any, data: Any = None) -> str:
    """An encoded error response; ``data`` is omitted when None (and dropped if it cannot be encoded)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    try:
        return _encode({"jsonrpc": "2.0", "error": error, "id": rid})
    except (TypeError, ValueError):
        log.exception("cannot encode the data of error %d", code)
        return _encode({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": rid})
