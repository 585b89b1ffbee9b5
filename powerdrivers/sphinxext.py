"""A Sphinx extension that renders powerdrivers' tables from the code: ``powerdrivers.sphinxext``.

Add ``"powerdrivers.sphinxext"`` to ``extensions`` in a Sphinx project's
``conf.py`` (Sphinx is not a dependency of powerdrivers: the project that
builds documentation installs it). A driver's documentation then renders
its native-state table, with each row's ``why``, from the driver class
itself, so the page cannot drift from what the driver does::

    .. powerdrivers-native-states:: mydriver

Directives:

``.. powerdrivers-native-states:: DRIVER``
    The ``native_states`` table of the driver registered as ``DRIVER`` (an
    installed ``powerdrivers.drivers`` entry point; it is loaded, never
    connected): native state, reason (``(any)`` for a catch-all row,
    ``(none)`` for :data:`powerdrivers.NO_REASON`), power state, transition
    and why. A driver that cannot be loaded is a build warning.
``.. powerdrivers-mapping:: package.module:NAME``
    Any mapping in code, with ``:headers:`` naming the columns
    (comma-separated); tuple keys and values spread over several columns.
``.. powerdrivers-power-states::``
    Every :class:`powerdrivers.PowerState` with its description.
``.. powerdrivers-transitions::``
    Every :class:`powerdrivers.Transition`, whether it is guest-dependent and
    which operation shows it.
``.. powerdrivers-operation-table::``
    :data:`powerdrivers.OPERATION_TABLE`, one row per operation.
``.. powerdrivers-event-kinds::``
    Every :class:`powerdrivers.EventKind` and the operations that cause it.
``.. powerdrivers-capabilities::``
    Every :class:`powerdrivers.Capability`, the operations it covers and the
    primitives a driver declaring it implements.

Only this module imports docutils and Sphinx: ``import powerdrivers`` does not.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, ClassVar

from docutils import nodes
from docutils.nodes import Node
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import powerdrivers
from powerdrivers import _capabilities, _event_kinds, _loader, _operations, _states

__all__ = ["Cell", "TableDirective", "build_table", "literal", "literals", "setup"]

_LOG = logging.getLogger(__name__)

#: A cell is plain text, or ready-made inline nodes (e.g. literals).
Cell = str | Sequence[Node]


def literal(text: str) -> nodes.literal:
    """Return ``text`` as an inline literal."""
    return nodes.literal(text, text)


def literals(values: Iterable[str], empty: str = "(none)") -> list[Node]:
    """Return ``values`` as comma-separated inline literals, or ``empty`` as text."""
    items = list(values)
    if not items:
        return [nodes.Text(empty)]
    result: list[Node] = []
    for index, value in enumerate(items):
        if index:
            result.append(nodes.Text(", "))
        result.append(literal(value))
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


class TableDirective(SphinxDirective):
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


class PowerStatesDirective(TableDirective):
    """Render every canonical power state and what the hypervisor observes in it."""

    sources = (_states,)

    def table(self) -> nodes.table:
        """Return the power-state table."""
        rows: list[list[Cell]] = [
            [[literal(f"PowerState.{state.name}")], [literal(state.value)], state.description]
            for state in powerdrivers.PowerState
        ]
        return build_table(("State", "Value", "What the hypervisor observes"), rows, (22, 12, 66))


class TransitionsDirective(TableDirective):
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
                    [literal(f"Transition.{transition.name}")],
                    [literal(transition.value)],
                    literals(shown_by),
                    _yes_no(transition.guest_dependent),
                ]
            )
        return build_table(
            ("Transition", "Value", "Shown while this operation runs", "Guest-dependent"),
            rows,
            (30, 20, 30, 20),
        )


class OperationTableDirective(TableDirective):
    """Render :data:`powerdrivers.OPERATION_TABLE`, one row per operation."""

    sources = (_operations, _states, _event_kinds)

    def table(self) -> nodes.table:
        """Return the operation table."""
        rows: list[list[Cell]] = []
        for rule in powerdrivers.OPERATION_TABLE.values():
            rows.append(
                [
                    [literal(rule.operation.value)],
                    [literal(rule.transition.value)],
                    literals(sorted(state.value for state in rule.allowed_from), "(none: creates)"),
                    literals(sorted(state.value for state in rule.already_done_in)),
                    [literal(rule.result.value)] if rule.result else "(instance removed)",
                    _yes_no(rule.forced),
                    _yes_no(rule.guest_dependent),
                    literals(sorted(kind.value for kind in rule.events)),
                    [literal(powerdrivers.Capability.for_operation(rule.operation).value)],
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


class EventKindsDirective(TableDirective):
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
                    [literal(f"EventKind.{kind.name}")],
                    [literal(kind.value)],
                    literals(causes, "(never attributed to an operation)"),
                ]
            )
        return build_table(("Kind", "Value", "Attributed to these operations"), rows, (30, 20, 50))


class CapabilitiesDirective(TableDirective):
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
                    [literal(capability.value)],
                    literals(operations, "(no operation)"),
                    literals(primitives),
                    "required" if capability in required else "optional",
                ]
            )
        return build_table(
            ("Capability", "Operations", "Primitives to implement", "Declaring it is"),
            rows,
            (20, 25, 35, 20),
        )


class NativeStatesDirective(TableDirective):
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
                [literal(str(row.native_state))],
                [literal(row.native_reason)] if isinstance(row.native_reason, str) else row.reason_label(),
                [literal(row.power_state.value)],
                [literal(row.transition.value)] if row.transition else "(none)",
                row.why,
            ]
            for row in driver_class.native_states
        ]
        return build_table(
            ("Native state", "Reason", "Power state", "Transition", "Why"), rows, (16, 10, 12, 16, 46)
        )


class MappingDirective(TableDirective):
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
    return [[literal(str(item))] for item in items]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives; called by Sphinx for ``extensions = ["powerdrivers.sphinxext"]``."""
    app.add_directive("powerdrivers-power-states", PowerStatesDirective)
    app.add_directive("powerdrivers-transitions", TransitionsDirective)
    app.add_directive("powerdrivers-operation-table", OperationTableDirective)
    app.add_directive("powerdrivers-event-kinds", EventKindsDirective)
    app.add_directive("powerdrivers-capabilities", CapabilitiesDirective)
    app.add_directive("powerdrivers-native-states", NativeStatesDirective)
    app.add_directive("powerdrivers-mapping", MappingDirective)
    return {"version": powerdrivers.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
