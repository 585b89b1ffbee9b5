"""Instances as the service's JSON, kept by the database: a page of 1,000 without making JSON.

``GET /v1/instances`` is the service's largest read. Built in Python, each instance costs four
times its fetch (an aware ``datetime`` per time column, an ``InstanceView``, its dict, the JSON
encoder); made by the database per request (SQLite's ``json_object``, PostgreSQL's
``row_to_json``) it still cost more than the row's own fetch (benchmark S1). So the database
keeps each instance's object in ``instance_json``: triggers on ``instances`` (migration 0006)
rewrite it in the transaction of every change of a column it shows. A page is one statement
that reads a range of that narrow table in (host, id) order and joins the objects in the
database, so Python gets one text, not a thousand rows. The objects equal
``InstanceView.to_dict()`` key for key and value for value, times included (ISO 8601 in UTC as
``datetime.isoformat`` writes them, without a fraction when it is zero); the test suite holds
the two to that on both databases. The open action (``in_flight``), rare, is filled in here.

Each object is compact JSON whose first key is ``id``, so ``,{"id":`` occurs in a joined page
only between two objects: inside a JSON string every ``"`` is escaped. That is how a page's
objects are told apart without parsing them.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import Select, func, literal_column, select

from powerdrivers.keeper._model import Action

#: Where one object ends and the next begins in a joined page (see above).
_BETWEEN: Final = ',{"id":'


def joined_page(dialect: str, page: Select[Any]) -> Select[Any]:
    """Return the query of ``page``'s objects joined by commas in its order, and how many it has.

    ``page`` selects ``host``, ``id`` and ``document`` of ``instance_json``, ordered and limited
    (the limit is what keeps the order, see below).
    """
    rows = page.subquery("page")
    # In the order the ordered subquery yields its rows, as PostgreSQL documents for a sorted
    # subquery and SQLite does (its LIMIT keeps either from merging it into the aggregate); an
    # ORDER BY in the aggregate (PostgreSQL, SQLite 3.44) sorts the page again, a third of the
    # query's time on PostgreSQL (benchmark S1). The test suite holds every page's order to the
    # views' on both databases.
    name = "string_agg" if dialect == "postgresql" else "group_concat"
    joined = getattr(func, name)(rows.c.document, literal_column("','"))
    return select(joined, func.count()).select_from(rows)


def split_last(joined: str) -> tuple[str, str]:
    """Return a joined page without its last object, and that object (``""`` and it, if alone)."""
    cut = joined.rfind(_BETWEEN)
    if cut < 0:
        return "", joined
    return joined[:cut], joined[cut + 1 :]


def first_of(joined: str) -> str:
    """Return the first object of a joined page."""
    cut = joined.find(_BETWEEN)
    return joined if cut < 0 else joined[:cut]


def host_and_id(document: str) -> tuple[str, str]:
    """Return the ``host`` and ``id`` one object holds."""
    shown = json.loads(document)
    return shown["host"], shown["id"]


def with_in_flight(joined: str, in_flight: dict[str, Action]) -> str:
    """Return a joined page with each object whose instance has an open action showing it."""
    documents = joined.split(_BETWEEN)
    for index, document in enumerate(documents):
        text = document if index == 0 else _BETWEEN[1:] + document
        shown = json.loads(text)
        action = in_flight.get(shown["id"])
        if action is not None:
            shown["in_flight"] = action.to_dict()
            text = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
        documents[index] = text
    return ",".join(documents)
