"""What a node's start costs, and the one thing done about it: its imports run with the cyclic garbage collector off.

Measured (``benchmarks/startup.py``; ``python -X importtime``; py-spy on a restart after kill -9): of the ~1.5 s of
CPU from exec to ready on this 2-core machine, ~1.3 s are imports (py-libp2p ~0.65 s: its package imports every
transport, QUIC and its TLS stack, WebSocket, AutoTLS with httpx, whether used or not; quart and hypercorn
~0.25 s; the Docker SDK, cyclopts and our own modules the rest). Everything after them (key, store open after a
kill -9, node registry, host listening, Docker recovery and reconcile, RPC listening) takes ~60 ms, and the
first catch-up of a hundred jobs ~0.1 s after the first connection, which comes within milliseconds of
listening. A node restarted while its peers are busy (a healed partition) gets a fraction of a core: every 100 ms
of start-up CPU is then several hundred milliseconds of wall time before it agrees.

Importing allocates hundreds of thousands of objects that live as long as the process, and the collector walks
them again and again while they are made. With it off during the imports and those objects frozen afterwards
(``gc.freeze``: moved to a generation no collection scans), imports are cheaper and so is every later full
collection. Nothing else changes: the collector is on again before anything runs. Measured with
``benchmarks/startup.py`` (a restart after kill -9, 100 jobs missed, medians of 4): CPU from exec to caught up
1.62 s -> 1.31 s, exec to ready 1.46 s -> 1.12 s (1.30x).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["imports_without_gc"]


@contextmanager
def imports_without_gc() -> Iterator[None]:
    """Run the block (imports, nothing else) with the collector off; freeze what it made and turn it on again.
    Leaves the collector off if it was off before."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
