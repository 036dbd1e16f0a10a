"""``cmnode run`` configuration: flag > CMNODE_* environment > TOML file > default, and refusal of bad values."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from pathlib import Path
from typing import Annotated, Any

import cyclopts
import pytest
from rich.console import Console

from node.cli import run_command
from node.config import Config, Setting, between, resolve_config, settings, settings_table

from .conftest import cmnode, one_line

A = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA"
B = "/ip4/127.0.0.2/tcp/4001/p2p/12D3KooWB"
C = "/ip4/127.0.0.3/tcp/4001/p2p/12D3KooWC"
D = "/ip4/127.0.0.4/tcp/4001/p2p/12D3KooWD"
NOT_SET = None


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


# (setting, --flag value, CMNODE_* value, file value, resulting Config value)
PRECEDENCE = [
    ("port", 8081, "8082", 8083, 8081),
    ("port", NOT_SET, "8082", 8083, 8082),
    ("port", NOT_SET, NOT_SET, 8083, 8083),
    ("port", NOT_SET, NOT_SET, NOT_SET, 8080),
    ("port", NOT_SET, "", 8083, 8083),  # an empty variable is unset
    ("port", 0, "8082", NOT_SET, 0),  # a falsy flag still wins
    ("queue_size", NOT_SET, "500", 7, 500),
    ("worker_count", 3, NOT_SET, 5, 3),
    ("listen_address", NOT_SET, NOT_SET, "127.0.0.1", "127.0.0.1"),
    ("listen_address", NOT_SET, NOT_SET, NOT_SET, "0.0.0.0"),
    ("mdns", False, "true", True, False),
    ("mdns", NOT_SET, "off", True, False),
    ("mdns", NOT_SET, "yes", False, True),
    ("mdns", NOT_SET, NOT_SET, False, False),
    ("mdns", NOT_SET, NOT_SET, NOT_SET, True),
    ("bootstrap", [A], f"{B},{C}", [D], (A,)),
    ("bootstrap", NOT_SET, f"{B}, {C}", [D], (B, C)),
    ("bootstrap", NOT_SET, f"{B} {C}", NOT_SET, (B, C)),
    ("bootstrap", NOT_SET, NOT_SET, [D], (D,)),
    ("bootstrap", NOT_SET, NOT_SET, NOT_SET, ()),
    ("data_dir", Path("/from/flag"), "/from/env", "/from/file", Path("/from/flag")),
    ("data_dir", NOT_SET, "~/from-env", "/from/file", Path.home() / "from-env"),
    ("data_dir", NOT_SET, NOT_SET, "/from/file", Path("/from/file")),
    ("log_level", NOT_SET, "debug", "warning", "debug"),
    ("log_format", "json", "text", "text", "json"),
    ("pull_timeout", NOT_SET, "2.5", 10, 2.5),
    ("retention", NOT_SET, NOT_SET, 0, 0.0),
    ("docker_host", NOT_SET, "unix:///e.sock", "unix:///f.sock", "unix:///e.sock"),
    ("docker_host", NOT_SET, NOT_SET, NOT_SET, None),
    ("rpc_token", "f", "e", "t", "f"),
    ("rpc_token", NOT_SET, NOT_SET, "t", "t"),
    ("p2p_port", NOT_SET, "0", 4002, 0),
]


@pytest.mark.parametrize(("setting", "flag", "env", "file", "expected"), PRECEDENCE)
def test_precedence(tmp_path: Path, setting: str, flag: Any, env: str | None, file: Any, expected: Any) -> None:
    path = tmp_path / "config.toml"
    path.write_text("" if file is None else f"{setting} = {toml_value(file)}\n")
    environ = {} if env is None else {"CMNODE_" + setting.upper(): env}
    config = resolve_config({setting: flag}, path, environ)
    assert getattr(config, setting) == expected
    defaults = Config()
    for field in dataclasses.fields(Config):  # and nothing else moved
        if field.name != setting:
            assert getattr(config, field.name) == getattr(defaults, field.name), field.name


def test_file_forms_and_where_it_is_found(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "cmnode").mkdir(parents=True)
    (xdg / "cmnode" / "config.toml").write_text('[cmnode]\nqueue-size = 42\nlisten_address = "127.0.0.1"\n')
    chosen = tmp_path / "chosen.toml"
    chosen.write_text("queue_size = 43\n")
    by_env = tmp_path / "by-env.toml"
    by_env.write_text("queue_size = 44\n")

    assert resolve_config({}, None, {"XDG_CONFIG_HOME": str(xdg)}).queue_size == 42  # the default path
    assert resolve_config({}, None, {"XDG_CONFIG_HOME": str(tmp_path / "none")}).queue_size == 100  # absent: fine
    both = {"XDG_CONFIG_HOME": str(xdg), "CMNODE_CONFIG": str(by_env)}
    assert resolve_config({}, None, both).queue_size == 44  # CMNODE_CONFIG over the default path
    assert resolve_config({}, chosen, both).queue_size == 43  # --config over CMNODE_CONFIG


@pytest.mark.slow  # each case runs the executable
@pytest.mark.parametrize(
    ("args", "env", "file", "message"),
    [
        (("--port", "99999"), {}, None, "cmnode: --port: invalid port: 99999 is not a port number (0-65535)"),
        (("--port", "eighty"), {}, None, 'cmnode: Invalid value for --port: unable to convert "eighty" into int.'),
        (("--log-level", "loud"), {}, None, "--log-level: invalid log-level: 'loud'"),
        (("--bootstrap", "10.0.0.1:4001"), {}, None, "--bootstrap: invalid bootstrap: '10.0.0.1:4001' is not"),
        ((), {"CMNODE_QUEUE_SIZE": "0"}, None, "cmnode: CMNODE_QUEUE_SIZE: invalid queue-size: 0 (must be 1 to"),
        ((), {"CMNODE_MDNS": "maybe"}, None, "cmnode: CMNODE_MDNS: invalid value 'maybe' for mdns"),
        ((), {"CMNODE_LISTEN_ADDRESS": "example"}, None, "CMNODE_LISTEN_ADDRESS: invalid listen-address"),
        ((), {}, "worker_count = 0", "config.toml: invalid worker-count: 0 (must be 1 to 1000)"),
        ((), {}, 'port = "x"', "config.toml: invalid value 'x' for port"),
        ((), {}, "prot = 8080", "config.toml: unknown setting 'prot'"),
        ((), {}, "port = ", "config.toml is not valid TOML"),
        ((), {"CMNODE_CONFIG": "/nonexistent/cmnode.toml"}, None, "cannot read config file /nonexistent/cmnode.toml"),
    ],
)
def test_invalid_configuration_is_refused_at_start(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], file: str | None, message: str
) -> None:
    extra: tuple[str, ...] = ()
    if file is not None:
        path = tmp_path / "config.toml"
        path.write_text(file + "\n")
        extra = ("--config", str(path))
    # Port 0 and loopback: should a bad value slip through, the node starts harmlessly and the test fails.
    out = cmnode("run", "--data-dir", str(tmp_path / "data"), "--no-mdns", *extra, *args,
                 env={"XDG_CONFIG_HOME": str(tmp_path), "CMNODE_PORT": "0", "CMNODE_P2P_PORT": "0",
                      "CMNODE_LISTEN_ADDRESS": "127.0.0.1", **env}, timeout=60)  # fmt: skip
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in one_line(out.stderr)
    assert not (tmp_path / "data").exists()  # refused before anything was created


@pytest.mark.slow
def test_run_help_shows_every_flag_with_its_variable() -> None:
    out = cmnode("run", "--help", env={"COLUMNS": "200"})
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    flags = ["listen_address", "port", "queue_size", "worker_count", "log_level", "log_format", "data_dir", "p2p_port",
             "bootstrap", "mdns", "docker_host", "pull_timeout", "retention", "rpc_token", "config"]  # fmt: skip
    for name in flags:
        assert f"--{name.replace('_', '-')}" in text
        assert f"[env: CMNODE_{name.upper()}]" in text
    assert "flags win over the environment, which wins over the file" in text


@pytest.mark.slow
def test_run_help_is_made_from_config() -> None:
    """The flags of ``cmnode run --help`` are Config's fields (and --config), each with its variable and default."""
    out = cmnode("run", "--help", env={"COLUMNS": "300"})
    assert out.returncode == 0
    lines = {m.group(1): m.group(2) for m in re.finditer(r"│ (--[a-z0-9-]+)[^│]*?  (\S[^│]*?)\s*│", out.stdout)}
    specs = settings(Config).values()
    assert set(lines) == {spec.flag for spec in specs} | {"--config"}
    for spec in specs:
        assert f"[env: {spec.env}]" in lines[spec.flag]
        assert (f"[default: {spec.shown_default}]" in lines[spec.flag]) == bool(spec.shown_default)


def test_readme_table_lists_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table(Config) in readme, "README's settings table is stale: paste node.config.settings_table()"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Extended(Config):
    """Config with one more field, declared as a new setting is: nothing else is edited."""

    shiny: Annotated[int, Setting("A new knob", check=between(1, 9))] = 7


def run_extended(args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> tuple[Any, str]:
    """``cmnode run ARGS`` for ``Extended``, in this process: the exit code or the Config it would start with."""
    for name in [name for name in os.environ if name.startswith("CMNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started: list[Config] = []

    def start(config: Config) -> int:
        started.append(config)
        return 0

    app = cyclopts.App(name="cmnode")
    app.command(run_command(Extended, start=start), name="run")
    console = Console(file=io.StringIO(), width=300)
    code = app(["run", *args], console=console, exit_on_error=False, print_error=False, result_action="return_value")
    assert isinstance(console.file, io.StringIO)
    return (started[0] if started else code), console.file.getvalue()


def test_a_new_field_is_a_flag_a_variable_and_a_toml_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_extended([], monkeypatch, tmp_path)[0].shiny == 7
    assert run_extended(["--shiny", "3"], monkeypatch, tmp_path)[0].shiny == 3
    assert run_extended([], monkeypatch, tmp_path, CMNODE_SHINY="4")[0].shiny == 4
    assert run_extended(["--shiny", "3"], monkeypatch, tmp_path, CMNODE_SHINY="4")[0].shiny == 3
    toml = tmp_path / "config.toml"
    toml.write_text("shiny = 5\nqueue-size = 6\n")
    from_file = run_extended(["--config", str(toml)], monkeypatch, tmp_path)[0]
    assert (from_file.shiny, from_file.queue_size) == (5, 6)
    toml.write_text("[cmnode]\nshiny = 10\n")
    assert run_extended(["--config", str(toml)], monkeypatch, tmp_path)[0] == 2
    assert capsys.readouterr().err == f"cmnode: {toml}: invalid shiny: 10 (must be 1 to 9)\n"
    assert run_extended([], monkeypatch, tmp_path, CMNODE_SHINY="many")[0] == 2
    assert capsys.readouterr().err == "cmnode: CMNODE_SHINY: invalid value 'many' for shiny\n"

    _, text = run_extended(["--help"], monkeypatch, tmp_path)
    assert re.search(r"--shiny INT +A new knob\. \[env: CMNODE_SHINY\] \[default: 7\]", text), text
    assert "--port INT" in text  # and the inherited settings stay
    assert "| `--shiny` | `7` | A new knob |" in settings_table(Extended)


def test_a_field_without_its_setting_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Bare(Config):
        extra: int = 1

    with pytest.raises(TypeError, match=r"Bare\.extra is not Annotated with a Setting"):
        settings(Bare)
