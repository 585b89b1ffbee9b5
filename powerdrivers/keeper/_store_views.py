"""The store's reads for a service: pages of instances, counts, and the history of every instance.

A page of instances is a keyset walk over (host, id), the ``ix_instances_host_id`` index: each
page costs the same however deep it is, and an instance added or removed between two pages moves
no other across the cursor. The cursor is the previous page's last (host, id), opaque to callers.
``records_after`` reads the history of every instance in id order: writers commit in id order
(see ``StoreConnection._write``), so a reader that remembers the last id it saw misses nothing.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from typing import Any, Final

from sqlalchemy import Connection, Select, Table, bindparam, exists, func, literal_column, select, tuple_

from powerdrivers import InvalidOption, PowerState, parse_count
from powerdrivers.keeper._model import Action, HistoryRecord, InstanceView, Policy
from powerdrivers.keeper._schema import OPEN_STATUSES, actions, history, instance_json, instances
from powerdrivers.keeper._store_claim import HostClaims
from powerdrivers.keeper._store_json import first_of, host_and_id, joined_page, split_last, with_in_flight
from powerdrivers.keeper._store_rows import action, history_record, instance_view

#: The most instances one page may hold, and the most records one ``records_after`` call returns.
MAX_PAGE: Final = 1000
MAX_RECORDS: Final = 10_000
_MAX_ID: Final = 2**63 - 1
_MAX_CURSOR: Final = 2048
_MAX_TEXT: Final = 255


def encode_cursor(host: str, instance_id: str) -> str:
    """Return the opaque, URL-safe cursor of the page after the instance ``(host, instance_id)``."""
    raw = json.dumps([host, instance_id], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[str, str]:
    """Return the (host, id) a cursor of ``encode_cursor`` holds. Raises ``InvalidOption`` ("cursor ...")."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR:
        raise InvalidOption("cursor is not one this store gave (take it from the previous page's next)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(part, str) and len(part) <= _MAX_TEXT and "\x00" not in part for part in value)
    ):
        return value[0], value[1]
    raise InvalidOption("cursor is not one this store gave (take it from the previous page's next)")


def _choice(kind: type[PowerState] | type[Policy], name: str, value: object) -> str:
    try:
        return kind(str(value)).value
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise InvalidOption(f"{name} must be one of {choices}, not {str(value)[:40]!r}") from None


class StoreViews(HostClaims):
    """Reads a service needs besides the keeper's: ``SqlStore`` builds on this."""

    def instances_page(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | None = None,
        policy: Policy | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[InstanceView], str | None]:
        """Return one page of instances by host then id, and the cursor of the next (``None``: the last).

        Filters by host, power state and policy, all given ones at once. ``after`` is the
        ``next`` of the previous page (``None`` for the first); ``limit`` is 1 to 1,000.
        Raises ``InvalidOption`` for a bad cursor (the message starts with "cursor"), limit or
        filter value.
        """
        shape, parameters, count = _page_filters(host, power_state, policy, after, limit)
        with self._read("read a page of instances") as connection:
            rows = connection.execute(_view_statement(shape), parameters).all()
            more = len(rows) > count
            rows = rows[:count]
            in_flight = _open_actions(connection, rows[0].host, rows[-1].host) if rows else {}
        views = [instance_view(row, in_flight.get(row.id)) for row in rows]
        return views, (encode_cursor(rows[-1].host, rows[-1].id) if more else None)

    def instances_page_json(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | None = None,
        policy: Policy | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[str, str | None]:
        """Return :meth:`instances_page` as the JSON text of its items' ``to_dict()`` list, and its cursor.

        The same page, filters, cursor and errors; the JSON is kept by the database (see
        ``_store_json``), for the service's listing.
        """
        shape, parameters, count = _page_filters(host, power_state, policy, after, limit)
        query = _json_statement(self._engine.dialect.name, shape)
        with self._read("read a page of instances") as connection:
            joined, found, any_open = connection.execute(query, parameters).one()
            if not found:
                return "[]", None
            if found > count:
                joined, _ = split_last(joined)
            last_host, last_id = host_and_id(split_last(joined)[1])
            first_host, _ = host_and_id(first_of(joined))
            in_flight = _open_actions(connection, first_host, last_host) if any_open else {}
        if in_flight:
            joined = with_in_flight(joined, in_flight)
        return "[" + joined + "]", (encode_cursor(last_host, last_id) if found > count else None)

    def instance_counts(self) -> dict[tuple[str, str], int]:
        """Return how many instances each host has in each power state: ``(host, state value) -> count``."""
        query = select(instances.c.host, instances.c.power_state, func.count()).group_by(
            instances.c.host, instances.c.power_state
        )
        with self._read("count the instances") as connection:
            return {(row[0], row[1]): int(row[2]) for row in connection.execute(query)}

    def records_after(self, after_id: int, limit: int = 500) -> list[HistoryRecord]:
        """Return every instance's history records with an id above ``after_id``, by ascending id.

        ``after_id`` is 0 (from the first) or a record id seen before; ``limit`` is 1 to 10,000.
        Raises ``InvalidOption`` for either out of range.
        """
        after = parse_count("after_id", after_id, maximum=_MAX_ID)
        count = parse_count("limit", limit, minimum=1, maximum=MAX_RECORDS)
        query = select(history).where(history.c.id > after).order_by(history.c.id).limit(count)
        with self._read("read the history") as connection:
            return [history_record(row) for row in connection.execute(query)]

    def last_record_id(self) -> int:
        """Return the id of the newest history record of any instance (0 when there is none)."""
        with self._read("read the last history record") as connection:
            return int(connection.execute(select(func.max(history.c.id))).scalar() or 0)


def _page_filters(
    host: str | None,
    power_state: PowerState | None,
    policy: Policy | None,
    after: str | None,
    limit: int,
) -> tuple[tuple[bool, bool, bool, bool], dict[str, Any], int]:
    """Check a page's filters; return which are given, their bound values and the page's size."""
    count = parse_count("limit", limit, minimum=1, maximum=MAX_PAGE)
    parameters: dict[str, Any] = {"page_rows": count + 1}
    if host is not None:
        if not isinstance(host, str):
            raise InvalidOption(f"host must be text, not {type(host).__name__}")
        if "\x00" in host:
            # No host name holds one (PostgreSQL's text cannot): a bad filter, not a store error.
            raise InvalidOption("host must not contain a NUL character")
        parameters["page_host"] = host
    if power_state is not None:
        parameters["page_state"] = _choice(PowerState, "power_state", power_state)
    if policy is not None:
        parameters["page_policy"] = _choice(Policy, "policy", policy)
    if after is not None:
        parameters["after_host"], parameters["after_id"] = decode_cursor(after)
    shape = (host is not None, power_state is not None, policy is not None, after is not None)
    return shape, parameters, count


def _narrow(
    query: Select[Any], shape: tuple[bool, bool, bool, bool], table: Table = instances
) -> Select[Any]:
    """Add a page's filters (those ``shape`` says are given, as bound parameters), order and limit.

    ``table`` is ``instances`` or ``instance_json``: both have the filters' and the order's columns.
    """
    by_host, by_state, by_policy, after = shape
    if by_host:
        query = query.where(table.c.host == bindparam("page_host"))
    if by_state:
        query = query.where(table.c.power_state == bindparam("page_state"))
    if by_policy:
        query = query.where(table.c.policy == bindparam("page_policy"))
    if after:
        query = query.where(
            tuple_(table.c.host, table.c.id) > tuple_(bindparam("after_host"), bindparam("after_id"))
        )
    return query.order_by(table.c.host, table.c.id).limit(bindparam("page_rows"))


# The page statements are built once per filter combination, not per page: at 1,000 rows a
# page, building the statement cost a tenth of the page's time (benchmark S1). Immutable, so shared.


@functools.lru_cache(maxsize=16)
def _view_statement(shape: tuple[bool, bool, bool, bool]) -> Select[Any]:
    return _narrow(select(instances), shape)


@functools.lru_cache(maxsize=32)
def _json_statement(dialect: str, shape: tuple[bool, bool, bool, bool]) -> Select[Any]:
    page = select(instance_json.c.host, instance_json.c.id, instance_json.c.document)
    return joined_page(dialect, _narrow(page, shape, instance_json)).add_columns(_ANY_OPEN)


#: Whether any action is open: a look at the partial unique index of open actions, whose own
#: condition this repeats word for word so that both databases use it. Mostly none is, and the
#: page then needs no second query (benchmark S1).
_OPEN_CONDITION: Final = f"actions.status IN ({', '.join(repr(status) for status in OPEN_STATUSES)})"
_ANY_OPEN: Final = exists(
    select(literal_column("1")).select_from(actions).where(literal_column(_OPEN_CONDITION))
).label("any_open")


#: The open actions of the instances now on the hosts from ``first_host`` to ``last_host``.
#: Open actions are few (the partial unique index holds them): those of the page's hosts, rather
#: than a thousand ids bound one by one. The instance's host decides, not the action's: an
#: instance moved since its action opened still shows that action. Built once (benchmark S1).
_OPEN_ACTIONS: Final = (
    select(actions)
    .join(instances, instances.c.id == actions.c.instance_id)
    .where(
        actions.c.status.in_(OPEN_STATUSES),
        instances.c.host >= bindparam("first_host"),
        instances.c.host <= bindparam("last_host"),
    )
)


def _open_actions(connection: Connection, first_host: str, last_host: str) -> dict[str, Action]:
    """Return the open actions of the instances now on the hosts from ``first_host`` to ``last_host``."""
    found = connection.execute(_OPEN_ACTIONS, {"first_host": first_host, "last_host": last_host})
    return {row.instance_id: action(row) for row in found}
