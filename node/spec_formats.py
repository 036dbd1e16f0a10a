"""The text formats a spec's fields are written in, parsed: sizes (``'256m'``), volumes
(``SOURCE:TARGET[:ro]``) and ports (``[IP:]HOST:CONTAINER[/udp]``). Each parser is also registered as a schema
format (``node/schema.py``), so the field table that ``node/spec.py`` publishes and the node's own reading of a
value cannot disagree (``tests/node/test_spec_schema.py``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from . import schema

__all__ = ["MIN_MEMORY", "PORT_PROTOCOLS", "PortMapping", "Volume", "memory_bytes", "parse_port", "parse_volume"]

_MEMORY = re.compile(r"^([0-9]{1,15})([bkmg]?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 6 * 1024 * 1024
"""Docker refuses a smaller memory limit at run time; refusing it here fails the Create instead."""
PORT_PROTOCOLS = ("tcp", "udp")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}\Z")


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    """The schema format check of a parser: whether it takes the value."""

    def check(value: str) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return check


def memory_bytes(value: int | str) -> int:
    """A memory size in bytes from an integer or a size such as ``'256m'`` (binary units)."""
    if isinstance(value, int):
        return value
    m = _MEMORY.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size")
    return int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]


def _is_size(value: str) -> bool:
    try:
        return MIN_MEMORY <= memory_bytes(value) <= schema.INT64_MAX
    except ValueError:
        return False


schema.FORMATS["byte-size"] = ("a size of at least 6 MiB such as '256m' (units b, k, m, g)", _is_size)


@dataclass(frozen=True)
class Volume:
    """One entry of ``JobSpec.volumes``: a host path (``source`` starts with ``/``) or a named volume."""

    source: str
    target: str
    read_only: bool = False

    @property
    def host_path(self) -> bool:
        return self.source.startswith("/")


def parse_volume(text: str) -> Volume:
    """``SOURCE:TARGET[:ro|:rw]`` as a ``Volume``. Whether a host path may be mounted is the node's policy
    (``node/policy.py``); what is refused here is refused by every node alike.

    Raises:
        ValueError: not of that form, a relative or ``..``-holding path, or a NUL.
    """
    parts = text.split(":")
    read_only = False
    if len(parts) == 3:
        mode = parts.pop()
        if mode not in ("ro", "rw"):
            raise ValueError(f"mode {mode!r} is not ro or rw")
        read_only = mode == "ro"
    if len(parts) != 2 or "\x00" in text:
        raise ValueError("not SOURCE:TARGET[:ro|:rw]")
    source, target = parts
    if not source.startswith("/") and _VOLUME_NAME.match(source) is None:
        raise ValueError(f"{source!r} is neither an absolute path nor a volume name")
    if not target.startswith("/") or target.strip("/") == "":
        raise ValueError(f"{target!r} is not an absolute path below /")
    for path in (source, target):
        if ".." in path.split("/"):
            raise ValueError(f"{path!r} holds '..'")
    return Volume(source, target, read_only)


schema.FORMATS["volume"] = (
    "'SOURCE:TARGET' or 'SOURCE:TARGET:ro', SOURCE an absolute host path or a volume name, TARGET an absolute "
    "path in the container, neither holding '..'",
    _parses(parse_volume),
)


@dataclass(frozen=True)
class PortMapping:
    """One entry of ``JobSpec.ports``: ``host_port`` on the node (on ``host_ip`` only, when given) forwarded to
    ``container_port``. Placement keeps two jobs wanting one ``(host_port, protocol)`` off the same node."""

    host_ip: str | None
    host_port: int
    container_port: int
    protocol: str = "tcp"


_PORT = re.compile(
    r"(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:.]+\]):)?(?P<host>[0-9]{1,5}):(?P<container>[0-9]{1,5})(?:/(?P<proto>[a-z]+))?\Z"
)


def parse_port(text: str) -> PortMapping:
    """``[IP:]HOST:CONTAINER[/tcp|/udp]`` as a ``PortMapping``; an IPv6 address is written in brackets
    (``[::1]:8080:80``) and comes back without them, as Docker wants it.

    Raises:
        ValueError: not of that form, a port outside 1-65535, an unknown protocol or a bad address.
    """
    m = _PORT.match(text)
    if m is None:
        raise ValueError("not [IP:]HOST:CONTAINER[/tcp|/udp]")
    protocol = m.group("proto") or "tcp"
    if protocol not in PORT_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not tcp or udp")
    host_port, container_port = int(m.group("host")), int(m.group("container"))
    for port in (host_port, container_port):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not in 1-65535")
    ip = m.group("ip")
    if ip is not None:
        bracketed = ip.startswith("[")
        ip = ip.strip("[]")
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"{ip!r} is not an IP address") from None
        if (address.version == 6) != bracketed:
            raise ValueError("an IPv6 address goes in brackets, an IPv4 address does not")
        ip = str(address)
    return PortMapping(ip, host_port, container_port, protocol)


schema.FORMATS["port"] = (
    "'[IP:]HOST:CONTAINER' with an optional '/tcp' or '/udp', ports 1-65535, IP an IPv4 address or an IPv6 "
    "address in brackets",
    _parses(parse_port),
)
