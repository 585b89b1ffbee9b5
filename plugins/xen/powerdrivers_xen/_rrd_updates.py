"""Reading xapi's ``/rrd_updates`` HTTP handler: the RRD rows of the VMs resident on the host.

xapi's metrics documentation: ``GET /rrd_updates?session_id=<ref>&start=<epoch seconds>``
(with ``cf=AVERAGE`` and ``vm_uuid`` filters) answers rrdtool's ``xport`` XML, whose legend
entries read ``AVERAGE:vm:<uuid>:<data source>``. The request rides on the XML-RPC transport's
machinery: the same TLS verification and the same whole-call deadline. The session reference
goes in the query, as documented, and so is a secret here: it is never logged and never in a
message, whatever the server echoes.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree
from xml.parsers import expat

from powerdrivers import HypervisorConnectionError, HypervisorError, PowerDriversError, Secret
from powerdrivers_xen._errors import scrubber, translate_transport
from powerdrivers_xen._options import Settings
from powerdrivers_xen._session import XapiSession
from powerdrivers_xen._transport import transport_for

#: The most an answer may hold; a host's every VM over the finest archive is far less.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: How far a published fraction may stray past 0..1 (rounding) before the answer is malformed.
_FRACTION_SLACK = 0.01
_PATH = "/rrd_updates"
#: Xen has at most a few thousand VCPUs per domain: a longer ``cpuN`` is no VCPU source.
_VCPU_DIGITS = 4
_ACCEPT = "text/xml, application/xml"

Values = Mapping[str, float]
"""One VM's data sources in one row: name -> value (NaN: xapi did not know it)."""


@dataclass(frozen=True)
class RrdRow:
    """One row of the archive: the end of its step (epoch seconds) and each VM's values."""

    end: float
    vms: Mapping[str, Values]


@dataclass(frozen=True)
class RrdUpdate:
    """What ``/rrd_updates`` answered: the step of its rows (seconds) and the rows, oldest first."""

    step: float
    rows: tuple[RrdRow, ...]

    def vm_uuids(self) -> set[str]:
        """Return the VMs the answer has columns for."""
        return {uuid for row in self.rows for uuid in row.vms}


def malformed(what: str) -> HypervisorError:
    """Return the error for an answer that is not what xapi documents (it quotes none of it)."""
    return HypervisorError(f"xapi sent a malformed answer to {what}", code="MALFORMED_ANSWER")


class RrdUpdatesReader:
    """GETs ``/rrd_updates`` on the host the driver talks to; calls take turns on one connection."""

    def __init__(self, settings: Settings, session: XapiSession) -> None:
        parts = urlsplit(settings.url)
        self._host = parts.netloc
        self._path = parts.path.rstrip("/") + _PATH
        self._url = settings.url
        self._session = session
        self._scrub_password = scrubber(settings.password)
        self._transport = transport_for(settings.url, settings.timeout_s, settings.verify_tls)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RrdUpdatesReader {self._url}{_PATH.lstrip('/')}>"

    def read(self, start: int, vm_uuids: Sequence[str] = ()) -> RrdUpdate:
        """Return the rows ending after ``start`` (epoch seconds), of ``vm_uuids`` or of every resident VM.

        A refused session is renewed once (an XML-RPC call lets the SDK log in again). Raises
        ``HypervisorConnectionError`` (unreachable, refused), ``OperationTimeout`` (no complete
        answer within the timeout) or ``HypervisorError`` (another HTTP status, or a malformed
        answer: code ``MALFORMED_ANSWER``).
        """
        status, body = self._get(start, vm_uuids)
        if status in (401, 403):
            self._session.call(lambda api: api.pool.get_all())
            status, body = self._get(start, vm_uuids)
        if status in (401, 403):
            raise HypervisorConnectionError(
                f"xapi at {self._url} refused the session for {_PATH} (HTTP {status})"
            )
        if status != 200:
            raise HypervisorError(
                f"xapi at {self._url} answered {_PATH} with HTTP {status}", code=f"HTTP_{status}"
            )
        return parse_xport(body)

    def _get(self, start: int, vm_uuids: Sequence[str]) -> tuple[int, bytes]:
        handle = self._session.handle
        query = [("session_id", handle), ("start", str(start)), ("cf", "AVERAGE")]
        query += [("vm_uuid", uuid) for uuid in vm_uuids]
        scrub_handle = scrubber(Secret(handle))
        error: PowerDriversError | None = None
        with self._lock, self._transport.clock.bound():
            try:
                return self._exchange(f"{self._path}?{urlencode(query)}")
            except _WIRE_ERRORS as wire_error:
                self._transport.close()
                error = translate_transport(
                    wire_error, self._url, scrub=lambda text: scrub_handle(self._scrub_password(text))
                )
        # Raised outside the handler, so that it carries no context holding the query.
        raise error

    def _exchange(self, target: str) -> tuple[int, bytes]:
        connection = self._transport.make_connection(self._host)
        connection.request("GET", target, headers={"Accept": _ACCEPT})
        response = connection.getresponse()
        body = response.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES or response.will_close:
            self._transport.close()
        if len(body) > MAX_ANSWER_BYTES:
            raise HypervisorError(
                f"xapi's answer to {_PATH} exceeds {MAX_ANSWER_BYTES} bytes", code="ANSWER_TOO_LARGE"
            )
        return response.status, body


_WIRE_ERRORS = (OSError, http.client.HTTPException, ValueError)


def parse_xport(body: bytes) -> RrdUpdate:
    """Parse an ``xport`` document into rows of AVERAGE values per VM; raise ``malformed`` otherwise."""
    # Errors are raised outside the handlers, so that they carry no context quoting the answer.
    root = None
    with contextlib.suppress(expat.ExpatError, ValueError, AssertionError):
        root = _parse(body)
    if root is None:
        raise malformed(_PATH)
    meta = root.find("meta")
    data = root.find("data")
    if root.tag != "xport" or meta is None or data is None:
        raise malformed(_PATH)
    step = _number(meta.findtext("step"))
    if not 0 < step <= 366 * 86400:
        raise malformed(_PATH)
    columns = [_column(entry.text) for entry in meta.iterfind("legend/entry")]
    rows = [_row(row, columns) for row in data.iterfind("row")]
    return RrdUpdate(step, tuple(sorted(rows, key=lambda row: row.end)))


def _parse(body: bytes) -> ElementTree.Element:
    """Parse XML that declares no document type and no entity (xport needs neither).

    Refusing them refuses entity expansion attacks, which is what ``defusedxml`` guards against.
    """
    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.Parse(body, True)
    return builder.close()


def _refuse(*_: object) -> None:
    raise ValueError("a document type or entity declaration")


def _column(entry: str | None) -> tuple[str, str] | None:
    """Return (VM uuid, data source) of an AVERAGE VM column; None for any other column."""
    parts = (entry or "").split(":", 3)
    if len(parts) != 4 or not all(parts):
        raise malformed(_PATH)
    cf, kind, uuid, name = parts
    return (uuid, name) if cf == "AVERAGE" and kind == "vm" else None


def _row(row: ElementTree.Element, columns: list[tuple[str, str] | None]) -> RrdRow:
    end = _number(row.findtext("t"))
    cells = row.findall("v")
    if not math.isfinite(end) or len(cells) != len(columns):
        raise malformed(_PATH)
    vms: dict[str, dict[str, float]] = {}
    for column, cell in zip(columns, cells, strict=True):
        value = _number(cell.text)
        if column is None:
            continue
        uuid, name = column
        vms.setdefault(uuid, {})[name] = _fraction(name, value)
    return RrdRow(end, vms)


def _number(text: str | None) -> float:
    value = math.inf
    with contextlib.suppress(ValueError):
        value = float((text or "").strip())
    if math.isinf(value):
        raise malformed(_PATH)
    return value


def _fraction(name: str, value: float) -> float:
    """Check a fraction source (``cpuN``, ``runstate_*``) and clamp its rounding; others pass."""
    if math.isnan(value) or not (name.startswith("runstate_") or _is_vcpu_source(name)):
        return value
    if not -_FRACTION_SLACK <= value <= 1 + _FRACTION_SLACK:
        raise malformed(_PATH)
    return min(max(value, 0.0), 1.0)


def vcpu_number(name: str) -> int | None:
    """Return N for a ``cpuN`` data source, else None."""
    return int(name[3:]) if _is_vcpu_source(name) else None


def _is_vcpu_source(name: str) -> bool:
    return name.startswith("cpu") and name[3:].isdigit() and len(name) <= 3 + _VCPU_DIGITS
