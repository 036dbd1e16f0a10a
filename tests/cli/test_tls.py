"""The RPC front of a real ``cmnode run``: HTTPS with a certificate the test makes, the CLI trusting it with
``--cacert``, settings refused at start, and the warning for an API open beyond loopback without a token."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rpc.client import Client

from .conftest import NodeProcess, cmnode, one_line

pytestmark = pytest.mark.slow  # each test runs the executable

NO_DOCKER = ("--docker-host", "unix:///nonexistent.sock")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cmnode test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_https_with_the_cli_trusting_the_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    node = NodeProcess(tmp_path / "node", *NO_DOCKER, "--tls-cert", str(cert), "--tls-key", str(key),
                       "--rpc-token", "t0ken").start()  # fmt: skip
    try:
        assert node.url.startswith("https://127.0.0.1:")
        info = cmnode("info", "--json", "--token", "t0ken", "--cacert", str(cert), url=node.url)
        assert info.returncode == 0, info.stderr
        assert node.node_id in info.stdout
        untrusted = cmnode("info", "--json", "--token", "t0ken", url=node.url)  # the system's CAs do not know it
        assert untrusted.returncode == 3
        assert "certificate verify failed" in one_line(untrusted.stderr).lower()
        no_file = cmnode("info", "--cacert", str(tmp_path / "missing.pem"), url=node.url)
        assert no_file.returncode == 2
        assert "--cacert" in one_line(no_file.stderr)
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=context, timeout=30) as http:  # another real HTTPS client
            assert http.get(node.url + "/healthz").json()["node_id"] == node.node_id
            assert http.get(node.url + "/metrics").status_code == 401
            assert http.get(node.url + "/metrics", headers={"Authorization": "Bearer t0ken"}).status_code == 200
        with Client(node.url, token="t0ken", cacert=str(cert)) as client:
            assert client.call("NodeService.Info")["node_id"] == node.node_id
        plain = node.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(plain + "/healthz", timeout=10)
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        (("--tls-cert", "{cert}"), "invalid tls-cert/tls-key: give both"),
        (("--tls-cert", "{key}", "--tls-key", "{key}"), "invalid tls-cert/tls-key: cannot load"),
        (("--tls-cert", "{dir}/nope.pem", "--tls-key", "{key}"), "no such file"),
        (("--rpc-read-token", "r"), "invalid rpc-read-token: it needs rpc-token"),
        (("--rpc-read-token", "same", "--rpc-token", "same"), "invalid rpc-read-token: it must differ"),
    ],
)
def test_front_settings_that_cannot_work_stop_the_start(tmp_path: Path, flags: tuple[str, ...], wanted: str) -> None:
    cert, key = self_signed(tmp_path)
    args = [f.format(cert=cert, key=key, dir=tmp_path) for f in flags]
    done = cmnode("run", "--listen-address", "127.0.0.1", "--port", "0", "--p2p-port", "0", "--no-mdns",
                  "--data-dir", str(tmp_path / "node"), *NO_DOCKER, *args, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert wanted in one_line(done.stderr)


WARNING = "without --rpc-token: anyone who reaches it can run containers on this node"


def test_listening_on_every_address_works_and_warns_without_a_token(tmp_path: Path) -> None:
    """The seed's ``cmnode run --listen-address 0.0.0.0`` still starts and serves; it now says it is open."""
    node = NodeProcess(tmp_path / "open", *NO_DOCKER, listen="0.0.0.0").start()
    try:
        url = node.url.replace("0.0.0.0", "127.0.0.1")
        with Client(url) as client:
            assert client.call("NodeService.Info")["node_id"] == node.node_id
    finally:
        node.stop()
    assert WARNING in node.log.read_text()
    guarded = NodeProcess(tmp_path / "guarded", *NO_DOCKER, "--rpc-token", "t", listen="0.0.0.0").start()
    guarded.stop()
    local = NodeProcess(tmp_path / "local", *NO_DOCKER).start()
    local.stop()
    assert WARNING not in guarded.log.read_text() + local.log.read_text()
