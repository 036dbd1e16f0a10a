"""docker/teardown and the compose project's name, against the real engine (nothing is pulled).

The nodes' IDs come from the identity keys in the project's volumes, read with the nodes' image, so the image must
be here: it is built by docker/build-image when missing (no registry needed; a minute or three the first time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
from docker.client import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(20 * 60)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "cmnode:local"
PROJECT_LABEL = "com.docker.compose.project"


def compose_command() -> str:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            return " ".join(command)
    pytest.fail("neither 'docker compose' nor docker-compose is installed (apt-get install docker-compose)")


@pytest.fixture(scope="module")
def node_image(docker_available: DockerClient) -> str:
    try:
        docker_available.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        out = subprocess.run([str(ROOT / "docker" / "build-image"), IMAGE], capture_output=True, text=True,
                             timeout=15 * 60)  # fmt: skip
        assert out.returncode == 0, out.stderr
    return IMAGE


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CMNODE_", "COMPOSE_"))}
    return {**base, "COMPOSE": compose_command(), **extra}


@pytest.fixture
def project(docker_available: DockerClient) -> Iterator[str]:
    """A compose project name of the test's own; whatever carries it (or the test's label) is removed after."""
    name = f"cmnode-test-{uuid.uuid4().hex[:10]}"
    yield name
    api = docker_available.api
    for filters in ({"label": f"{PROJECT_LABEL}={name}"}, {"label": f"cmnode-test.project={name}"}):
        for c in api.containers(all=True, filters=filters):
            api.remove_container(c["Id"], force=True, v=True)
    for volume in docker_available.volumes.list(filters={"label": f"{PROJECT_LABEL}={name}"}):
        volume.remove(force=True)
    for network in docker_available.networks.list(filters={"label": f"{PROJECT_LABEL}={name}"}):
        network.remove()


def node_volume(client: DockerClient, project: str, service: str, image: str) -> str:
    """A volume as compose makes it for ``service``, holding a node identity; returns that node's ID."""
    name = f"{project}_{service}-data"
    client.volumes.create(name, labels={PROJECT_LABEL: project, "com.docker.compose.volume": f"{service}-data"})
    code = "from pathlib import Path; from node.identity import load_or_create as l; print(l(Path('/d')).node_id)"
    out: bytes = client.containers.run(image, ["-c", code], entrypoint="python3", volumes={name: {"bind": "/d"}},
                                       network_mode="none", remove=True)  # fmt: skip
    return out.decode().strip()


def job_container(client: DockerClient, project: str, node_id: str) -> str:
    """A container as a node starts one for a job (labels of node/docker_runtime.py), not started."""
    labels = {"cmnode.managed": "1", "cmnode.node_id": node_id, "cmnode.job_id": str(uuid.uuid4()),
              "cmnode-test.project": project}  # fmt: skip
    return str(client.api.create_container("cmnode-test/busybox:latest", ["true"], labels=labels)["Id"])


def exists(client: DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


def test_teardown_removes_only_the_job_containers_of_this_projects_nodes(
    docker_available: DockerClient, test_image: str, node_image: str, project: str
) -> None:
    client = docker_available
    ours = [node_volume(client, project, service, node_image) for service in ("node1", "node2")]
    other = f"{project}-other"  # another cluster's node on the same host: its containers must stay
    theirs_id = node_volume(client, other, "node1", node_image)
    try:
        mine = [job_container(client, project, node_id) for node_id in (*ours, ours[0])]
        theirs = job_container(client, project, theirs_id)
        unlabelled = str(client.api.create_container(test_image, ["true"],
                                                     labels={"cmnode-test.project": project})["Id"])  # fmt: skip

        out = subprocess.run([str(ROOT / "docker" / "teardown"), "-p", project], env=env(), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert all(node_id in out.stderr for node_id in ours) and theirs_id not in out.stderr, out.stderr
        assert [c for c in mine if exists(client, c)] == [], out.stderr
        assert exists(client, theirs) and exists(client, unlabelled), out.stderr
        assert client.volumes.list(filters={"label": f"{PROJECT_LABEL}={project}"}) == []
        assert "removed 3 job container(s)" in out.stderr, out.stderr
    finally:
        for volume in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={other}"}):
            volume.remove(force=True)


def test_without_the_nodes_image_teardown_removes_nothing(docker_available: DockerClient, project: str) -> None:
    client = docker_available
    client.volumes.create(f"{project}_node1-data", labels={PROJECT_LABEL: project})
    out = subprocess.run([str(ROOT / "docker" / "teardown"), "-p", project],
                         env=env(CMNODE_IMAGE="cmnode-test/no-such-image:none"), capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode != 0 and "Nothing removed" in out.stderr, out.stderr
    assert len(client.volumes.list(filters={"label": f"{PROJECT_LABEL}={project}"})) == 1


def test_the_project_is_named_by_docker_env_not_by_the_folder(
    docker_available: DockerClient, node_image: str, project: str, tmp_path: Path
) -> None:
    # A copy of docker/ whose .env names the test's project: compose run from elsewhere must take that name, not
    # the folder's ("docker"); the teardown next to it finds the name there too.
    folder = tmp_path / "docker"
    folder.mkdir()
    for name in ("compose.yaml", "teardown"):
        shutil.copy2(ROOT / "docker" / name, folder / name)
    dotenv = (ROOT / "docker" / ".env").read_text()
    assert "\nCOMPOSE_PROJECT_NAME=cmnode\n" in dotenv
    (folder / ".env").write_text(dotenv.replace("COMPOSE_PROJECT_NAME=cmnode", f"COMPOSE_PROJECT_NAME={project}"))
    key = tmp_path / "swarm.key"
    key.write_text("/key/swarm/psk/1.0.0/\n/base16/\n" + "ab" * 32 + "\n")
    run_env = env(CMNODE_SWARM_KEY_FILE=str(key), CMNODE_IMAGE=node_image)
    up = subprocess.run([*run_env["COMPOSE"].split(), "-f", str(folder / "compose.yaml"), "up", "--no-start"],
                        cwd="/", env=run_env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert up.returncode == 0, up.stderr
    created = docker_available.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    assert len(created) == 3, up.stderr

    down = subprocess.run([str(folder / "teardown")], cwd="/", env=run_env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert f"project {project} removed" in down.stderr, down.stderr
    assert docker_available.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}) == []
