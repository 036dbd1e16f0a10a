"""A tiny Docker registry (the v2 API's few read routes) on 127.0.0.1, serving one image made from a local one,
its layer sent slowly enough that a pull takes seconds. dockerd pulls from 127.0.0.0/8 over plain HTTP."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from docker.client import DockerClient

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def image_blobs(client: DockerClient, image: str) -> tuple[bytes, dict[str, bytes]]:
    """(manifest, blobs by digest) of ``image`` as a registry serves it: its config (labelled, so the image is
    new to dockerd), and each layer gzipped with this moment as its gzip time, so each run's layer digests are
    new to dockerd too (it downloads them rather than reuse what it holds)."""
    saved = b"".join(client.images.get(image).save())
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None, name
            return member.read()

        (entry,) = json.loads(read("manifest.json"))
        image_config = json.loads(read(entry["Config"]))
        layers = [gzip.compress(read(name), mtime=time.time()) for name in entry["Layers"]]
    # dockerd skips a pull whose config it holds (the image ID is its digest): a label makes this one new
    settings = image_config.get("config") or {}
    settings["Labels"] = {**(settings.get("Labels") or {}), "cmnode.test.pull": str(time.time_ns())}
    image_config["config"] = settings
    config = json.dumps(image_config).encode()
    blobs = {_digest(b): b for b in [config, *layers]}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": _digest(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": _digest(layer)} for layer in layers],
    }  # fmt: skip
    return json.dumps(manifest).encode(), blobs


@contextmanager
def registry(manifest: bytes, blobs: dict[str, bytes], *, rate: int) -> Iterator[str]:
    """Serve the image as ``<address>/<any name>:<any tag>``; blobs at ``rate`` bytes a second. Yields the
    address (``127.0.0.1:PORT``)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?")[0]
            if path in ("/v2/", "/v2"):
                return self._send(b"{}", "application/json", body=body)
            if "/manifests/" in path:
                return self._send(manifest, MANIFEST, body=body, digest=_digest(manifest))
            if "/blobs/" in path and (blob := blobs.get(path.rsplit("/", 1)[1])) is not None:
                return self._send(blob, "application/octet-stream", body=body, digest=_digest(blob), slow=True)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, data: bytes, kind: str, *, body: bool, digest: str | None = None, slow: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if not body:
                return
            step = max(1, rate // 10) if slow else len(data)
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                if slow:
                    time.sleep(0.1)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
