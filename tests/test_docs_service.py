""" "Running the service" (docs/service.rst) and its examples say what the service does.

The example config loads and shows the defaults it claims; the page names every config key,
every metric and every error code the service has; the systemd unit keeps secrets off its
command line. (The API reference needs no test here: the page renders it from the app's own
OpenAPI document at build time.)
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from powerdrivers._cli_support import EXIT_USAGE
from powerdrivers.keeper._settings import KeeperSettings
from powerdrivers.service import _config, _http_errors, load_config
from powerdrivers.service._app import create_app
from powerdrivers.service._fleet import Fleet
from powerdrivers.service._metrics import FleetCollector

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "service.rst"
EXAMPLE = ROOT / "docs" / "examples" / "service.toml"
UNIT = ROOT / "docs" / "examples" / "powerdrivers.service"
SERVICE_SOURCES = sorted((ROOT / "powerdrivers" / "service").glob("*.py"))
#: The example's token file, an absolute path the test points at a file of its own.
EXAMPLE_TOKEN_FILE = "/etc/powerdrivers/dashboard.token"


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def _unstarted_fleet(tmp_path: Path) -> Fleet:
    config = _config.ServiceConfig(
        path=tmp_path / "service.toml",
        store=f"sqlite:///{tmp_path / 'never-opened.db'}",
        listen_host="127.0.0.1",
        listen_port=8080,
        hosts=(),
        tokens=(),
    )
    return Fleet(config)


def test_the_example_config_loads_with_the_defaults_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "dashboard.token"
    token_file.write_text("a-reader-token-of-the-docs-test\n")
    token_file.chmod(0o600)
    text = EXAMPLE.read_text(encoding="utf-8")
    assert EXAMPLE_TOKEN_FILE in text
    config_file = tmp_path / "service.toml"
    config_file.write_text(text.replace(EXAMPLE_TOKEN_FILE, str(token_file)))
    monkeypatch.setenv("PD_STORE_PASSWORD", "the-store-password")
    monkeypatch.setenv("LAB1_PASSWORD", "the-lab-1-password")
    monkeypatch.setenv("PD_OPS_TOKEN", "an-operator-token-of-the-docs-test")

    config = load_config(config_file)

    assert [(host.name, host.driver) for host in config.hosts] == [("lab-1", "libvirt"), ("lab-2", "fake")]
    assert config.hosts[0].options == {"keepalive_interval": 5}
    assert config.hosts[0].password is not None
    assert config.hosts[0].password.reveal() == "the-lab-1-password"
    assert [(token.name, token.role) for token in config.tokens] == [
        ("ops", _config.Role.OPERATOR),
        ("dashboard", _config.Role.READER),
    ]
    assert config.store_password is not None
    assert "the-store-password" not in config.redacted_store
    # "The keeper's settings (all optional; the defaults shown)", and the other defaults it names.
    assert config.keeper == KeeperSettings()
    assert f"{config.listen_host}:{config.listen_port}" == _config.DEFAULT_LISTEN
    assert config.takeover_interval == _config.DEFAULT_TAKEOVER_INTERVAL


@pytest.mark.parametrize(
    ("written", "replaced"),
    [
        ('uri = "fake:///var/lib/powerdrivers/lab-2.json"', 'uri = "fake://admin:hunter2@lab-2/state.json"'),
        ('listen = "127.0.0.1:8080"', 'listen = "nope"'),
        ("", ""),  # the token file open to others
    ],
)
def test_the_errors_the_page_shows_are_the_example_s_own(
    written: str, replaced: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "dashboard.token"
    token_file.write_text("a-reader-token-of-the-docs-test\n")
    token_file.chmod(0o600 if written else 0o644)
    text = EXAMPLE.read_text(encoding="utf-8")
    assert written in text
    (tmp_path / "service.toml").write_text(
        text.replace(written, replaced).replace(EXAMPLE_TOKEN_FILE, str(token_file))
    )
    monkeypatch.chdir(tmp_path)
    for variable in ("PD_STORE_PASSWORD", "LAB1_PASSWORD", "PD_OPS_TOKEN"):
        monkeypatch.setenv(variable, f"{variable.lower()}-of-the-docs-test")

    with pytest.raises(_config.ConfigFileError) as raised:
        load_config("service.toml")

    shown = f"powerdrivers: error: {raised.value}".replace(str(token_file), EXAMPLE_TOKEN_FILE)
    assert shown in _page()


def test_the_page_and_the_example_name_every_config_key() -> None:
    page = _page()
    example = EXAMPLE.read_text(encoding="utf-8")
    keys = _config._TOP_KEYS | _config._HOST_KEYS | _config._TOKEN_KEYS
    keys |= set(KeeperSettings.__dataclass_fields__)
    spellings = ("``{}``", "``[{}]``", "``[[{}]]``")
    assert sorted(key for key in keys if not any(form.format(key) in page for form in spellings)) == []
    written = set(re.findall(r"^[#\s]*\[*\s*(\w+)\s*[=\]]", example, re.MULTILINE))
    written |= set(re.findall(r"\{\s*(\w+)\s*=", example))
    assert sorted(keys - written) == []


def test_the_page_names_every_metric(tmp_path: Path) -> None:
    app = create_app(_unstarted_fleet(tmp_path))
    names = {family.name for family in app.state.metrics.registry.collect()}
    names |= {family.name for family in FleetCollector(app.state.fleet).describe()}
    assert len(names) >= 8
    page = _page()
    assert sorted(name for name in names if f"``{name}" not in page) == []


def test_the_page_names_every_error_code() -> None:
    given = {
        code
        for path in SERVICE_SOURCES
        for code in re.findall(r"""code=["'](\w+)["']""", path.read_text(encoding="utf-8"))
    }
    # The statuses answered with their default code (400, 409, 503 always come with one of their own).
    by_status = {_http_errors._CODES[status] for status in (401, 403, 404, 405, 413, 422, 500)}
    page = _page()
    assert given >= {"invalid_transition", "csrf", "store_unavailable"}
    assert sorted(code for code in given | by_status if f"``{code}``" not in page) == []


def test_the_systemd_unit_keeps_secrets_off_its_command_line() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    command = service["ExecStart"].split()
    assert command[1:] == ["serve", "--config", command[-1]]
    assert not re.search(r"password|token|secret|=", " ".join(command), re.IGNORECASE)
    assert "Environment" not in service
    assert service["EnvironmentFile"].startswith("/")
    assert service["User"] not in ("", "root")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EXIT_USAGE)
    assert "literalinclude:: examples/powerdrivers.service" in _page()
