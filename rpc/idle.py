"""Why a stopping node waited on idle kept-alive HTTP connections, and the connection class that fixes it.

hypercorn (0.18) gives each connection an idle task: while no request is in flight, it closes the connection
after ``keep_alive_timeout``, or at once when the server begins a graceful stop. Two flaws in its trio server
(``hypercorn/trio/tcp_server.py``) made a graceful stop wait its full ``graceful_timeout`` (measured: 3.08 s with
one idle client, 0.06 s without):

* The connection's bookkeeping after a response (restart the idle task; or, when the server is stopping, close
  the connection) runs inside the app's last ``send`` (``TCPServer.protocol_send``). quart-trio sends from a task
  whose nursery it cancels as soon as the request is over, which hypercorn signals during that very send. So the
  idle task's ``nursery.start`` ran in a cancelled caller, and trio's ``TaskStatus.started`` then leaves the new
  task where it ends at once: after its first response, a kept-alive connection had no idle task, was never
  closed for being idle (the 75 s bound did not hold), and a stop waited for the client to hang up. A request in
  flight at the stop was answered, but its connection's close was cancelled at its first checkpoint.
* Once the client hangs up, nothing stops the idle task, and the connection's task group waits for it: with an
  idle task alive, a closed connection would hold its task and socket until ``keep_alive_timeout``.

``KeepAliveTCPServer`` shields ``protocol_send`` (hypercorn already shields the socket write itself; the rest,
restarting a task or closing a socket, does not block) and stops the idle task when the read side ends.
``install`` makes hypercorn's trio worker use it.
"""

from __future__ import annotations

import hypercorn.trio.run as trio_run
import trio
from hypercorn.events import Event
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["KeepAliveTCPServer", "install"]


class KeepAliveTCPServer(TCPServer):
    """hypercorn's trio connection, with its idle task kept after each response and stopped at the client's
    hang-up."""

    async def protocol_send(self, event: Event) -> None:
        with trio.CancelScope(shield=True):  # not cut short by the cancellation of the app task that sends
            await super().protocol_send(event)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            with trio.CancelScope(shield=True):
                await self.idle_task.stop()  # the client is gone: nothing is left to time out


def install() -> None:
    """Make hypercorn's trio worker build its connections as ``KeepAliveTCPServer`` (idempotent).

    Raises:
        RuntimeError: this hypercorn does not build them where 0.18 does (the fix would not apply).
    """
    if getattr(trio_run, "TCPServer", None) not in (TCPServer, KeepAliveTCPServer):
        raise RuntimeError("hypercorn.trio.run.TCPServer is not hypercorn's TCPServer: check rpc/idle.py")
    trio_run.TCPServer = KeepAliveTCPServer  # type: ignore[attr-defined,misc]
