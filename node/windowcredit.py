"""Yamux window credit given back in batches, as go-yamux does, instead of after every read.

py-libp2p 0.8.1's ``YamuxStream`` sends the peer a WINDOW_UPDATE frame after nearly every read, however small:
its "partial slack" and "release on read" branches fire whenever any byte was read. A pubsub stream is read a
varint byte at a time and then the body, so every pubsub RPC received (a gossip message, a duplicate, a control
message) and every ping made the receiver write one to three more frames, each noise-encrypted, written with a
syscall, and read, decrypted and parsed by the peer. On an idle 10-node cluster that was about a third of a
node's CPU (docs/py-libp2p.md, "Every read sends a window update").

``install`` replaces ``YamuxStream._auto_tune_and_send_window_update`` with go-yamux's rule: credit goes back
once half the receive window has been consumed (the sender can always fill the other half meanwhile, so no
stream waits for credit that never comes), together with the library's own window auto-tuning (the window
doubles, up to its maximum, when updates follow each other within a few round trips), so a bulk transfer such
as a catch-up page still grows its window. It also reads the library's ``PY_YAMUX_*`` tuning variables once,
not with an ``os.getenv`` on every frame.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux import yamux

__all__ = ["batched_window_update", "install"]


async def batched_window_update(self: Any, *, bytes_read: int = 0) -> None:
    """Give the peer back what was read once it is half the target window (``bytes_read`` is counted by the
    window itself: what was read is what the window plus the buffer fall short of the target)."""
    increment = 0
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        consumed = self.target_recv_window - (self.recv_window + buffered)
        if consumed > 0 and consumed >= self.target_recv_window // 2:
            self.recv_window += consumed
            self._pending_recv_release = 0
            increment = consumed + self._apply_autotune_epoch(buffered)
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


def install() -> None:
    """Replace the library's per-read window update and its per-frame environment reads (idempotent)."""
    yamux.YamuxStream._auto_tune_and_send_window_update = batched_window_update  # type: ignore[method-assign]
    if not isinstance(yamux._yamux_data_read_timeout, _Fixed):
        yamux._yamux_data_read_timeout = _Fixed(yamux._yamux_data_read_timeout())
        yamux._perf_yamux_debug_enabled = _Fixed(yamux._perf_yamux_debug_enabled())


class _Fixed:
    """A tuning variable read once: the library reads it with ``os.getenv`` on every frame."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        return self.value
