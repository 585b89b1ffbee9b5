"""Sphinx directives that render powerdrivers' model tables from the code itself.

The documentation never copies the power states, the transitions, the
operation table, the event kinds, the exit codes or a driver's native-state
table by hand: each is read from the package when the docs are built, so the
pages cannot drift from what the code does.

Directives:

``.. powerdrivers-power-states::``
    Every :class:`powerdrivers.PowerState` with its description.
``.. powerdrivers-transitions::``
    Every :class:`powerdrivers.Transition`, whether it is guest-dependent and
    which operation shows it (from :data:`powerdrivers.OPERATION_TABLE`).
``.. powerdrivers-operation-table::``
    :data:`powerdrivers.OPERATION_TABLE`, one row per operation.
``.. powerdrivers-event-kinds::``
    Every :class:`powerdrivers.EventKind` and the operations that cause it.
``.. powerdrivers-exit-codes::``
    Which CLI exit code each exception class of ``powerdrivers.__all__`` gives.
``.. powerdrivers-capabilities::``
    Every :class:`powerdrivers.Capability`, the operations it covers and the
    primitives a driver declaring it must implement (from the loader's checks).
``.. powerdrivers-native-states:: DRIVER``
    The ``native_states`` table of the driver class registered as ``DRIVER``.

The extension also resolves cross-references to private module paths
(``powerdrivers._reading.InstanceReading``, as type hints name them) to the
public name (``powerdrivers.InstanceReading``), and warns when a name in
``powerdrivers.__all__`` is documented nowhere.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, ClassVar

from docutils import nodes
from docutils.nodes import Element, Node
from docutils.parsers.rst import directives
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import powerdrivers
from powerdrivers import _capabilities, _event_kinds, _loader, _operations, _states
from powerdrivers import _cli as cli

_LOG = logging.getLogger(__name__)

#: A cell is plain text, or ready-made inline nodes (e.g. literals).
Cell = str | Sequence[Node]

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


def _literal(text: str) -> nodes.literal:
    """Return ``text`` as an inline literal."""
    return nodes.literal(text, text)


def _literals(values: Iterable[str], empty: str = "(none)") -> list[Node]:
    """Return ``values`` as comma-separated inline literals, or ``empty`` as text."""
    items = list(values)
    if not items:
        return [nodes.Text(empty)]
    result: list[Node] = []
    for index, value in enumerate(items):
        if index:
            result.append(nodes.Text(", "))
        result.append(_literal(value))
    return result


def _yes_no(flag: bool) -> str:
    """Return ``"yes"`` or ``"no"``."""
    return "yes" if flag else "no"


def _entry(cell: Cell) -> nodes.entry:
    """Return a table cell holding ``cell`` in one paragraph."""
    paragraph = nodes.paragraph()
    if isinstance(cell, str):
        paragraph += nodes.Text(cell)
    else:
        paragraph.extend(cell)
    entry = nodes.entry()
    entry += paragraph
    return entry


def build_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    widths: Sequence[int],
    title: str | None = None,
) -> nodes.table:
    """Build a docutils table with a header row.

    ``widths`` are relative column widths, one per header; every row must
    have one cell per header.
    """
    if len(widths) != len(headers):
        raise ValueError(f"{len(headers)} headers but {len(widths)} widths")
    table = nodes.table(classes=["powerdrivers-table", "longtable"])
    if title:
        table += nodes.title(title, title)
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    header_row = nodes.row()
    for header in headers:
        header_row += _entry(header)
    head += header_row
    group += head
    body = nodes.tbody()
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, not {len(headers)}")
        body_row = nodes.row()
        for cell in row:
            body_row += _entry(cell)
        body += body_row
    group += body
    return table


class _TableDirective(SphinxDirective):
    """Base class: a directive without content that renders one generated table.

    Subclasses name the modules the table is read from (so an incremental
    build re-reads the page when they change) and implement :meth:`table`.
    """

    has_content: ClassVar[bool] = False
    optional_arguments: ClassVar[int] = 0
    #: Modules whose source the generated table depends on.
    sources: ClassVar[tuple[ModuleType, ...]] = ()

    def run(self) -> list[Node]:
        """Note the source dependencies and return the table."""
        for module in self.sources:
            path = inspect.getsourcefile(module)
            if path:
                self.env.note_dependency(path)
        table = self.table()
        if table is None:
            return []
        self.set_source_info(table)
        return [table]

    def table(self) -> nodes.table | None:
        """Return the table to insert, or ``None`` after logging a warning."""
        raise NotImplementedError


class PowerStatesDirective(_TableDirective):
    """Render every canonical power state and what the hypervisor observes in it."""

    sources = (_states,)

    def table(self) -> nodes.table:
        """Return the power-state table."""
        rows: list[list[Cell]] = [
            [[_literal(f"PowerState.{state.name}")], [_literal(state.value)], state.description]
            for state in powerdrivers.PowerState
        ]
        return build_table(("State", "Value", "What the hypervisor observes"), rows, (22, 12, 66))


class TransitionsDirective(_TableDirective):
    """Render every transition, whether it needs the guest, and the operation that shows it."""

    sources = (_states, _operations)

    def table(self) -> nodes.table:
        """Return the transition table."""
        rows: list[list[Cell]] = []
        for transition in powerdrivers.Transition:
            shown_by = [
                rule.operation.value
                for rule in powerdrivers.OPERATION_TABLE.values()
                if rule.transition is transition
            ]
            rows.append(
                [
                    [_literal(f"Transition.{transition.name}")],
                    [_literal(transition.value)],
                    _literals(shown_by),
                    _yes_no(transition.guest_dependent),
                ]
            )
        return build_table(
            ("Transition", "Value", "Shown while this operation runs", "Guest-dependent"),
            rows,
            (30, 20, 30, 20),
        )


class OperationTableDirective(_TableDirective):
    """Render :data:`powerdrivers.OPERATION_TABLE`, one row per operation."""

    sources = (_operations, _states, _event_kinds)

    def table(self) -> nodes.table:
        """Return the operation table."""
        rows: list[list[Cell]] = []
        for rule in powerdrivers.OPERATION_TABLE.values():
            rows.append(
                [
                    [_literal(rule.operation.value)],
                    [_literal(rule.transition.value)],
                    _literals(sorted(state.value for state in rule.allowed_from), "(none: creates)"),
                    _literals(sorted(state.value for state in rule.already_done_in)),
                    [_literal(rule.result.value)] if rule.result else "(instance removed)",
                    _yes_no(rule.forced),
                    _yes_no(rule.guest_dependent),
                    _literals(sorted(kind.value for kind in rule.events)),
                    [_literal(powerdrivers.Capability.for_operation(rule.operation).value)],
                ]
            )
        return build_table(
            (
                "Operation",
                "Transition shown while it runs",
                "Allowed from",
                "Already done in",
                "Result",
                "Forced",
                "Guest-dependent",
                "Event kinds it causes",
                "Capability",
            ),
            rows,
            (10, 12, 16, 9, 9, 7, 8, 17, 10),
        )


class EventKindsDirective(_TableDirective):
    """Render every event kind and the operations whose ``events`` include it."""

    sources = (_event_kinds, _operations)

    def table(self) -> nodes.table:
        """Return the event-kind table."""
        rows: list[list[Cell]] = []
        for kind in powerdrivers.EventKind:
            causes = [
                rule.operation.value for rule in powerdrivers.OPERATION_TABLE.values() if kind in rule.events
            ]
            rows.append(
                [
                    [_literal(f"EventKind.{kind.name}")],
                    [_literal(kind.value)],
                    _literals(causes, "(never attributed to an operation)"),
                ]
            )
        return build_table(("Kind", "Value", "Attributed to these operations"), rows, (30, 20, 50))


class ExitCodesDirective(_TableDirective):
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
            cell = _literals(names, "")
            note = _EXIT_NOTES.get(code)
            if note:
                cell.append(nodes.Text(f"{'; ' if names else ''}{note}"))
            rows.append([[_literal(str(code))], meaning, cell])
        return build_table(("Exit code", "Meaning", "Raised as"), rows, (10, 50, 40))


class CapabilitiesDirective(_TableDirective):
    """Render every capability, the operations it covers and the primitives it requires."""

    sources = (_capabilities, _loader, _operations)

    def table(self) -> nodes.table:
        """Return the capability table, from the loader's capability-to-primitive map."""
        required = powerdrivers.REQUIRED_CAPABILITIES
        rows: list[list[Cell]] = []
        for capability in powerdrivers.Capability:
            operations = [
                operation.value
                for operation in powerdrivers.Operation
                if powerdrivers.Capability.for_operation(operation) is capability
            ]
            primitives = _loader._PRIMITIVES.get(capability, ())
            if capability in required:
                primitives = tuple(
                    name
                    for name in sorted(getattr(powerdrivers.Driver, "__abstractmethods__", ()))
                    if name.lstrip("_") == capability.value
                )
            rows.append(
                [
                    [_literal(capability.value)],
                    _literals(operations, "(no operation)"),
                    _literals(primitives),
                    "required" if capability in required else "optional",
                ]
            )
        return build_table(
            ("Capability", "Operations", "Primitives to implement", "Declaring it is"),
            rows,
            (20, 25, 35, 20),
        )


def _exit_code_for_class(error_class: type[powerdrivers.PowerDriversError]) -> int:
    """Return the exit code the CLI gives an exception of ``error_class``.

    Mirrors :func:`powerdrivers._cli.exit_code_for`, which needs an
    instance, using the same ordered table it reads.
    """
    for mapped, code in cli._EXIT_CODES:
        if issubclass(error_class, mapped):
            return code
    return cli.EXIT_FAILED


class NativeStatesDirective(_TableDirective):
    """Render a driver's native-state table: ``.. powerdrivers-native-states:: DRIVER``.

    The driver class is loaded (not connected) with
    :func:`powerdrivers.load_driver_class`; a driver that cannot be loaded is
    a build warning.
    """

    required_arguments: ClassVar[int] = 1

    def table(self) -> nodes.table | None:
        """Return the native-state table of the named driver."""
        name = self.arguments[0]
        try:
            driver_class = powerdrivers.load_driver_class(name)
        except powerdrivers.PowerDriversError as error:
            _LOG.warning(
                "powerdrivers-native-states: cannot load driver %r: %s",
                name,
                error,
                location=self.get_location(),
            )
            return None
        module = inspect.getmodule(driver_class.native_states) or inspect.getmodule(driver_class)
        for source in (module, inspect.getmodule(driver_class)):
            path = inspect.getsourcefile(source) if source is not None else None
            if path:
                self.env.note_dependency(path)
        rows: list[list[Cell]] = [
            [
                [_literal(str(row.native_state))],
                [_literal(row.native_reason)] if row.native_reason is not None else "(any)",
                [_literal(row.power_state.value)],
                [_literal(row.transition.value)] if row.transition else "(none)",
                row.why,
            ]
            for row in driver_class.native_states
        ]
        return build_table(
            ("Native state", "Reason", "Power state", "Transition", "Why"), rows, (16, 10, 12, 16, 46)
        )


class MappingDirective(_TableDirective):
    """Render any mapping in code: ``.. powerdrivers-mapping:: package.module:NAME``.

    Keys and values that are tuples spread over several columns; a ``None``
    value reads "(ignored)". The ``:headers:`` option names the columns,
    comma-separated. Drivers use it for tables such as libvirt's event and
    error translations.
    """

    required_arguments: ClassVar[int] = 1
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {"headers": directives.unchanged_required}

    def table(self) -> nodes.table | None:
        """Return the rendered mapping."""
        module_name, _, attribute = self.arguments[0].partition(":")
        try:
            module = importlib.import_module(module_name)
            mapping = getattr(module, attribute)
        except (ImportError, AttributeError) as error:
            _LOG.warning("powerdrivers-mapping: %s", error, location=self.get_location())
            return None
        path = inspect.getsourcefile(module)
        if path:
            self.env.note_dependency(path)
        headers = [header.strip() for header in self.options["headers"].split(",")]
        rows: list[list[Cell]] = []
        for key, value in mapping.items():
            cells = [*_spread(key), *(_spread(value) if value is not None else ["(ignored)"])]
            cells += [""] * (len(headers) - len(cells))
            rows.append(cells)
        return build_table(headers, rows, [100 // len(headers)] * len(headers))


def _spread(value: object) -> list[Cell]:
    items = value if isinstance(value, tuple) else (value,)
    return [[_literal(str(item))] for item in items]


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
    """Register the directives and event handlers."""
    app.add_directive("powerdrivers-power-states", PowerStatesDirective)
    app.add_directive("powerdrivers-transitions", TransitionsDirective)
    app.add_directive("powerdrivers-operation-table", OperationTableDirective)
    app.add_directive("powerdrivers-event-kinds", EventKindsDirective)
    app.add_directive("powerdrivers-exit-codes", ExitCodesDirective)
    app.add_directive("powerdrivers-capabilities", CapabilitiesDirective)
    app.add_directive("powerdrivers-native-states", NativeStatesDirective)
    app.add_directive("powerdrivers-mapping", MappingDirective)
    app.connect("missing-reference", resolve_private_path)
    app.connect("autodoc-process-docstring", drop_builtin_type_docstring)
    app.connect("env-check-consistency", check_public_api_documented)
    return {"version": powerdrivers.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
