"""The service's config file: every mistake is one line naming the file, the line and the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from powerdrivers import Secret
from powerdrivers.keeper import KeeperSettings
from powerdrivers.service._config import ConfigFileError, Role, ServiceConfig, load_config

_TOKEN = "operator-token-value-0123456789"
_READER = "reader-token-value-0123456789ab"


def _write(directory: Path, text: str, *, tokens: bool = True) -> Path:
    """Write a config: ``text`` then (unless ``tokens`` is False) two token tables by file."""
    for name, value in (("ops", _TOKEN), ("viewer", _READER)):
        secret = directory / f"{name}.token"
        secret.write_text(value + "\n")
        secret.chmod(0o600)
    if tokens:
        text += (
            '\n[[tokens]]\nname = "ops"\nrole = "operator"\nvalue_file = "ops.token"\n'
            '\n[[tokens]]\nname = "viewer"\nrole = "reader"\nvalue_file = "viewer.token"\n'
        )
    path = directory / "service.toml"
    path.write_text(text)
    return path


_GOOD = """\
store = "sqlite:///state.db"
listen = "127.0.0.1:8081"
takeover_interval = 0.5

[keeper]
resync_interval = 30
quarantine_after = 5

[[hosts]]
name = "lab-1"
driver = "fake"
uri = "fake:///"
options = { guest_delay = 0.1 }
password_env = "PD_TEST_LAB1_PASSWORD"
"""


def _error(path: Path) -> str:
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_good_config_reads_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_TEST_LAB1_PASSWORD", "hunter2-lab")
    config = load_config(_write(tmp_path, _GOOD))
    assert isinstance(config, ServiceConfig)
    assert (config.listen_host, config.listen_port, config.takeover_interval) == ("127.0.0.1", 8081, 0.5)
    assert config.keeper == KeeperSettings.from_options(resync_interval=30, quarantine_after=5)
    (host,) = config.hosts
    assert (host.name, host.driver, host.uri, dict(host.options)) == (
        "lab-1",
        "fake",
        "fake:///",
        {"guest_delay": 0.1},
    )
    assert host.password == Secret("hunter2-lab")
    assert host.driver_options() == {"guest_delay": 0.1, "password": Secret("hunter2-lab")}
    assert [(t.name, t.role, t.value.reveal()) for t in config.tokens] == [
        ("ops", Role.OPERATOR, _TOKEN),
        ("viewer", Role.READER, _READER),
    ]
    assert config.store_url() == config.store == "sqlite:///state.db"
    shown = repr(config)
    for secret in ("hunter2-lab", _TOKEN, _READER):
        assert secret not in shown


def test_defaults(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, 'store = "sqlite:///s.db"\n[[hosts]]\nname = "a"\ndriver = "fake"\n')
    )
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert config.takeover_interval == 1.0
    assert config.keeper == KeeperSettings()
    assert config.hosts[0].uri is None and config.hosts[0].password is None


def test_the_store_password_is_referenced_and_filled_in_only_to_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_TEST_STORE_PW", "s3cret-db")
    config = load_config(
        _write(
            tmp_path,
            'store = "postgresql+psycopg://pd@db.example/pd"\nstore_password_env = "PD_TEST_STORE_PW"\n'
            '[[hosts]]\nname = "a"\ndriver = "fake"\n',
        )
    )
    assert config.store == "postgresql+psycopg://pd@db.example/pd"
    assert config.store_url() == "postgresql+psycopg://pd:s3cret-db@db.example/pd"
    assert "s3cret-db" not in repr(config) and "s3cret-db" not in config.redacted_store


_HOST = '[[hosts]]\nname = "a"\ndriver = "fake"\n'


@pytest.mark.parametrize(
    ("text", "line", "key", "says"),
    [
        (
            'store = "sqlite:///s.db"\nlisten = "127.0.0.1:8080"\nlisteen = "x"\n' + _HOST,
            3,
            "listeen",
            "unknown key",
        ),
        (
            'store = "sqlite:///s.db"\n' + _HOST + 'uri = "fake:///"\nurl = "x"\n',
            6,
            "hosts[1].url",
            "unknown key",
        ),
        (
            'store = "sqlite:///s.db"\n' + _HOST + _HOST + 'pasword_env = "X"\n',
            8,
            "hosts[2].pasword_env",
            "unknown",
        ),
        ('store = "sqlite:///s.db"\n' + _HOST + 'password = "hunter2"\n', 5, "hosts[1].password", "never"),
        ('store = "sqlite:///s.db"\nstore_password = "pw"\n' + _HOST, 2, "store_password", "never"),
        ('store = "postgresql://u:pw@db/x"\n' + _HOST, 1, "store", "holds a password"),
        (
            'store = "sqlite:///s.db"\n' + _HOST + 'uri = "qemu+ssh://u:pw@h/system"\n',
            5,
            "hosts[1].uri",
            "password",
        ),
        (
            'store = "sqlite:///s.db"\n' + _HOST + "options = { password = 'pw' }\n",
            5,
            "hosts[1].options",
            "inline",
        ),
        ('store = "mysql://db/x"\n' + _HOST, 1, "store", "sqlite"),
        ('listen = "127.0.0.1:8080"\n' + _HOST, 1, "config", "store"),
        ('store = "sqlite:///s.db"\nlisten = "localhost"\n' + _HOST, 2, "listen", "HOST:PORT"),
        ('store = "sqlite:///s.db"\nlisten = "127.0.0.1:0"\n' + _HOST, 2, "listen", "1 to 65535"),
        ('store = "sqlite:///s.db"\nlisten = "127.0.0.1:70000"\n' + _HOST, 2, "listen", "1 to 65535"),
        ('store = "sqlite:///s.db"\ntakeover_interval = -1\n' + _HOST, 2, "takeover_interval", "takeover"),
        ('store = "sqlite:///s.db"\n', 1, "config", "[[hosts]]"),
        (
            'store = "sqlite:///s.db"\n[[hosts]]\nname = "a"\ndriver = "nosuch"\n',
            4,
            "hosts[1].driver",
            "fake",
        ),
        ('store = "sqlite:///s.db"\n[[hosts]]\nname = "a"\n', 2, "hosts[1]", "driver"),
        ('store = "sqlite:///s.db"\n[[hosts]]\ndriver = "fake"\n', 2, "hosts[1]", "name"),
        ('store = "sqlite:///s.db"\n' + _HOST + _HOST, 6, "hosts[2].name", "duplicate host name 'a'"),
        ('store = "sqlite:///s.db"\n' + _HOST + "options = 3\n", 5, "hosts[1].options", "table"),
        (
            'store = "sqlite:///s.db"\n[keeper]\nresync_interval = -5\n' + _HOST,
            3,
            "keeper.resync_interval",
            "resync",
        ),
        (
            'store = "sqlite:///s.db"\n[keeper]\nresync_intervall = 5\n' + _HOST,
            3,
            "keeper.resync_intervall",
            "unknown",
        ),
        (
            'store = "sqlite:///s.db"\n' + _HOST + 'password_env = "PD_TEST_UNSET_VAR"\n',
            5,
            "hosts[1].password_env",
            "not set",
        ),
        (
            'store = "sqlite:///s.db"\n' + _HOST + 'password_file = "missing.pw"\n',
            5,
            "hosts[1].password_file",
            "does not exist",
        ),
        (
            'store = "sqlite:///s.db"\n' + _HOST + 'password_env = "A"\npassword_file = "b"\n',
            6,
            "hosts[1].password_file",
            "not both",
        ),
    ],
)
def test_a_bad_config_names_the_line_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, key: str, says: str
) -> None:
    monkeypatch.delenv("PD_TEST_UNSET_VAR", raising=False)
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path} line {line}: {key}: "), message
    assert says in message


@pytest.mark.parametrize(
    ("tokens", "line", "key", "says"),
    [
        (
            '[[tokens]]\nname = "x"\nrole = "admin"\nvalue_file = "ops.token"\n',
            7,
            "tokens[1].role",
            "reader or operator",
        ),
        (
            '[[tokens]]\nname = "x"\nrole = "reader"\nvalue = "inline-token-0123456789"\n',
            8,
            "tokens[1].value",
            "never",
        ),
        ('[[tokens]]\nname = "x"\nrole = "reader"\n', 5, "tokens[1]", "value_env or value_file"),
        (
            '[[tokens]]\nname = "x"\nrole = "reader"\nvalue_env = "PD_TEST_SHORT"\n',
            8,
            "tokens[1].value_env",
            "shorter",
        ),
        (
            '[[tokens]]\nname = "x"\nrole = "reader"\nvalue_file = "ops.token"\n'
            '[[tokens]]\nname = "x"\nrole = "reader"\nvalue_file = "viewer.token"\n',
            10,
            "tokens[2].name",
            "duplicate token name",
        ),
        (
            '[[tokens]]\nname = "x"\nrole = "reader"\nvalue_file = "ops.token"\n'
            '[[tokens]]\nname = "y"\nrole = "operator"\nvalue_env = "PD_TEST_SAME"\n',
            12,
            "tokens[2].value_env",
            "same value",
        ),
        ("", 1, "config", "[[tokens]]"),
    ],
)
def test_bad_tokens_name_the_line_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokens: str, line: int, key: str, says: str
) -> None:
    monkeypatch.setenv("PD_TEST_SHORT", "short")
    monkeypatch.setenv("PD_TEST_SAME", _TOKEN)
    path = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + tokens, tokens=False)
    message = _error(path)
    assert message.startswith(f"{path} line {line}: {key}: "), message
    assert says in message
    assert _TOKEN not in message and "inline-token" not in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST)
    (tmp_path / "viewer.token").chmod(mode)
    message = _error(path)
    assert (
        f"line 14: tokens[2].value_file: secret file {tmp_path / 'viewer.token'} is readable by group"
        in message
    )
    assert f"(mode {mode:04o})" in message and "chmod 600" in message and _READER not in message


def test_secret_files_that_are_empty_or_not_files_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST)
    (tmp_path / "ops.token").write_text("\n")
    assert "is empty" in _error(path)
    (tmp_path / "ops.token").unlink()
    (tmp_path / "ops.token").mkdir(mode=0o700)
    assert "not a regular file" in _error(path)


def test_a_toml_syntax_error_keeps_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'store = "sqlite:///s.db"\nlisten = \n' + _HOST, tokens=False)
    message = _error(path)
    assert message.startswith(f"{path}: ") and "line 2" in message


def test_an_unreadable_config_is_one_line(tmp_path: Path) -> None:
    message = _error(tmp_path / "absent.toml")
    assert message == f"{tmp_path / 'absent.toml'}: cannot read the service config: No such file or directory"


def test_the_cli_says_one_line_and_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + 'password = "hunter2"\n')
    done = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CI": os.environ.get("CI", "")},
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"powerdrivers: error: {path} line 5: hosts[1].password: "
        "secrets are never written inline: use password_env or password_file\n"
    )
    assert "hunter2" not in done.stderr


def test_the_documented_example_is_a_valid_config_with_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).parents[2] / "docs" / "examples" / "service.toml"
    token = tmp_path / "dashboard.token"
    token.write_text(_READER)
    token.chmod(0o600)
    text = example.read_text().replace("/etc/powerdrivers/dashboard.token", str(token))
    text = text.replace('driver = "libvirt"', 'driver = "fake"').replace(
        "keepalive_interval = 5", "latency = 0"
    )
    for variable, value in (
        ("PD_STORE_PASSWORD", "db-pw"),
        ("LAB1_PASSWORD", "lab-pw"),
        ("PD_OPS_TOKEN", _TOKEN),
    ):
        monkeypatch.setenv(variable, value)
    (tmp_path / "service.toml").write_text(text)
    config = load_config(tmp_path / "service.toml")
    assert config.keeper == KeeperSettings()
    assert [host.name for host in config.hosts] == ["lab-1", "lab-2"]
    assert [(token.name, token.role) for token in config.tokens] == [
        ("ops", Role.OPERATOR),
        ("dashboard", Role.READER),
    ]
    documented = {
        line.split("=")[0].strip("# ").strip() for line in example.read_text().splitlines() if "=" in line
    }
    assert set(KeeperSettings.__dataclass_fields__) <= documented


def test_secret_references_that_cannot_be_used_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_TEST_BLANK", "   ")
    blank = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + 'password_env = "PD_TEST_BLANK"\n')
    assert "environment variable PD_TEST_BLANK is not set or empty" in _error(blank)
    secret = tmp_path / "host.pw"
    path = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + 'password_file = "host.pw"\n')
    for content, says in (
        (b"x" * 5000, "larger than 4096 bytes"),
        (b"\xff\xfe", "not UTF-8"),
        (b"one\ntwo\n", "one line"),
    ):
        secret.write_bytes(content)
        secret.chmod(0o600)
        message = _error(path)
        assert (
            message.startswith(f"{path} line 5: hosts[1].password_file: secret file {secret} ")
            and says in message
        )
    secret.write_text("hunter2\n")
    secret.chmod(0o400)
    assert load_config(path).hosts[0].password == Secret("hunter2")
    empty_reference = _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + 'password_file = ""\n')
    assert "hosts[1].password_file: must be a non-empty string" in _error(empty_reference)


def test_the_vcpu_settings_are_checked_together_and_name_the_key_at_fault(tmp_path: Path) -> None:
    sampled = "[keeper]\nvcpu_sample_interval = 0.1\nvcpu_retention = 600\n"
    config = load_config(_write(tmp_path, 'store = "sqlite:///s.db"\n' + sampled + _HOST))
    assert (config.keeper.vcpu_sample_interval, config.keeper.vcpu_retention) == (0.1, 600.0)
    off = load_config(
        _write(tmp_path, 'store = "sqlite:///s.db"\n[keeper]\nvcpu_sample_interval = 0\n' + _HOST)
    )
    assert off.keeper.vcpu_sample_interval == 0.0
    # Alone, 0.1 s meets the default retention of a day: 864,000 samples per VCPU, too many.
    alone = "[keeper]\nvcpu_sample_interval = 0.1\n"
    message = _error(_write(tmp_path, 'store = "sqlite:///s.db"\n' + alone + _HOST))
    assert " line 3: keeper.vcpu_sample_interval: vcpu_retention (86400 s) / vcpu_sample_interval" in message
    assert "100,000" in message
    message = _error(_write(tmp_path, 'store = "sqlite:///s.db"\n[keeper]\nvcpu_retention = -1\n' + _HOST))
    assert " line 3: keeper.vcpu_retention: " in message
    # The key named is the one at fault, not another that alone meets a default.
    typo = "[keeper]\nvcpu_sample_interval = 0.1\nvcpu_retenion = 600\n"
    message = _error(_write(tmp_path, 'store = "sqlite:///s.db"\n' + typo + _HOST))
    assert " line 4: keeper.vcpu_retenion: unknown keeper setting(s): vcpu_retenion" in message
    both = "[keeper]\nvcpu_sample_interval = 0.1\nvcpu_retention = 20000\n"
    message = _error(_write(tmp_path, 'store = "sqlite:///s.db"\n' + both + _HOST))
    assert " line 2: keeper: vcpu_retention (20000 s) / vcpu_sample_interval (0.1 s) keeps 200000" in message


def test_tables_written_the_wrong_way_are_refused(tmp_path: Path) -> None:
    assert "write each of hosts as a [[hosts]] table" in _error(
        _write(tmp_path, 'store = "sqlite:///s.db"\nhosts = 3\n')
    )
    assert "keeper: write the keeper's settings as a [keeper] table" in _error(
        _write(tmp_path, 'store = "sqlite:///s.db"\nkeeper = 3\n' + _HOST)
    )
    message = _error(_write(tmp_path, 'store = "sqlite:///s.db"\n[keeper]\nbackoff_base = 500\n' + _HOST))
    assert " line 3: keeper.backoff_base: backoff_base (500 s) must not exceed backoff_cap" in message
    both = "[keeper]\nbackoff_base = 100\nbackoff_cap = 50\n"
    message = _error(_write(tmp_path, 'store = "sqlite:///s.db"\n' + both + _HOST))
    assert " line 2: keeper: backoff_base (100 s) must not exceed backoff_cap (50 s)" in message
    assert "must be a non-empty string" in _error(
        _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + "uri = 5\n")
    )
    assert "options: latency: must be a string, number or boolean" in _error(
        _write(tmp_path, 'store = "sqlite:///s.db"\n' + _HOST + "options = { latency = [1] }\n")
    )
    assert "name must be printable text" in _error(
        _write(tmp_path, 'store = "sqlite:///s.db"\n[[hosts]]\nname = ""\ndriver = "fake"\n')
    )
    assert "listen: must be HOST:PORT" in _error(
        _write(tmp_path, 'store = "sqlite:///s.db"\nlisten = 80\n' + _HOST)
    )
    ipv6 = load_config(_write(tmp_path, 'store = "sqlite:///s.db"\nlisten = "[::1]:9000"\n' + _HOST))
    assert (ipv6.listen_host, ipv6.listen_port) == ("::1", 9000)


def test_the_package_loads_its_names_on_first_use() -> None:
    import powerdrivers.service as service

    assert service.load_config is load_config and service.Role is Role
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = service.Nothing
