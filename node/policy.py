"""This node's container policy, in one place: which jobs it runs and with what the container is held in.

Pure rules over a ``JobSpec`` (the only outside call is ``resolve``, ``os.path.realpath`` by default, to follow
symlinks of host paths on this node's file system). The origin checks a new job against its own policy and
answers -32602 naming the rule (``Node.create``); any node checks a job before running it, and a job its policy
refuses is recorded as a ``rejected`` execution there (``Executor.accept``); the runtimes turn a spec into
``ContainerOptions`` here, so the fake and the Docker runtime apply the same limits.

What every container gets, whatever the job says: ``no-new-privileges`` (setuid binaries cannot gain
privileges), a pids limit, and a memory limit when the job sets none. Host paths are mounted only under an
``--allow-host-path`` prefix, compared after following symlinks; the path Docker is given is the resolved one,
so a symlink swapped in later cannot redirect the mount (a directory replaced by a symlink between this check
and Docker's mount is a race this cannot close; allow only prefixes whose contents jobs' users do not control).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from .errors import RuntimeFailureError, ValidationError
from .model import MIN_MEMORY, JobSpec, memory_bytes, parse_volume

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "DEFAULT_MEMORY",
    "DEFAULT_PIDS_LIMIT",
    "REFUSED",
    "ContainerOptions",
    "Mount",
    "Policy",
    "Refusal",
    "check_default_memory",
    "check_host_prefixes",
    "check_image_globs",
    "normalise_image",
]

DEFAULT_PIDS_LIMIT = 1024
"""Processes (threads included) per container: far above what a job's process tree needs, far below what
exhausts the host's pid space (a fork bomb stops here)."""
DEFAULT_MEMORY = "1g"
"""For a job that sets no ``resources.memory``: a runaway job is killed (``out of memory``) before it takes the
host down; a job that needs more says so."""
REFUSED = "refused by this node's policy"


@dataclass(frozen=True)
class Refusal:
    """Why the policy refuses a spec: the field and the rule, as a -32602 error entry."""

    field: str
    message: str

    def error(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Mount:
    """A mount as the runtime makes it: ``kind`` is ``bind`` (a resolved host path) or ``volume`` (a name)."""

    kind: str
    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerOptions:
    """How a job's container is held: what the policy adds to the spec's own limits."""

    no_new_privileges: bool
    pids_limit: int | None
    memory: int | None
    cpus: float | None
    mounts: tuple[Mount, ...]


@dataclass(frozen=True)
class Policy:
    """The rules; the defaults allow every image, no host path, and set the default limits.

    ``allow_images``: globs (``fnmatch``, ``*`` crosses ``/``), matched against the reference as written and as
    Docker normalises it (``busybox`` is also ``docker.io/library/busybox:latest``); empty allows every image.
    ``pids_limit`` and ``memory``: None (or 0 in the settings) sets no limit.
    """

    allow_images: tuple[str, ...] = ()
    allow_host_paths: tuple[str, ...] = ()
    pids_limit: int | None = DEFAULT_PIDS_LIMIT
    memory: int | None = memory_bytes(DEFAULT_MEMORY)
    resolve: Callable[[str], str] = field(default=os.path.realpath, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        memory = memory_bytes(config.default_memory)
        return cls(
            allow_images=config.allow_image,
            allow_host_paths=config.allow_host_path,
            pids_limit=config.default_pids_limit or None,
            memory=memory or None,
        )

    # -- the rules ------------------------------------------------------------------------------------------

    def refusal(self, spec: JobSpec) -> Refusal | None:
        """The first rule ``spec`` breaks, or None."""
        if self.allow_images and not self.image_allowed(spec.image):
            patterns = " ".join(self.allow_images)
            return Refusal("image", f"{REFUSED}: {spec.image!r} is not matched by --allow-image {patterns}")
        for i, text in enumerate(spec.volumes):
            volume = parse_volume(text)
            if volume.host_path and self.host_path(volume.source) is None:
                return Refusal(f"volumes[{i}]", f"{REFUSED}: {self._why_not(volume.source)}")
        return None

    def check(self, spec: JobSpec) -> None:
        """Raises ValidationError (-32602) naming the rule ``spec`` breaks."""
        refusal = self.refusal(spec)
        if refusal is not None:
            raise ValidationError([refusal.error()])

    def image_allowed(self, image: str) -> bool:
        names = (image, normalise_image(image))
        return any(fnmatchcase(name, pattern) for pattern in self.allow_images for name in names)

    def host_path(self, source: str) -> str | None:
        """The path to mount for host path ``source`` (symlinks followed), or None if it is not under an
        allowed prefix (itself resolved, so an allowed ``/srv`` that is a symlink to ``/data`` still works)."""
        real = self.resolve(posixpath.normpath(source))
        for prefix in self.allow_host_paths:
            root = self.resolve(posixpath.normpath(prefix))
            if real == root or real.startswith(root.rstrip("/") + "/"):
                return real
        return None

    def _why_not(self, source: str) -> str:
        if not self.allow_host_paths:
            return f"host path {source!r} refused: no --allow-host-path is set"
        real = self.resolve(posixpath.normpath(source))
        resolved = f" (it resolves to {real!r})" if real != source else ""
        return f"host path {source!r}{resolved} is not under --allow-host-path {' '.join(self.allow_host_paths)}"

    # -- what the runtime applies ----------------------------------------------------------------------------

    def options(self, spec: JobSpec) -> ContainerOptions:
        """The container's limits and mounts. Checks again (the node's file system may have changed since
        the job was admitted).

        Raises:
            RuntimeFailureError: the spec breaks a rule now.
        """
        refusal = self.refusal(spec)
        if refusal is not None:
            raise RuntimeFailureError(str(refusal))
        mounts = []
        for text in spec.volumes:
            volume = parse_volume(text)
            if volume.host_path:
                source = self.host_path(volume.source)
                assert source is not None  # refusal() said so
                mounts.append(Mount("bind", source, volume.target, volume.read_only))
            else:
                mounts.append(Mount("volume", volume.source, volume.target, volume.read_only))
        memory = spec.resources.memory if spec.resources.memory is not None else self.memory
        return ContainerOptions(
            no_new_privileges=True,
            pids_limit=self.pids_limit,
            memory=memory,
            cpus=spec.resources.cpus,
            mounts=tuple(mounts),
        )


def normalise_image(image: str) -> str:
    """A reference as Docker reads it: the default registry ``docker.io``, ``library/`` for an official image,
    and the ``latest`` tag when there is neither tag nor digest."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    if tag:
        name += ":" + tag
    elif not digest:
        name += ":latest"
    return name + ("@" + digest if digest else "")


# -- the checks of the settings (node/config.py) ---------------------------------------------------------------


def check_default_memory(value: str) -> str | None:
    try:
        size = memory_bytes(value)
    except ValueError:
        return f"{value!r} is not a size such as '1g' (units b, k, m, g; 0: no limit)"
    return None if size == 0 or size >= MIN_MEMORY else f"{value!r} (must be 0 or at least 6m)"


def check_image_globs(values: tuple[str, ...]) -> str | None:
    for value in values:
        if not value or any(c.isspace() for c in value):
            return f"{value!r} is not an image pattern"
    return None


def check_host_prefixes(values: tuple[str, ...]) -> str | None:
    for value in values:
        if not value.startswith("/") or ".." in value.split("/"):
            return f"{value!r} is not an absolute path without '..'"
    return None
