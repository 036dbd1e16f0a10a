"""JSON requests to a peer over one kept stream, not a new stream each (docs/py-libp2p.md, "A request opens a
stream, and both ends negotiate it").

py-libp2p's request/response (``Host.request``) opens a yamux stream per request, negotiates its protocol with
multistream-select (a round trip of frames each way), writes the request, reads the answer and closes the stream,
and the other end runs a handler task for it. A catch-up round is one request when idle (an empty page), so that
setup was most of a round's cost. A protocol in KEPT is asked instead on a stream per peer kept open between
requests: a length-prefixed JSON request, then its answer, again and again, one at a time.

Bounds: a request read by the server is at most MAX_REQUEST_BYTES and an answer at most the host's answer cap; a
peer has one kept stream served at a time (a new one resets the old: the peer reconnected or restarted), so one
request in flight; a stream serves SERVED_PER_STREAM requests, then the server closes it and the asker opens
another. A request that fails or times out leaves its stream in an unknown state: the asker resets and drops it;
a kept stream that fails at once (closed while idle, at the cap, or on a connection since replaced) is asked again
on a new stream. A peer that does not speak the kept protocol (a node of an older version) is asked with the
one-shot protocol instead, and the kept one is tried again only after OLD_FOR.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.io.msgio import VarIntLengthMsgReadWriter
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError, ProtocolNotSupportedError
from libp2p.request_response import (
    RequestContext,
    RequestResponseError,
    RequestTimeoutError,
    RequestTransportError,
)

__all__ = ["KEPT", "MAX_REQUEST_BYTES", "OLD_FOR", "SERVED_PER_STREAM", "KeptRequests", "KeptStreams", "reset"]

log = logging.getLogger("cmnode.p2p")

KEPT: Mapping[str, str] = {"/cmnode/sync/1": "/cmnode/sync/2"}
"""One-shot protocols asked on a kept stream instead, and the kept protocol's name (same requests, same answers)."""
MAX_REQUEST_BYTES = 64 * 1024
"""A sync request is a few hundred bytes."""
SERVED_PER_STREAM = 1000
"""Requests a server answers on one stream before it closes it (the asker opens another)."""
OLD_FOR = 600.0
"""Seconds a peer that refused the kept protocol is asked the one-shot way before the kept one is tried again."""

Handler = Callable[[Any, Any], Awaitable[dict[str, Any]]]
Fallback = Callable[[ID, str, dict[str, Any]], Awaitable[Any]]
T = TypeVar("T")


class KeptStreams:
    """One stream per peer on ``protocol``, kept between exchanges, which take turns on it (``Pinger``'s pings,
    ``KeptRequests``' requests). An exchange that fails or is cut off leaves its stream in an unknown state, so
    that stream is reset and dropped; a kept stream that fails is tried again once on a new stream."""

    def __init__(self, host: IHost, protocol: str) -> None:
        self.host = host
        self.protocol = TProtocol(protocol)
        self.streams: dict[ID, INetStream] = {}
        self._turns: dict[ID, trio.Lock] = {}

    async def exchange(self, peer_id: ID, exchange: Callable[[INetStream], Awaitable[T]]) -> T:
        """``exchange`` on the peer's kept stream, or a new one; raises what ``exchange`` or ``new_stream`` does."""
        self._forget_gone()
        async with self._turns.setdefault(peer_id, trio.Lock()):
            stream = self.streams.pop(peer_id, None)
            if stream is not None:
                try:
                    result = await exchange(stream)
                except Exception:
                    await reset(stream)
                except BaseException:
                    await reset(stream)
                    raise
                else:
                    self.streams[peer_id] = stream
                    return result
            stream = await self.host.new_stream(peer_id, [self.protocol])
            try:
                result = await exchange(stream)
            except BaseException:
                await reset(stream)
                raise
            self.streams[peer_id] = stream
            return result

    def _forget_gone(self) -> None:
        """Drop the streams of peers no longer connected (their connection took the stream with it)."""
        if len(self._turns) <= 2 * len(self.streams) + 16:
            return
        connected = set(self.host.get_connected_peers())
        for peer_id in [p for p in self._turns if p not in connected and not self._turns[p].locked()]:
            self._turns.pop(peer_id, None)
            self.streams.pop(peer_id, None)


class KeptRequests:
    """The asking end (``request``) and the serving end (``handler``) of the kept streams of one host."""

    def __init__(self, host: IHost, *, fallback: Fallback, timeout: float, max_answer: int) -> None:
        """``fallback`` asks one-shot (``Host``'s request/response); a request, both attempts, takes at most
        ``timeout`` s; an answer is at most ``max_answer`` bytes."""
        self._host = host
        self._fallback = fallback
        self._timeout = timeout
        self._max_answer = max_answer
        self.kept = {protocol: KeptStreams(host, twin) for protocol, twin in KEPT.items()}
        self._old: dict[ID, float] = {}
        """Peers that refused the kept protocol, and when."""
        self._served: dict[ID, INetStream] = {}
        """Each peer's kept stream we serve (one at a time)."""

    async def request(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
        """``body`` to ``peer_id`` on ``protocol``'s kept stream (the one-shot way if the peer does not speak it);
        raises ``RequestResponseError`` as ``Host.request`` does."""
        kept = self.kept.get(protocol)
        now = trio.current_time()
        if kept is None or now - self._old.get(peer_id, -OLD_FOR) < OLD_FOR:
            return await self._fallback(peer_id, protocol, body)
        self._forget_old(now)
        payload = json.dumps(body).encode()
        try:
            with trio.fail_after(self._timeout):
                return await kept.exchange(peer_id, lambda stream: self._round_trip(stream, payload))
        except trio.TooSlowError as exc:
            raise RequestTimeoutError(f"kept request timed out after {self._timeout} s") from exc
        except StreamFailure as exc:
            cause = exc.__cause__
            if not isinstance(cause, ProtocolNotSupportedError) and not (
                isinstance(cause, MultiselectClientError) and "protocol not supported" in str(cause)
            ):
                raise RequestTransportError(str(exc)) from exc
        except RequestResponseError:
            raise
        except Exception as exc:  # as the one-shot request does: any other failure is the transport's
            raise RequestTransportError(f"kept request failed: {exc!r}") from exc
        self._old[peer_id] = now
        log.debug("peer %s does not speak %s: asked with %s", peer_id, kept.protocol, protocol)
        return await self._fallback(peer_id, protocol, body)

    async def _round_trip(self, stream: INetStream, payload: bytes) -> Any:
        channel = VarIntLengthMsgReadWriter(stream, max_msg_size=self._max_answer)
        try:
            await channel.write_msg(payload)
            answer = await channel.read_msg()
        except Exception as exc:
            raise RequestTransportError(f"kept stream failed: {exc!r}") from exc
        try:
            return json.loads(answer)
        except ValueError as exc:
            raise RequestTransportError("kept stream answer is not JSON") from exc

    def _forget_old(self, now: float) -> None:
        for peer_id in [p for p, t in self._old.items() if now - t >= OLD_FOR]:
            del self._old[peer_id]

    def handler(self, protocol: str, serve: Handler) -> Callable[[INetStream], Awaitable[None]]:
        """The stream handler of ``protocol``'s kept twin: ``serve(request, context)`` for each request, in turn."""
        return lambda stream: self._serve(stream, protocol, serve)

    async def _serve(self, stream: INetStream, protocol: str, serve: Handler) -> None:
        peer_id = stream.muxed_conn.peer_id
        context = RequestContext(peer_id=peer_id, protocol_id=TProtocol(protocol))
        previous = self._served.get(peer_id)
        self._served[peer_id] = stream
        if previous is not None:
            await reset(previous)
        requests = VarIntLengthMsgReadWriter(stream, max_msg_size=MAX_REQUEST_BYTES)
        answers = VarIntLengthMsgReadWriter(stream, max_msg_size=self._max_answer)
        closed = False
        try:
            for _ in range(SERVED_PER_STREAM):
                try:
                    payload = await requests.read_msg()  # idle between rounds: no timeout
                except Exception:
                    return  # closed, reset or oversized: the finally resets it
                with trio.fail_after(self._timeout):
                    answer = await serve(json.loads(payload), context)
                    await answers.write_msg(json.dumps(answer).encode())
            with trio.move_on_after(1):
                await stream.close()
                closed = True
        except Exception as exc:
            log.debug("kept %s stream from %s dropped: %r", protocol, peer_id, exc)
        finally:
            if self._served.get(peer_id) is stream:
                del self._served[peer_id]
            if not closed:
                await reset(stream)


async def reset(stream: INetStream) -> None:
    """Drop a stream in an unknown state (bounded, whatever cancels the caller)."""
    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
        await stream.reset()
