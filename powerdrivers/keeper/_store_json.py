"""Instances as the service's JSON, made by the database: a page of 1,000 without a Python object each.

``GET /v1/instances`` is the service's largest read. Built in Python, each instance costs four
times its fetch (an aware ``datetime`` per time column, an ``InstanceView``, its dict, the JSON
encoder); here the database writes each row's JSON object (SQLite's ``json_object``,
PostgreSQL's ``row_to_json``) and Python only joins the texts (benchmark S1). The objects
equal ``InstanceView.to_dict()`` key for key and value for value, times included (ISO 8601 in UTC
as ``datetime.isoformat`` writes them, without a fraction when it is zero); the test suite holds
the two to that on both databases. The open action (``in_flight``), rare, is filled in Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, literal_column, select

from powerdrivers.keeper._model import Action
from powerdrivers.keeper._schema import instances

#: The instance object's keys in ``InstanceView.to_dict()``'s order, each with its column.
_FIELDS: Final = (
    ("id", "id"),
    ("name", "name"),
    ("host", "host"),
    ("power_state", "power_state"),
    ("transition", "transition"),
    ("native_state", "native_state"),
    ("native_reason", "native_reason"),
    ("observed_at", "observed_at"),
    ("policy", "policy"),
    ("stale", "stale"),
    ("quarantined", "quarantined"),
    ("fault", "fault"),
    ("failures", "failures"),
    ("action_failures", "action_failures"),
    ("backoff_until", "backoff_until"),
)
_TIMES: Final = frozenset({"observed_at", "backoff_until"})
_FLAGS: Final = frozenset({"stale", "quarantined"})


def _sqlite_time(column: str) -> str:
    # SQLAlchemy stores SQLite times as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC, always six digits);
    # isoformat leaves a zero fraction out, and ".000000" can only be the fraction.
    return f"replace(replace({column}, '.000000', ''), ' ', 'T') || '+00:00'"


def _postgresql_time(column: str) -> str:
    # One to_char in UTC with the fraction, whose zero isoformat leaves out (".000000" can only
    # be the fraction); NULL stays NULL through to_char and replace.
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '')"
        " || '+00:00'"
    )


def json_page(dialect: str, narrow: Callable[[Select[Any]], Select[Any]]) -> Select[Any]:
    """Return the query of each instance's host, id and JSON text (``in_flight`` null), in page order.

    ``narrow`` adds the page's filters, order and limit to a select of ``instances``.
    """
    if dialect == "sqlite":
        parts: list[str] = []
        for key, column in _FIELDS:
            qualified = f"instances.{column}"
            if key in _TIMES:
                value = _sqlite_time(qualified)
            elif key in _FLAGS:
                # json('true') is a constant, made once per statement rather than once per row.
                value = f"CASE WHEN {qualified} THEN json('true') ELSE json('false') END"
            else:
                value = qualified
            parts.append(f"'{key}', {value}")
        parts.append("'in_flight', NULL")
        return narrow(select(instances.c.host, instances.c.id, _text(f"json_object({', '.join(parts)})")))
    # PostgreSQL: row_to_json of the page's rows is compact, keeps the columns' order and costs
    # half of what json_build_object does. The page is cut first (the innermost query), so the
    # times are formatted for its rows only, not for every row the planner sorts (benchmark S1).
    raw = narrow(select(instances)).subquery("raw")
    columns = [
        literal_column(_postgresql_time(f"raw.{column}")).label(key)
        if key in _TIMES
        else raw.c[column].label(key)
        for key, column in _FIELDS
    ]
    page = select(*columns, literal_column("NULL::json").label("in_flight")).subquery("page")
    return select(page.c.host, page.c.id, _text("row_to_json(page)::text")).order_by(page.c.host, page.c.id)


def _text(sql: str) -> ColumnElement[str]:
    return literal_column(sql)


def with_in_flight(text: str, action: Action) -> str:
    """Return an instance's JSON ``text`` with its open action as ``in_flight``."""
    document = json.loads(text)
    document["in_flight"] = action.to_dict()
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
