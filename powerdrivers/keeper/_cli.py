"""The keeper's command-line verbs: ``keep``, ``policy``, ``history`` and ``quarantine clear``.

Registered into the ``powerdrivers`` parser by :func:`register_keeper_commands`. Only the
handlers import the store (and so SQLAlchemy): ``powerdrivers --help`` stays light.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from powerdrivers import InvalidOption, parse_count, parse_duration, redact_uri
from powerdrivers._cli_support import EXIT_OK, argument, connect, emit, output_format, positive_seconds
from powerdrivers._output import print_json_line
from powerdrivers.keeper._model import HistoryRecord, InstanceView, Policy
from powerdrivers.keeper._paths import STORE_VARIABLE, default_store_url

if TYPE_CHECKING:
    from powerdrivers.keeper._keeper import Keeper
    from powerdrivers.keeper._store import SqlStore

#: Adds one subcommand to the ``powerdrivers`` parser: name, handler, help text.
CommandAdder = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]

_MAX_HISTORY = 100_000
_HISTORY_COLUMNS = (
    "TIME", "KIND", "FROM", "TO", "TRANSITION", "NATIVE", "CAUSE", "OPERATION", "OUTCOME", "BY", "DETAIL"
)  # fmt: skip


def register_keeper_commands(command: CommandAdder) -> None:
    """Add the keeper's verbs through the core parser's ``command`` function."""
    keep = command(
        "keep", _cmd_keep, "keep instances at their run policy, in the foreground, until interrupted"
    )
    keep.add_argument(
        "--resync", type=positive_seconds, default=60.0, metavar="S", help="full resync every S; default 60"
    )
    keep.add_argument("--host", metavar="NAME", help="this host's name in the store; default HOSTNAME/URI")
    keep.add_argument(
        "--vcpu-sample-interval",
        type=_seconds,
        default=15.0,
        metavar="S",
        help="sample the running instances' VCPUs every S (0: never); default 15",
    )
    keep.add_argument(
        "--vcpu-retention",
        type=positive_seconds,
        default=86400.0,
        metavar="S",
        help="keep VCPU samples for S; default 86400 (a day)",
    )
    policy = command("policy", _cmd_policy, "set an instance's run policy (the keeper acts on it)")
    policy.add_argument("id", metavar="ID")
    policy.add_argument(
        "policy", choices=[p.value for p in Policy], metavar="|".join(p.value for p in Policy)
    )
    history = command("history", _cmd_history, "show an instance's history, oldest first")
    history.add_argument("id", metavar="ID")
    history.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="the N latest records; default 50"
    )
    quarantine = command(
        "quarantine", _cmd_quarantine_clear, "end an instance's quarantine: quarantine clear ID"
    )
    quarantine.add_argument("verb", choices=["clear"], metavar="clear")
    quarantine.add_argument("id", metavar="ID")
    for sub in (keep, policy, history, quarantine):
        sub.add_argument("--store", metavar="URL", help=f"the keeper's database (or ${STORE_VARIABLE})")


def _seconds(text: str) -> float:
    return argument(parse_duration, text)


def _limit(text: str) -> int:
    return argument(lambda label, value: parse_count(label, value, minimum=1, maximum=_MAX_HISTORY), text)


# -- handlers -----------------------------------------------------------------------------------


def _cmd_keep(options: argparse.Namespace) -> int:
    from powerdrivers.keeper._keeper import Keeper
    from powerdrivers.keeper._settings import KeeperSettings

    settings = KeeperSettings.from_options(
        resync_interval=options.resync,
        vcpu_sample_interval=options.vcpu_sample_interval,
        vcpu_retention=options.vcpu_retention,
    )
    store = _open(options)
    try:
        with connect(options) as driver:
            host = (
                options.host
                or f"{socket.gethostname()}/{redact_uri(driver.uri) if driver.uri else driver.name}"
            )
            keeper = Keeper(store, {host: driver}, settings)
            _run_until_signalled(keeper, lambda: _announce(options, store.redacted_url, host, driver.name))
    finally:
        store.close()
    return EXIT_OK


def _announce(options: argparse.Namespace, store: str, host: str, driver: str) -> None:
    if output_format(options) == "json":
        print_json_line({"store": store, "host": host, "driver": driver}, sys.stdout)
    else:
        sys.stdout.write(f"store: {store}\nhost: {host} (driver {driver})\n")
        sys.stdout.flush()
    if sys.stderr.isatty():
        sys.stderr.write("powerdrivers: keeping (Ctrl-C to stop)\n")


def _run_until_signalled(keeper: Keeper, started: Callable[[], None]) -> None:
    """Run the keeper until SIGINT or SIGTERM, then stop it cleanly; ``started`` once it runs."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        keeper.start()
        started()
        while not stop.wait(0.5):
            pass
    finally:
        keeper.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cmd_policy(options: argparse.Namespace) -> int:
    store = _open(options)
    try:
        view = store.set_policy(_resolve(store, options.id), Policy(options.policy), _requester())
    finally:
        store.close()
    _print_views([view], options)
    return EXIT_OK


def _cmd_quarantine_clear(options: argparse.Namespace) -> int:
    from powerdrivers.keeper._handoff import utcnow

    store = _open(options)
    try:
        view = store.release_quarantine(_resolve(store, options.id), _requester(), utcnow())
    finally:
        store.close()
    _print_views([view], options)
    return EXIT_OK


def _cmd_history(options: argparse.Namespace) -> int:
    store = _open(options)
    try:
        found = list(reversed(store.history(_history_id(store, options.id), options.limit)))
    finally:
        store.close()
    emit(
        options,
        [record.to_dict() for record in found],
        _HISTORY_COLUMNS,
        [_history_row(record) for record in found],
    )
    return EXIT_OK


def _history_row(record: HistoryRecord) -> tuple[object, ...]:
    native = "/".join(part for part in (record.native_state, record.native_reason) if part)
    return (
        record.time.isoformat(timespec="milliseconds"),
        record.kind.value,
        record.from_state.value if record.from_state else "-",
        record.to_state.value if record.to_state else "-",
        record.transition.value if record.transition else "-",
        native or "-",
        record.cause.value if record.cause else "-",
        record.operation or "-",
        record.outcome or "-",
        record.requested_by or "-",
        record.detail or "-",
    )


def _print_views(views: list[InstanceView], options: argparse.Namespace) -> None:
    emit(
        options,
        views[0].to_dict() if len(views) == 1 else [view.to_dict() for view in views],
        ("ID", "NAME", "HOST", "POWER STATE", "POLICY", "QUARANTINED", "FAILURES", "BACKOFF UNTIL", "STALE"),
        [
            (
                v.id,
                v.name,
                v.host,
                v.power_state.value,
                v.policy.value,
                v.fault or v.quarantined,
                v.failures,
                v.backoff_until.isoformat(timespec="seconds") if v.backoff_until else "-",
                v.stale,
            )
            for v in views
        ],
    )


# -- the store ----------------------------------------------------------------------------------


def _open(options: argparse.Namespace) -> SqlStore:
    from powerdrivers.keeper._store import open_store

    return open_store(getattr(options, "store", None) or default_store_url())


def _resolve(store: SqlStore, ref: str) -> str:
    """Return the id of the instance ``ref`` names: an id, or a name only one instance has."""
    from powerdrivers.keeper._errors import UnknownInstance

    try:
        return store.instance(ref).id
    except UnknownInstance:
        named = [view.id for view in store.instances() if view.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise InvalidOption(f"{len(named)} instances are named {ref!r}: give the id") from None
        raise


def _history_id(store: SqlStore, ref: str) -> str:
    """Return the id whose history ``ref`` names: a vanished instance's history stays readable by id."""
    from powerdrivers.keeper._errors import UnknownInstance

    try:
        return _resolve(store, ref)
    except UnknownInstance:
        return ref  # the store's history says whether it knows the id at all


def _requester() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user} (cli)"
