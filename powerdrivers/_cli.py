"""The ``powerdrivers`` command line.

Exit codes: 0 ok; 1 operation failed (hypervisor error, timeout, a graceful
operation that timed out with forcing refused); 2 usage (bad flags, no or
unknown driver, broken plugin, bad URI or option); 3 instance not found;
4 invalid transition or unsupported operation; 5 connection or
authentication failure; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from powerdrivers._arguments import check_duration
from powerdrivers._cli_support import (
    ENV_DRIVER,
    ENV_PASSWORD,
    ENV_URI,
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    connect,
    count,
    driver_name,
    emit,
    exit_code_for,
    output_format,
    positive_seconds,
    seconds,
)
from powerdrivers._events import Event
from powerdrivers._exceptions import (
    OperationTimeout,
    PowerDriversError,
)
from powerdrivers._loader import available_drivers, load_driver_class
from powerdrivers._operations import OPERATION_TABLE, Operation
from powerdrivers._outcomes import OperationResult
from powerdrivers._output import print_json_line
from powerdrivers._progress import Progress
from powerdrivers._reading import InstanceReading
from powerdrivers._sampler import VcpuSampler
from powerdrivers._states import PowerState, Transition
from powerdrivers._vcpu import InstanceVcpuStats, VcpuStats

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "exit_code_for",
    "main",
]

_VERBS = {Operation.SHUTDOWN: "shut down", Operation.REBOOT: "reboot"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="powerdrivers: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        options = _build_parser().parse_args(arguments)
        return int(options.handler(options))
    except UsageError as error:
        return _fail(EXIT_USAGE, str(error), debug)
    except PowerDriversError as error:
        return _fail(exit_code_for(error), str(error), debug)
    except KeyboardInterrupt:
        sys.stderr.write("\npowerdrivers: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:
        return _fail(
            EXIT_FAILED, f"unexpected {type(error).__name__}: {error} (run with --debug for details)", debug
        )


def _fail(code: int, message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    sys.stderr.write(f"powerdrivers: error: {message}\n")
    return code


def _build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-d", "--driver", default=argparse.SUPPRESS, help=f"driver name (or ${ENV_DRIVER})")
    common.add_argument(
        "-c", "--connect", metavar="URI", default=argparse.SUPPRESS, help=f"URI (or ${ENV_URI})"
    )
    common.add_argument(
        "-o",
        "--option",
        metavar="KEY=VALUE",
        action="append",
        default=argparse.SUPPRESS,
        help="driver option; repeatable",
    )
    common.add_argument("-f", "--format", choices=("table", "json"), default=argparse.SUPPRESS)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks and debug log"
    )

    parser = _Parser(
        prog="powerdrivers",
        description="Read and change VM power states through any powerdrivers driver.",
        parents=[common],
        epilog=(
            f"Environment: {ENV_DRIVER}, {ENV_URI}, {ENV_PASSWORD} (a password is never a flag). "
            "Exit codes: 0 ok, 1 operation failed, 2 usage, 3 instance not found, "
            "4 invalid transition or unsupported operation, 5 connection or authentication failure."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> _Parser:
        sub: _Parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("drivers", _cmd_drivers, "list installed drivers and whether they load")
    command("states", _cmd_states, "show the power-state model and the operation table")
    command("list", _cmd_list, "list instances with their power states")
    command("info", _cmd_info, "show one instance").add_argument("id", metavar="ID")
    command("start", _simple("start", "starting"), "power an instance on").add_argument("id", metavar="ID")
    shutdown = command("shutdown", _cmd_shutdown, "ask the guest to shut down; force it after the timeout")
    shutdown.add_argument("id", metavar="ID")
    shutdown.add_argument("--timeout", type=seconds, default=60.0, metavar="S", help="default 60")
    shutdown.add_argument(
        "--retry-interval",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="resend every S; default 10",
    )
    shutdown.add_argument("--no-force", action="store_true", help="never force; end timed_out instead")
    command("poweroff", _simple("power_off", "powering off"), "stop an instance at once").add_argument(
        "id", metavar="ID"
    )
    reboot = command("reboot", _cmd_reboot, "reboot through the guest (verified), or --hard")
    reboot.add_argument("id", metavar="ID")
    reboot.add_argument("--hard", action="store_true", help="reset without asking the guest")
    reboot.add_argument("--timeout", type=seconds, default=60.0, metavar="S", help="default 60")
    reboot.add_argument("--no-force", action="store_true", help="no hard fallback; end timed_out instead")
    for name, method, label, help_text in (
        ("pause", "pause", "pausing", "pause an instance's VCPUs"),
        ("unpause", "unpause", "unpausing", "unpause an instance"),
        ("suspend", "suspend", "suspending", "save an instance's memory and stop it"),
        ("resume", "resume", "resuming", "restore a suspended instance"),
    ):
        command(name, _simple(method, label), help_text).add_argument("id", metavar="ID")
    stats = command(
        "stats", _cmd_stats, "per-VCPU running/blocked/waiting fractions (and why blocked) over a window"
    )
    stats.add_argument("id", metavar="ID", nargs="?")
    stats.add_argument("--all", action="store_true", help="every running instance, from one bulk sample")
    stats.add_argument("--window", type=seconds, default=1.0, metavar="S", help="sampling window; default 1")
    events = command("events", _cmd_events, "stream lifecycle events")
    events.add_argument("--count", type=count, default=None, metavar="N", help="stop after N events")
    events.add_argument("--timeout", type=seconds, default=None, metavar="S", help="stop after S seconds")
    # The keeper's verbs; their handlers import its store (SQLAlchemy) only when run.
    from powerdrivers.keeper._cli import register_keeper_commands

    register_keeper_commands(command)
    # The service's verb; its handler imports the web framework only when run.
    from powerdrivers.service._serve import register_service_commands

    register_service_commands(command)
    return parser


# -- commands -----------------------------------------------------------------


def _cmd_drivers(options: argparse.Namespace) -> int:
    infos = available_drivers()
    emit(
        options,
        [info.to_dict() for info in infos],
        ("NAME", "DISTRIBUTION", "VERSION", "INTERFACE", "STATUS", "CAPABILITIES / ERROR"),
        [
            (
                i.name,
                i.distribution,
                i.version,
                i.interface_version,
                i.status,
                i.error or list(i.capabilities),
            )
            for i in infos
        ],
    )
    return EXIT_OK


def _cmd_states(options: argparse.Namespace) -> int:
    name = driver_name(options, required=False)
    rows = list(load_driver_class(name).native_states) if name else []
    native = [
        {
            "native_state": str(row.native_state),
            "native_reason": row.native_reason if isinstance(row.native_reason, str) else None,
            "any_reason": row.native_reason is None,
            "power_state": row.power_state.value,
            "transition": row.transition.value if row.transition else None,
            "forced": row.forced,
            "why": row.why,
        }
        for row in rows
    ]
    operations = [
        {
            "operation": rule.operation.value,
            "transition": rule.transition.value,
            "allowed_from": sorted(state.value for state in rule.allowed_from),
            "already_done_in": sorted(state.value for state in rule.already_done_in),
            "result": rule.result.value if rule.result else None,
            "forced": rule.forced,
            "guest_dependent": rule.guest_dependent,
            "events": sorted(kind.value for kind in rule.events),
        }
        for rule in OPERATION_TABLE.values()
    ]
    emit(
        options,
        {
            "power_states": [{"name": s.value, "description": s.description} for s in PowerState],
            "transitions": [{"name": t.value, "guest_dependent": t.guest_dependent} for t in Transition],
            "operations": operations,
            "native_states": native,
        },
        ("POWER STATE", "MEANING"),
        [(s.value, s.description) for s in PowerState],
        more=(
            (
                ("OPERATION", "TRANSITION", "ALLOWED FROM", "RESULT", "FORCED", "GUEST-DEPENDENT"),
                [
                    (
                        o["operation"],
                        o["transition"],
                        o["allowed_from"],
                        o["result"] or "(deleted)",
                        o["forced"],
                        o["guest_dependent"],
                    )
                    for o in operations
                ],
            ),
            (
                ("NATIVE STATE", "REASON", "POWER STATE", "TRANSITION", "WHY"),
                [
                    (row.native_state, row.reason_label(), row.power_state.value, row.transition, row.why)
                    for row in rows
                ],
            ),
        ),
    )
    return EXIT_OK


def _print_readings(readings: Sequence[InstanceReading], options: argparse.Namespace, single: bool) -> None:
    dicts = [reading.to_dict() for reading in readings]
    emit(
        options,
        dicts[0] if single else dicts,
        ("ID", "NAME", "POWER STATE", "TRANSITION", "NATIVE STATE", "NATIVE REASON"),
        [
            (r.id, r.name, r.power_state.value, r.transition, r.native_state, r.native_reason)
            for r in readings
        ],
    )


def _cmd_list(options: argparse.Namespace) -> int:
    with connect(options) as driver:
        readings = sorted(driver.list_instances(), key=lambda reading: reading.name)
    _print_readings(readings, options, single=False)
    return EXIT_OK


def _cmd_info(options: argparse.Namespace) -> int:
    with connect(options) as driver:
        reading = driver.get_instance(options.id)
    _print_readings([reading], options, single=True)
    return EXIT_OK


def _simple(method: str, label: str) -> Callable[[argparse.Namespace], int]:
    def handler(options: argparse.Namespace) -> int:
        with connect(options) as driver, Progress(f"{label} {options.id}", sys.stderr):
            reading: InstanceReading = getattr(driver, method)(options.id)
        _print_readings([reading], options, single=True)
        return EXIT_OK

    return handler


def _cmd_shutdown(options: argparse.Namespace) -> int:
    with connect(options) as driver, Progress(f"shutting down {options.id}", sys.stderr):
        result = driver.shutdown(
            options.id,
            timeout=options.timeout,
            retry_interval=options.retry_interval,
            force=not options.no_force,
        )
    return _report(result, options)


def _cmd_reboot(options: argparse.Namespace) -> int:
    with connect(options) as driver, Progress(f"rebooting {options.id}", sys.stderr):
        result = driver.reboot(
            options.id, hard=options.hard, timeout=options.timeout, force=not options.no_force
        )
    return _report(result, options)


def _report(result: OperationResult, options: argparse.Namespace) -> int:
    reading = result.reading
    emit(
        options,
        result.to_dict(),
        ("ID", "NAME", "OUTCOME", "ELAPSED S", "POWER STATE"),
        [(reading.id, reading.name, result.outcome.value, result.elapsed_s, reading.power_state.value)],
    )
    if not result.succeeded:
        sys.stderr.write(
            f"powerdrivers: error: {result.reading.name} did not {_VERBS[result.operation]} "
            "within the timeout and forcing was not allowed\n"
        )
        return EXIT_FAILED
    return EXIT_OK


#: The stats columns: the fractions, then why blocked and the exit rates ("-" where not measured).
_STATS_HEADERS = ("VCPU", "RUNNING", "BLOCKED", "WAITING", "HALTED", "HALT/S", "IO/S", "MMIO/S")


def _cmd_stats(options: argparse.Namespace) -> int:
    if options.all == (options.id is not None):
        raise UsageError("stats takes an instance ID or --all, not both or neither")
    if options.all:
        return _cmd_stats_all(options)
    with connect(options) as driver:
        reading = driver.get_instance(options.id)
        with Progress(f"sampling {reading.name}", sys.stderr):
            stats = driver.vcpu_stats(reading.id, window=options.window)
    sampled = InstanceVcpuStats(reading.id, reading.name, options.window, tuple(stats))
    emit(options, sampled.to_dict(), _STATS_HEADERS, [_vcpu_row(s) for s in stats])
    return EXIT_OK


def _cmd_stats_all(options: argparse.Namespace) -> int:
    window = check_duration("window", options.window, positive=True)
    with connect(options) as driver:
        sampler = VcpuSampler(driver)
        with Progress("sampling every running instance", sys.stderr):
            sampler.sample()
            time.sleep(window)
            sampled = sampler.sample()
    emit(
        options,
        {"window_s": options.window, "instances": [instance.to_dict() for instance in sampled]},
        ("ID", "NAME", *_STATS_HEADERS),
        [(instance.id, instance.name, *_vcpu_row(s)) for instance in sampled for s in instance.vcpus],
    )
    return EXIT_OK


def _vcpu_row(stats: VcpuStats) -> tuple[object, ...]:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    halted = "-" if stats.halted is None else f"{stats.halted:.1%}"
    fractions = (f"{stats.running:.1%}", f"{stats.blocked:.1%}", f"{stats.waiting:.1%}", halted)
    return (stats.vcpu, *fractions, rate(stats.halt_exits), rate(stats.io_exits), rate(stats.mmio_exits))


def _cmd_events(options: argparse.Namespace) -> int:
    received: queue.Queue[Event] = queue.Queue()
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    seen = 0
    json_lines = output_format(options) == "json"
    if sys.stderr.isatty():
        sys.stderr.write("powerdrivers: waiting for events (Ctrl-C to stop)\n")
    with connect(options) as driver, driver.subscribe(received.put):
        while options.count is None or seen < options.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                event = received.get(timeout=remaining)
            except queue.Empty:
                break
            seen += 1
            _print_event(event, json_lines, sys.stdout)
    if options.count is not None and seen < options.count:
        raise OperationTimeout(f"received {seen} of {options.count} events within {options.timeout} s")
    return EXIT_OK


def _print_event(event: Event, json_lines: bool, stream: TextIO) -> None:
    if json_lines:
        print_json_line(event.to_dict(), stream)
        return
    fields = event.to_dict()
    stream.write(
        f"{fields['time']}  {fields['name'] or '-':<16} {fields['event']:<12} "
        f"{fields['power_state'] or '-':<10} {fields['transition'] or '-':<14} "
        f"cause={fields['caused_by_operation'] or '-'}\n"
    )
    stream.flush()
