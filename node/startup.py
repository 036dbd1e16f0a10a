"""What a node's start costs, and what is done about it: its imports run with the cyclic garbage collector off,
and the parts of its libraries it never uses are left out.

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

Left out (``leave_out``; docs/py-libp2p.md, "Importing the library costs ~0.65 s of CPU"): py-libp2p
imports its QUIC transport (aioquic and its TLS stack) from the modules every host needs (``libp2p.abc`` through
``custom_types``), and its host module imports AutoTLS (its ACME client brings httpx), circuit relay (which brings
the Kademlia DHT), UPnP and WebSocket, whatever the host is made with; zeroconf comes with the mDNS module even
when mDNS is off. Python cannot import a submodule without its package's ``__init__``, and none of these imports
is optional in py-libp2p 0.8.1. A node makes its host with TCP, Noise and Yamux only, so those modules are replaced,
in the node process only, by stand-ins that hold names and no code: a class or constant imported from them is a
placeholder class, enough for the annotations, ``isinstance`` checks, ``except`` clauses and subclasses of the
modules that name them; calling one (so using the feature) raises ``Unavailable``, and logs it, so a use is never
silent. One more is refused outright (``REFUSED``): cffi's pure-Python part, which only pycryptodome (py-libp2p's
RSA and private-network ciphers) imports, and which makes it parse C declarations with pycparser at every start;
without it pycryptodome loads the same C code through ctypes, its documented other backend (imports 0.06-0.08 ->
0.017 s). ``tests/mesh/test_startup.py`` checks that a node loads none of them, that the host is the same, and
that a placeholder refuses to run.

Measured (``benchmarks/startup.py --runs 5 --baseline HEAD``, the commit before this, in one script; medians; other
work ran on the machine): CPU from exec to caught up 1.27 s -> 1.05 s (1.21x), exec to ready 1.17 s -> 0.95 s,
exec to caught up 1.35 s -> 1.09 s; an earlier run under heavier load, 1.25 s -> 0.99 s of CPU. A node started
alone reaches its ready line with ~0.95 s of CPU (was ~1.15 s); of what remains, quart with flask and hypercorn is
the largest part (~0.2 s), then py-libp2p's core, protobuf, dnspython (py-libp2p's bootstrap module makes a DNS
resolver at import) and the Docker SDK.

Round five (measured with a fresh data dir, exec to the ready line, medians of 5; and ``benchmarks/startup.py``):
- Bytecode: where PYTHONDONTWRITEBYTECODE is set (a developer's or an agent's shell, inherited by the nodes a test
  or benchmark starts), a node run from a source tree compiles its ~80 modules at every start: 0.56 s of CPU to
  ready without bytecode, 0.48 s with it. An install (pip) writes bytecode once; the benchmarks now compile both
  trees before they start nodes (``benchmarks/startup.py``, ``compiled``), so that a baseline from ``git archive``
  does not pay it alone. The figures above were taken without that step (whether their shell set the variable
  is not recorded).
- Tried and not kept: importing the HTTP server (quart, hypercorn; ~0.15 s) in a worker thread while the mesh
  starts, so that the first catch-up overlaps it. The first peer came 0.06 s sooner, but both threads then want
  the GIL: exec -> ready 0.54 -> 0.62 s, exec -> every job listed 0.63 -> 0.68 s, CPU 0.62 -> 0.67 s
  (``benchmarks/startup.py --runs 5 --baseline``). Leaving out more of quart's imports (``hypercorn.asyncio``,
  ``quart.testing``, ``jinja2``) saved nothing measurable (0.405 s of import CPU before, 0.398-0.434 s after).
"""

from __future__ import annotations

import gc
import importlib.abc
import importlib.machinery
import logging
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["LEFT_OUT", "REFUSED", "WITHOUT_MDNS", "Unavailable", "imports_without_gc", "leave_out", "left_out"]

log = logging.getLogger("cmnode.node")

LEFT_OUT: Mapping[str, str] = {
    "aioquic": "QUIC (py-libp2p's QUIC transport; a node dials and listens on TCP only)",
    "libp2p.transport.websocket": "py-libp2p's WebSocket transport",
    "libp2p.relay": "py-libp2p's circuit relay (and the Kademlia DHT it imports)",
    "libp2p.security.tls.autotls": "py-libp2p's AutoTLS (its ACME client imports httpx and requests)",
    "libp2p.discovery.upnp": "py-libp2p's UPnP port mapping",
}
"""Modules (with their submodules) a node never runs, and what they are; stood in for in every node process."""
WITHOUT_MDNS: Mapping[str, str] = {"zeroconf": "mDNS (zeroconf), off in this node (--no-mdns)"}
"""Left out too when the node runs without mDNS."""
REFUSED: Mapping[str, str] = {
    "cffi": "cffi's compiler (pycryptodome then loads its C code with ctypes, its other backend: it would parse "
    "C declarations with pycparser at every start; compiled cffi modules such as PyNaCl's do not need it)",
}
"""Modules whose import fails (ImportError) in a node, so that a library takes the fallback it has for them."""


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


class Unavailable(RuntimeError):
    """A left-out module's class or function was called: the feature it belongs to is not loaded in a node."""


class _Placeholder(type):
    """The type of placeholders: any attribute of one is another (a module-level ``Cls.method`` reference, or a
    patch of one, as py-libp2p's aioquic fixes do) and calling one raises ``Unavailable``."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(cls.__module__, f"{cls.__qualname__}.{name}", cls._why)  # type: ignore[attr-defined]
        setattr(cls, name, value)
        return value

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        what = f"{cls.__module__}.{cls.__qualname__}"
        log.error("%s was called, but %s is left out of this node (node/startup.py)", what, cls._why)  # type: ignore[attr-defined]
        raise Unavailable(f"{what}: {cls._why} is left out of a cmnode node (node/startup.py)")

    def __getitem__(cls, item: Any) -> Any:  # ``Placeholder[int]`` in an annotation evaluated at import
        return cls


def _placeholder(module: str, qualname: str, why: str) -> type:
    # An exception class, so that it also serves in an ``except`` clause (it never matches: nothing raises it).
    return _Placeholder(qualname.rsplit(".", 1)[-1], (Exception,), {"__module__": module, "__qualname__": qualname,
                                                                      "_why": why})  # fmt: skip


class _LeftOut(types.ModuleType):
    """A left-out module: every name imported from it is a placeholder (made once, then kept)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name, f"Left out of a cmnode node: {why} (node/startup.py).")
        self.__path__: list[str] = []  # a package, so that its submodules can be imported (left out too)
        self._why = why

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(self.__name__, name, self._why)
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """First on ``sys.meta_path``: a left-out module (or a submodule of one) is a ``_LeftOut``."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}
        self.refused: set[str] = set()

    def why(self, fullname: str) -> str | None:
        for name, why in self.modules.items():
            if fullname == name or fullname.startswith(name + "."):
                return why
        return None

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:  # fmt: skip
        why = self.why(fullname)
        if why is None:
            return None
        if fullname.split(".")[0] in self.refused:
            raise ModuleNotFoundError(f"{fullname}: {why}: left out of a cmnode node (node/startup.py)", name=fullname)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _LeftOut(spec.name, self.why(spec.name) or "")

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def leave_out(modules: Mapping[str, str], refused: Mapping[str, str] | None = None) -> None:
    """From now on, in this process, ``modules`` (and their submodules) are stand-ins (see the docstring), and
    importing ``refused`` ones (top-level names) raises ModuleNotFoundError. Call it before anything imports them,
    i.e. before py-libp2p; it stays for the process's life, so a later import of one of them (py-libp2p imports
    some inside functions) gets the same answer. Idempotent."""
    refused = refused or {}
    loaded = [name for name in [*modules, *refused] if name in sys.modules and not left_out(name)]
    if loaded:
        raise RuntimeError(f"cannot leave out modules already imported: {', '.join(loaded)}")
    finder = next((f for f in sys.meta_path if isinstance(f, _Finder)), None)
    if finder is None:
        finder = _Finder()
        sys.meta_path.insert(0, finder)
    finder.modules.update({**modules, **refused})
    finder.refused.update(refused)


def left_out(name: str) -> bool:
    """Whether ``name`` is a stand-in in this process (tests ask)."""
    return isinstance(sys.modules.get(name), _LeftOut)
