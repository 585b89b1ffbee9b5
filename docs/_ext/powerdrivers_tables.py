"""This repository's own Sphinx additions, beside the shipped ``powerdrivers.sphinxext``.

The model's tables (power states, transitions, the operation table, event
kinds, capabilities) and a driver's native-state table come from the
extension the package ships, :mod:`powerdrivers.sphinxext`, which third
parties use too. What only this documentation needs lives here:

``.. powerdrivers-exit-codes::``
    Which CLI exit code each exception class of ``powerdrivers.__all__`` gives.

``.. powerdrivers-keeper-policies::``
    What each keeper policy does about each kind of change, from the keeper's own ``decide``.

It also resolves cross-references to private module paths
(``powerdrivers._reading.InstanceReading``, as type hints name them) to the
public name (``powerdrivers.InstanceReading``), and warns when a name in
``powerdrivers.__all__`` is documented nowhere.
"""

from __future__ import annotations

import inspect
from typing import Any

from docutils import nodes
from docutils.nodes import Element, Node
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

import powerdrivers
from powerdrivers import Operation, PowerState
from powerdrivers import _cli_support as cli
from powerdrivers.keeper import Cause, Policy
from powerdrivers.keeper import _decide as keeper_decide
from powerdrivers.sphinxext import Cell, TableDirective, build_table, literal, literals

_LOG = logging.getLogger(__name__)


#: What each exit code means, for the exit-code table; the codes themselves come from the CLI module.
_EXIT_MEANINGS: dict[int, str] = {
    cli.EXIT_OK: "Success (including a shutdown that found the instance already off).",
    cli.EXIT_FAILED: (
        "The operation failed: the hypervisor refused it, a call or an event stream timed out, "
        "or a graceful shutdown or reboot timed out with forcing refused."
    ),
    cli.EXIT_USAGE: (
        "Usage: bad flags, no or unknown driver, a broken plugin, a bad URI, option or "
        "specification (nothing was attempted)."
    ),
    cli.EXIT_NOT_FOUND: "No instance has that id or name.",
    cli.EXIT_INVALID: (
        "The operation table forbids the operation in the instance's state, or the driver "
        "does not support it."
    ),
    cli.EXIT_CONNECTION: "The hypervisor cannot be reached, or it refused the credentials.",
    cli.EXIT_INTERRUPTED: "Interrupted (Ctrl-C).",
}


#: What else, besides exception classes, ends with an exit code.
_EXIT_NOTES: dict[int, str] = {
    cli.EXIT_FAILED: "a timed_out outcome; any unexpected exception",
    cli.EXIT_USAGE: "a command line argparse rejects",
    cli.EXIT_INTERRUPTED: "KeyboardInterrupt",
}


class ExitCodesDirective(TableDirective):
    """Render the CLI's exit codes and the exception classes that map to each."""

    sources = (cli,)

    def table(self) -> nodes.table:
        """Return the exit-code table, derived from the CLI's own mapping."""
        exceptions = [
            value
            for name in powerdrivers.__all__
            if inspect.isclass(value := getattr(powerdrivers, name))
            and issubclass(value, powerdrivers.PowerDriversError)
        ]
        by_code: dict[int, list[str]] = {code: [] for code in _EXIT_MEANINGS}
        for error_class in exceptions:
            by_code.setdefault(_exit_code_for_class(error_class), []).append(error_class.__name__)
        rows: list[list[Cell]] = []
        for code, names in sorted(by_code.items()):
            meaning = _EXIT_MEANINGS.get(code)
            if meaning is None:
                _LOG.warning(
                    "exit code %d has no description in %s", code, __name__, location=self.get_location()
                )
                meaning = ""
            cell = literals(names, "")
            note = _EXIT_NOTES.get(code)
            if note:
                cell.append(nodes.Text(f"{'; ' if names else ''}{note}"))
            rows.append([[literal(str(code))], meaning, cell])
        return build_table(("Exit code", "Meaning", "Raised as"), rows, (10, 50, 40))


#: The changes the policy table shows: (what the instance did, its state, why it got there).
_POLICY_SCENARIOS: tuple[tuple[str, PowerState, Cause | None], ...] = (
    ("crashed", PowerState.CRASHED, Cause.CRASH),
    ("crashed and was shut off (libvirt on_crash=destroy)", PowerState.SHUTOFF, Cause.CRASH),
    ("stopped, nobody asked the keeper (out of band, or the guest shut itself down)",
     PowerState.SHUTOFF, Cause.OUT_OF_BAND),
    ("started, nobody asked the keeper", PowerState.RUNNING, Cause.OUT_OF_BAND),
    ("paused, nobody asked the keeper", PowerState.PAUSED, Cause.OUT_OF_BAND),
    ("rebooted (the guest's own reboot)", PowerState.RUNNING, Cause.GUEST_REBOOT),
    ("reads unknown (or its host cannot be reached)", PowerState.UNKNOWN, None),
)  # fmt: skip


class KeeperPoliciesDirective(TableDirective):
    """Render what each keeper policy does about each kind of change, from ``decide`` itself."""

    sources = (keeper_decide,)

    def table(self) -> nodes.table:
        """Return the policy table: one row per change, one column per policy."""
        policies = list(Policy)
        rows: list[list[Cell]] = []
        for label, state, cause in _POLICY_SCENARIOS:
            row: list[Cell] = [label]
            for policy in policies:
                decision = keeper_decide.decide(policy, state, None, cause)
                if decision.operation is None:
                    row.append(f"nothing ({decision.reason})")
                    continue
                cell: list[Node] = [literal(decision.operation.value)]
                if cause is Cause.CRASH and decision.operation is Operation.START:
                    cell.append(nodes.Text(", after the crash-loop backoff"))
                if decision.await_reboot:
                    cell.append(nodes.Text(", if no start follows within the reboot window"))
                row.append(cell)
            rows.append(row)
        headers = ["The instance...", *(f"{policy.value}" for policy in policies)]
        return build_table(headers, rows, (28, *(18 for _ in policies)))


def _exit_code_for_class(error_class: type[powerdrivers.PowerDriversError]) -> int:
    """Return the exit code the CLI gives an exception of ``error_class``.

    Mirrors :func:`powerdrivers._cli_support.exit_code_for`, which needs an
    instance, using the same ordered table it reads.
    """
    for mapped, code in cli.EXIT_CODES:
        if issubclass(error_class, mapped):
            return code
    return cli.EXIT_FAILED


def resolve_private_path(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve ``powerdrivers._module.Name`` to the documented ``powerdrivers.Name``.

    Type hints name classes by the private module that defines them; the
    documentation describes them under the package, where users import them.
    """
    if node.get("refdomain") != "py":
        return None
    target = str(node.get("reftarget", ""))
    if not target.startswith("powerdrivers._"):
        return None
    _, _, name = target.rpartition(".")
    if name not in powerdrivers.__all__:
        return None
    domain = env.get_domain("py")
    resolved: Element | None = domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"powerdrivers.{name}", node, contnode
    )
    return resolved


def drop_builtin_type_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """Drop the docstring autodoc finds on a constant's type (``str``, ``frozenset``...).

    A module constant has no docstring of its own, so autodoc shows its
    type's (``str(object='') -> str``...); the page's own text describes it.
    """
    if what not in ("data", "attribute"):
        return
    type_doc = inspect.getdoc(type(obj))
    if type_doc and "\n".join(lines).strip() == type_doc.strip():
        lines.clear()


def check_public_api_documented(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about every name in ``powerdrivers.__all__`` that no page documents."""
    objects: dict[str, Any] = env.get_domain("py").objects  # type: ignore[attr-defined]
    for name in powerdrivers.__all__:
        if f"powerdrivers.{name}" not in objects:
            _LOG.warning("powerdrivers.%s is in powerdrivers.__all__ but documented nowhere", name)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the shipped extension, the exit-code directive and the event handlers."""
    app.setup_extension("powerdrivers.sphinxext")
    app.add_directive("powerdrivers-exit-codes", ExitCodesDirective)
    app.add_directive("powerdrivers-keeper-policies", KeeperPoliciesDirective)
    app.connect("missing-reference", resolve_private_path)
    app.connect("autodoc-process-docstring", drop_builtin_type_docstring)
    app.connect("env-check-consistency", check_public_api_documented)
    return {"version": powerdrivers.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
