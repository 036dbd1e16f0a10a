"""The container policy (node/policy.py), the ``volumes`` field and per-origin admission (node/admission.py), as
pure code: what is refused and why, how host paths resolve (real symlinks in tmp_path), and what a container
gets. The same rules against dockerd and real nodes: tests/node/test_policy_docker.py, tests/node/test_runtime.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from node.admission import MAX_ORIGINS, Admission, Verdict
from node.config import Config, resolve_config
from node.errors import ConfigError, RuntimeFailureError, ValidationError
from node.model import Execution, JobSpec, State, derive_status, parse_volume
from node.policy import Mount, Policy, normalise_image


def spec(image: str = "busybox", **fields: Any) -> JobSpec:
    return JobSpec.from_json({"image": image, **fields})


# -- images -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "normal"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("me/app", "docker.io/me/app:latest"),
        ("ghcr.io/me/app:v1", "ghcr.io/me/app:v1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ],
)
def test_images_normalise_as_docker_reads_them(image: str, normal: str) -> None:
    assert normalise_image(image) == normal


def test_every_image_is_allowed_by_default() -> None:
    assert Policy().refusal(spec("anything/at:all")) is None


def test_allow_image_globs_match_the_reference_as_written_or_normalised() -> None:
    policy = Policy(allow_images=("cmnode-test/*", "docker.io/library/alpine:*"))
    assert policy.refusal(spec("cmnode-test/busybox:latest")) is None
    assert policy.refusal(spec("alpine")) is None  # docker.io/library/alpine:latest
    assert policy.refusal(spec("alpine:3.19")) is None
    refusal = policy.refusal(spec("ghcr.io/evil/alpine:3.19"))
    assert refusal is not None and refusal.field == "image"
    assert refusal.message == (
        "refused by this node's policy: 'ghcr.io/evil/alpine:3.19' is not matched by "
        "--allow-image cmnode-test/* docker.io/library/alpine:*"
    )
    with pytest.raises(ValidationError) as caught:
        policy.check(spec("busybox"))
    assert caught.value.code == -32602
    assert caught.value.errors == [{"field": "image", "message": caught.value.errors[0]["message"]}]
    assert "--allow-image" in caught.value.message


# -- the volumes field --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("/srv/data:/data", ("/srv/data", "/data", False)),
        ("/srv/data:/data:ro", ("/srv/data", "/data", True)),
        ("/srv/data:/data:rw", ("/srv/data", "/data", False)),
        ("cache:/var/cache", ("cache", "/var/cache", False)),
        ("my_vol-1.x:/a/b:ro", ("my_vol-1.x", "/a/b", True)),
    ],
)
def test_volumes_parse(text: str, parsed: tuple[str, str, bool]) -> None:
    volume = parse_volume(text)
    assert (volume.source, volume.target, volume.read_only) == parsed
    assert spec(volumes=[text]).volumes == (text,)


@pytest.mark.parametrize(
    "text",
    [
        "relative/path:/data",  # neither absolute nor a volume name
        "/srv:data",  # relative target
        "/srv:/",  # the container's root
        "/srv/../etc:/data",  # '..' in the source
        "/srv:/data/../../etc",  # '..' in the target
        "/srv:/data:rx",  # unknown mode
        "/srv:/data:ro:extra",
        "/srv",
        "vol\x00:/data",
        "-vol:/data",
        "/srv:/da\x00ta",
    ],
)
def test_malformed_volumes_are_refused_by_the_schema(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(volumes=[text])
    assert [e["field"] for e in caught.value.errors] == ["volumes[0]"]


def test_volumes_are_bounded_and_round_trip() -> None:
    with pytest.raises(ValidationError):
        spec(volumes=[f"v{i}:/m{i}" for i in range(65)])
    with pytest.raises(ValidationError):
        spec(volumes=["/" + "a" * 5000 + ":/data"])
    assert spec(volumes=None).volumes == ()
    one = spec(volumes=["cache:/c:ro"])
    assert JobSpec.from_json(one.to_json()) == one
    assert "volumes" not in spec().to_json()  # the signed bytes of a job without volumes are unchanged


# -- host paths ---------------------------------------------------------------------------------------------------


def test_host_paths_are_refused_without_a_prefix_and_named_volumes_allowed() -> None:
    policy = Policy()
    refusal = policy.refusal(spec(volumes=["cache:/c", "/etc:/host-etc:ro"]))
    assert refusal is not None and refusal.field == "volumes[1]"
    assert refusal.message == "refused by this node's policy: host path '/etc' refused: no --allow-host-path is set"
    assert policy.options(spec(volumes=["cache:/c:ro"])).mounts == (Mount("volume", "cache", "/c", True),)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """allowed/{data, inner -> data, escape -> ../secret}, allowed2/, secret/, via -> allowed (a symlinked root)."""
    for name in ("allowed/data", "allowed2", "secret"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "allowed" / "inner").symlink_to(tmp_path / "allowed" / "data")
    (tmp_path / "allowed" / "escape").symlink_to(tmp_path / "secret")
    (tmp_path / "via").symlink_to(tmp_path / "allowed")
    return tmp_path


def test_host_paths_under_the_prefix_are_mounted_resolved(tree: Path) -> None:
    policy = Policy(allow_host_paths=(f"{tree}/allowed",))
    real = os.path.realpath(tree / "allowed" / "data")
    for source in (f"{tree}/allowed/data", f"{tree}/allowed//data/.", f"{tree}/allowed/inner", f"{tree}/via/data"):
        assert policy.refusal(spec(volumes=[f"{source}:/d"])) is None, source
        assert policy.options(spec(volumes=[f"{source}:/d:ro"])).mounts == (Mount("bind", real, "/d", True),)
    assert policy.refusal(spec(volumes=[f"{tree}/allowed:/d"])) is None  # the prefix itself
    assert policy.refusal(spec(volumes=[f"{tree}/allowed/not-yet-there:/d"])) is None


def test_host_path_escapes_are_refused(tree: Path) -> None:
    policy = Policy(allow_host_paths=(f"{tree}/allowed",))
    for source in (
        f"{tree}/allowed/escape",  # a symlink out of the prefix
        f"{tree}/allowed/escape/file",
        f"{tree}/allowed2",  # a sibling whose name starts with the prefix's
        f"{tree}/secret",
        "/",
    ):
        refusal = policy.refusal(spec(volumes=[f"{source}:/d"]))
        assert refusal is not None and refusal.field == "volumes[0]", source
        assert "is not under --allow-host-path" in refusal.message
    refusal = policy.refusal(spec(volumes=[f"{tree}/allowed/escape:/d"]))
    assert refusal is not None and f"resolves to '{os.path.realpath(tree / 'secret')}'" in refusal.message
    with pytest.raises(RuntimeFailureError, match="volumes\\[0\\]: refused by this node's policy"):
        policy.options(spec(volumes=[f"{tree}/secret:/d"]))


def test_a_symlinked_prefix_allows_what_it_points_to(tree: Path) -> None:
    policy = Policy(allow_host_paths=(f"{tree}/via",))
    assert policy.refusal(spec(volumes=[f"{tree}/allowed/data:/d"])) is None
    assert policy.refusal(spec(volumes=[f"{tree}/via/escape:/d"])) is not None


# -- what every container gets ------------------------------------------------------------------------------------


def test_containers_get_no_new_privileges_and_default_limits() -> None:
    options = Policy().options(spec())
    assert (options.no_new_privileges, options.pids_limit, options.memory, options.cpus) == (True, 1024, 2**30, None)
    own = Policy().options(spec(resources={"memory": "64m", "cpus": 0.5}))
    assert (own.memory, own.cpus, own.pids_limit) == (64 * 2**20, 0.5, 1024)
    none = Policy(pids_limit=None, memory=None).options(spec())
    assert (none.no_new_privileges, none.pids_limit, none.memory) == (True, None, None)


def test_policy_from_settings(tmp_path: Path) -> None:
    flags = {"default_memory": "512m", "default_pids_limit": 64, "allow_image": ["a/*"], "allow_host_path": ["/srv"]}
    policy = Policy.from_config(resolve_config(flags, None, {"XDG_CONFIG_HOME": str(tmp_path)}))
    assert (policy.memory, policy.pids_limit, policy.allow_images, policy.allow_host_paths) == (
        512 * 2**20, 64, ("a/*",), ("/srv",),
    )  # fmt: skip
    off = Policy.from_config(Config(default_memory="0", default_pids_limit=0))
    assert (off.memory, off.pids_limit) == (None, None)
    environ = {
        "CMNODE_ALLOW_IMAGE": "a/* b/*",
        "CMNODE_ALLOW_HOST_PATH": "/srv,/data",
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    config = resolve_config({}, None, environ)
    assert (config.allow_image, config.allow_host_path) == (("a/*", "b/*"), ("/srv", "/data"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"default_memory": "1m"}, "invalid default-memory"),
        ({"default_memory": "lots"}, "invalid default-memory"),
        ({"default_pids_limit": -1}, "invalid default-pids-limit"),
        ({"allow_host_path": ["srv"]}, "invalid allow-host-path"),
        ({"allow_host_path": ["/srv/../etc"]}, "invalid allow-host-path"),
        ({"peer_job_rate": 0}, "invalid peer-job-rate"),
        ({"peer_job_burst": 0}, "invalid peer-job-burst"),
    ],
)
def test_bad_policy_settings_are_refused(tmp_path: Path, flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(flags, None, {"XDG_CONFIG_HOME": str(tmp_path)})


# -- status of a job some node rejected ---------------------------------------------------------------------------


def _execution(node: str, state: State) -> Execution:
    return Execution(job_id="j", node_id=node, state=state, created_at=1.0, updated_at=1.0)


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ([State.REJECTED], "rejected"),
        ([State.REJECTED, State.REJECTED], "rejected"),
        ([State.REJECTED, State.RUNNING], "running"),
        ([State.REJECTED, State.PENDING], "pending"),
        ([State.REJECTED, State.COMPLETE], "complete"),
        ([State.REJECTED, State.FAILED, State.COMPLETE], "failed"),
        ([], "pending"),
    ],
)
def test_a_rejected_execution_counts_only_when_every_node_rejected(states: list[State], status: str) -> None:
    assert derive_status(_execution(f"n{i}", s) for i, s in enumerate(states)) == status
    assert State.REJECTED.final


# -- per-origin admission -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_untrusted_origin_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    admission = Admission(rate=2.0, burst=3, trusted=lambda origin: origin == "friend", clock=clock)
    verdicts = [admission.decide("stranger", room=True).verdict for _ in range(5)]
    assert verdicts == [Verdict.RUN] * 3 + [Verdict.REFUSE] * 2
    assert admission.decide("other", room=True).verdict == Verdict.RUN  # each origin its own bucket
    clock.now = 0.5  # one token back at 2/s
    assert [admission.decide("stranger", room=True).verdict for _ in range(2)] == [Verdict.RUN, Verdict.REFUSE]
    refused = admission.decide("stranger", room=True)
    assert refused.reason is not None and "--peer-job-rate" in refused.reason and "stranger" in refused.reason
    clock.now = 100.0
    queue_full = admission.decide("stranger", room=False)
    assert queue_full.verdict == Verdict.REFUSE and "queue is full" in str(queue_full.reason)
    assert admission.refused == {"rate": 4, "queue": 1}
    assert admission.refused_total == 5


def test_a_trusted_origins_excess_waits_and_is_never_refused() -> None:
    admission = Admission(rate=1.0, burst=1, clock=Clock())  # every origin trusted by default
    verdicts = [admission.decide("friend", room=True).verdict for _ in range(3)]
    assert verdicts == [Verdict.RUN, Verdict.HOLD, Verdict.HOLD]
    assert admission.decide("friend", room=False).verdict == Verdict.HOLD
    assert admission.refused_total == 0


def test_admission_keeps_a_bounded_number_of_buckets() -> None:
    admission = Admission(rate=1.0, burst=1, trusted=lambda origin: False, clock=Clock())
    for i in range(MAX_ORIGINS + 50):
        admission.decide(f"origin-{i}", room=True)
    assert len(admission._buckets) == MAX_ORIGINS
