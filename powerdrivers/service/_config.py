"""The service's configuration: one TOML file, checked in full before anything starts.

Every mistake is one line naming the file, the line and the key (``service.toml line 7:
hosts[2].uri: ...``): a typo in a key name is refused rather than ignored. Secrets (host
passwords, API tokens, the store's password) are referenced, never written inline: by an
environment variable (``*_env``) or a file readable by its owner only (``*_file``).
"""

from __future__ import annotations

import enum
import importlib.metadata
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from powerdrivers import (
    MAX_DURATION_S,
    ConfigurationError,
    InvalidOption,
    Secret,
    parse_duration,
    redact_uri,
)
from powerdrivers._secrets import SECRET_NAMES
from powerdrivers.keeper._settings import KeeperSettings, check_identity
from powerdrivers.service._config_secrets import SecretReferenceError, secret_from_env, secret_from_file

#: Where the service listens when the config names no ``listen``.
DEFAULT_LISTEN: Final = "127.0.0.1:8080"
#: Seconds between tries to claim the hosts another process owns (or that failed to load).
DEFAULT_TAKEOVER_INTERVAL: Final = 1.0
#: The shortest API token accepted: a guessable token is no token.
MIN_TOKEN_LENGTH: Final = 16
#: The largest config file read.
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024

_TOP_KEYS = frozenset(
    {"store", "store_password_env", "store_password_file", "listen", "takeover_interval", "hosts", "tokens"}
    | {"keeper"}
)
_HOST_KEYS = frozenset({"name", "driver", "uri", "options", "password_env", "password_file"})
_TOKEN_KEYS = frozenset({"name", "role", "value_env", "value_file"})
#: Keys that would hold a secret inline, and where the secret goes instead.
_INLINE_SECRETS = {
    "": {"store_password": "store_password_env or store_password_file"},
    "hosts": {"password": "password_env or password_file"},
    "tokens": {"value": "value_env or value_file", "token": "value_env or value_file"},
}
_DRIVER_GROUP: Final = "powerdrivers.drivers"


class Role(enum.StrEnum):
    """What an API token may do: read everything, or also change policies and ask for actions."""

    READER = "reader"
    OPERATOR = "operator"


class ConfigFileError(ConfigurationError):
    """The service's config file cannot be used: one line naming the file, the line and the key."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One hypervisor host of the fleet: how to load its driver."""

    name: str
    driver: str
    uri: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    password: Secret | None = None

    def driver_options(self) -> dict[str, Any]:
        """Return the options to load the driver with (the password as a ``Secret``, if any)."""
        options = dict(self.options)
        if self.password is not None:
            options["password"] = self.password
        return options


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """One API token: its name (recorded as who asked), its role and its value."""

    name: str
    role: Role
    value: Secret


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The whole checked config. ``store`` never holds a password; ``store_url()`` fills it in."""

    path: Path
    store: str
    listen_host: str
    listen_port: int
    hosts: tuple[HostConfig, ...]
    tokens: tuple[TokenConfig, ...]
    keeper: KeeperSettings = field(default_factory=KeeperSettings)
    takeover_interval: float = DEFAULT_TAKEOVER_INTERVAL
    store_password: Secret | None = None

    def store_url(self) -> str:
        """Return the store URL with its password filled in: to open the store, never to show."""
        if self.store_password is None:
            return self.store
        from sqlalchemy.engine import make_url

        url = make_url(self.store).set(password=self.store_password.reveal())
        return url.render_as_string(hide_password=False)

    @property
    def redacted_store(self) -> str:
        """The store URL as shown in logs and messages."""
        return redact_uri(self.store)


def load_config(path: str | os.PathLike[str]) -> ServiceConfig:
    """Read and check the config file at ``path``; return it with every secret read.

    Raises ``ConfigFileError`` (one line: file, line, key, what is wrong) for anything wrong:
    a TOML syntax error, an unknown key, a missing or bad value, an inline secret, a secret
    that cannot be read, a duplicate name or token, a driver that is not installed.
    """
    file = Path(path)
    try:
        with file.open("rb") as opened:
            raw = opened.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigFileError(f"{file}: cannot read the service config: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"{file}: the service config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigFileError(f"{file}: the service config is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{file}: {' '.join(str(error).split())}") from None
    return _Checker(file, text).check(document)


class _Lines:
    """Find the line of a key in the config text (``tomllib`` gives no positions)."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()

    def find(self, table: str, index: int | None, key: str | None) -> int:
        """Return the line (from 1) of ``key`` in the ``index``-th (from 1) ``[[table]]`` or ``[table]``.

        ``table`` empty means the top level; ``key`` None the table's header. Falls back to the
        table's header, then to line 1.
        """
        start, end = self._section(table, index)
        if key is not None:
            pattern = re.compile(
                rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[=.]"""
            )
            for number in range(start, end):
                if pattern.match(self._lines[number]):
                    return number + 1
        return start if table else 1

    def _section(self, table: str, index: int | None) -> tuple[int, int]:
        headers = [n for n, line in enumerate(self._lines) if re.match(r"^\s*\[", line)]
        if not table:
            return 0, headers[0] if headers else len(self._lines)
        array = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
        single = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]")
        matching = [n for n in headers if (array if index is not None else single).match(self._lines[n])]
        position = (index or 1) - 1
        if position >= len(matching):
            return 0, 0
        header = matching[position]
        following = [n for n in headers if n > header]
        return header + 1, following[0] if following else len(self._lines)


class _Checker:
    """Check one parsed document, raising ``ConfigFileError`` at the first mistake."""

    def __init__(self, file: Path, text: str) -> None:
        self._file = file
        self._lines = _Lines(text)

    def fail(self, table: str, index: int | None, key: str | None, message: str) -> ConfigFileError:
        """Return the error for ``message`` about ``key`` of the ``index``-th ``table``."""
        line = self._lines.find(table, index, key)
        where = table + (f"[{index}]" if index is not None else "")
        label = ".".join(part for part in (where, key) if part) or "config"
        return ConfigFileError(f"{self._file} line {line}: {label}: {' '.join(message.split())}")

    def check(self, document: dict[str, Any]) -> ServiceConfig:
        """Return the checked config of ``document``."""
        self._keys(document, "", None, _TOP_KEYS)
        store = self._store(document)
        store_password = self._secret(document, "", None, "store_password", required=False)
        host, port = self._listen(document.get("listen", DEFAULT_LISTEN))
        takeover = self._number(
            "takeover_interval",
            lambda: parse_duration(
                "takeover_interval",
                document.get("takeover_interval", DEFAULT_TAKEOVER_INTERVAL),
                positive=True,
                maximum=MAX_DURATION_S,
            ),
        )
        hosts = tuple(self._host(entry, n) for n, entry in enumerate(self._array(document, "hosts"), 1))
        tokens = tuple(self._token(entry, n) for n, entry in enumerate(self._array(document, "tokens"), 1))
        self._unique([h.name for h in hosts], "hosts", "name", "host name")
        self._unique([t.name for t in tokens], "tokens", "name", "token name")
        values = [t.value.reveal() for t in tokens]
        for position, value in enumerate(values):
            if value in values[:position]:
                entry = tokens[position]
                key = "value_env" if "value_env" in document["tokens"][position] else "value_file"
                raise self.fail(
                    "tokens", position + 1, key, f"token {entry.name!r} has the same value as another token"
                )
        return ServiceConfig(
            path=self._file,
            store=store,
            listen_host=host,
            listen_port=port,
            hosts=hosts,
            tokens=tokens,
            keeper=self._keeper(document.get("keeper", {})),
            takeover_interval=takeover,
            store_password=store_password,
        )

    # -- sections -----------------------------------------------------------------------------

    def _keys(self, entry: Mapping[str, Any], table: str, index: int | None, allowed: frozenset[str]) -> None:
        for key in entry:
            inline = _INLINE_SECRETS.get(table, {})
            if key in inline:
                raise self.fail(table, index, key, f"secrets are never written inline: use {inline[key]}")
            if key not in allowed:
                raise self.fail(table, index, key, f"unknown key; known keys: {', '.join(sorted(allowed))}")

    def _array(self, document: Mapping[str, Any], table: str) -> list[dict[str, Any]]:
        entries = document.get(table)
        if entries is None:
            raise self.fail("", None, None, f"at least one [[{table}]] table is needed")
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise self.fail("", None, table, f"write each of {table} as a [[{table}]] table")
        if not entries:
            raise self.fail("", None, table, f"at least one [[{table}]] table is needed")
        return entries

    def _store(self, document: Mapping[str, Any]) -> str:
        store = document.get("store")
        if store is None:
            raise self.fail("", None, None, "the key store (the database URL) is missing")
        if not isinstance(store, str) or not store.strip():
            raise self.fail(
                "", None, "store", "must be a database URL (sqlite:///... or postgresql+psycopg://...)"
            )
        store = store.strip()
        scheme = store.partition("://")[0]
        if not store.partition("://")[1] or scheme.split("+")[0] not in ("sqlite", "postgresql"):
            raise self.fail(
                "",
                None,
                "store",
                f"must be sqlite:///... or postgresql+psycopg://..., not {redact_uri(store)!r}",
            )
        if redact_uri(store) != store:
            raise self.fail(
                "", None, "store", "holds a password: use store_password_env or store_password_file"
            )
        return store

    def _listen(self, value: object) -> tuple[str, int]:
        text = value if isinstance(value, str) else ""
        matched = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.\-]+):(\d{1,5})", text.strip())
        if matched is None:
            raise self.fail("", None, "listen", f"must be HOST:PORT (e.g. {DEFAULT_LISTEN}), not {value!r}")
        host = matched.group(1) or matched.group(3)
        port = int(matched.group(2) or matched.group(4))
        if not 1 <= port <= 65535:
            raise self.fail("", None, "listen", f"the port must be 1 to 65535, not {port}")
        return host, port

    def _host(self, entry: dict[str, Any], index: int) -> HostConfig:
        self._keys(entry, "hosts", index, _HOST_KEYS)
        name = self._name(entry, "hosts", index)
        driver = entry.get("driver")
        if not isinstance(driver, str) or not driver.strip():
            raise self.fail("hosts", index, "driver" if "driver" in entry else None, "needs a driver name")
        installed = sorted({point.name for point in importlib.metadata.entry_points(group=_DRIVER_GROUP)})
        if driver.strip() not in installed:
            raise self.fail(
                "hosts",
                index,
                "driver",
                f"no driver named {driver[:40]!r} is installed; installed: {', '.join(installed) or 'none'}",
            )
        uri = entry.get("uri")
        if uri is not None and (not isinstance(uri, str) or not uri.strip()):
            raise self.fail("hosts", index, "uri", "must be a non-empty string")
        if isinstance(uri, str) and redact_uri(uri) != uri:
            raise self.fail("hosts", index, "uri", "holds a password: use password_env or password_file")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise self.fail("hosts", index, "options", "must be a table, e.g. { keepalive_interval = 5 }")
        for key, value in options.items():
            if key in SECRET_NAMES:
                raise self.fail(
                    "hosts",
                    index,
                    "options",
                    f"{key}: secrets are never inline: use password_env or password_file",
                )
            if not isinstance(value, (str, int, float, bool)):
                raise self.fail("hosts", index, "options", f"{key}: must be a string, number or boolean")
        password = self._secret(entry, "hosts", index, "password", required=False)
        return HostConfig(name, driver.strip(), uri.strip() if uri else None, dict(options), password)

    def _token(self, entry: dict[str, Any], index: int) -> TokenConfig:
        self._keys(entry, "tokens", index, _TOKEN_KEYS)
        name = self._name(entry, "tokens", index)
        try:
            role = Role(str(entry.get("role")))
        except ValueError:
            key = "role" if "role" in entry else None
            raise self.fail("tokens", index, key, "role must be reader or operator") from None
        value = self._secret(entry, "tokens", index, "value", required=True)
        assert value is not None  # required
        if len(value.reveal()) < MIN_TOKEN_LENGTH:
            key = "value_env" if "value_env" in entry else "value_file"
            raise self.fail("tokens", index, key, f"the token is shorter than {MIN_TOKEN_LENGTH} characters")
        return TokenConfig(name, role, value)

    def _keeper(self, table: object) -> KeeperSettings:
        if not isinstance(table, dict):
            raise self.fail("", None, "keeper", "write the keeper's settings as a [keeper] table")
        try:
            return KeeperSettings.from_options(**table)
        except InvalidOption as whole:
            # Name the key at fault where it alone says what the whole table does. Checked after
            # the whole table: a key alone meets the others' defaults (vcpu_sample_interval = 0.1
            # is refused with the default vcpu_retention, and fine with the one written beside it).
            for key, value in table.items():
                try:
                    KeeperSettings.from_options(**{key: value})
                except InvalidOption as alone:
                    if str(alone) == str(whole):
                        raise self.fail("keeper", None, key, str(whole)) from None
            raise self.fail("keeper", None, None, str(whole)) from None

    # -- values -------------------------------------------------------------------------------

    def _name(self, entry: Mapping[str, Any], table: str, index: int) -> str:
        if "name" not in entry:
            raise self.fail(table, index, None, "needs a name")
        try:
            return check_identity("name", entry["name"])
        except InvalidOption as error:
            raise self.fail(table, index, "name", str(error)) from None

    def _secret(
        self, entry: Mapping[str, Any], table: str, index: int | None, stem: str, *, required: bool
    ) -> Secret | None:
        given = [key for key in (f"{stem}_env", f"{stem}_file") if key in entry]
        if len(given) > 1:
            raise self.fail(table, index, given[1], f"give {stem}_env or {stem}_file, not both")
        if not given:
            if required:
                raise self.fail(table, index, None, f"needs {stem}_env or {stem}_file")
            return None
        key = given[0]
        reference = entry[key]
        if not isinstance(reference, str) or not reference.strip() or "\0" in reference:
            raise self.fail(table, index, key, "must be a non-empty string")
        try:
            if key.endswith("_env"):
                return secret_from_env(reference.strip())
            path = Path(reference.strip()).expanduser()
            return secret_from_file(path if path.is_absolute() else self._file.parent / path)
        except SecretReferenceError as error:
            raise self.fail(table, index, key, str(error)) from None

    def _number(self, key: str, parse: Callable[[], float]) -> float:
        try:
            return parse()
        except InvalidOption as error:
            raise self.fail("", None, key, str(error)) from None

    def _unique(self, names: list[str], table: str, key: str, what: str) -> None:
        for position, name in enumerate(names):
            if name in names[:position]:
                raise self.fail(table, position + 1, key, f"duplicate {what} {name!r}")
