"""The store's VCPU samples: each sampling round of a host written at once, read back by instance and time.

A round is one quiet write transaction: it takes the store's write lock like every write, but
bumps no change cursor and wakes no change listener (on PostgreSQL: no ``NOTIFY``), because a
keeper samples every few seconds per host and nobody acts on a sample. Retention is by age:
``trim_vcpu_samples`` deletes from the oldest end through the ``at`` index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Row, and_, delete, func, insert, select

from powerdrivers import InstanceVcpuStats, VcpuStats, parse_count
from powerdrivers.keeper._errors import KeeperError
from powerdrivers.keeper._model import VcpuSample
from powerdrivers.keeper._schema import vcpu_samples
from powerdrivers.keeper._store_db import StoreConnection

#: The most samples one ``vcpu_samples`` call returns.
MAX_VCPU_SAMPLES: Final = 100_000
_MAX_TEXT: Final = 255
_FIELDS: Final = tuple(field.name for field in dataclasses.fields(VcpuSample))


class VcpuSampleStore(StoreConnection):
    """The ``KeeperStore`` methods of VCPU samples; ``SqlStore`` inherits them."""

    def record_vcpu_samples(self, host: str, at: datetime, samples: Sequence[InstanceVcpuStats]) -> int:
        """Store one sampling round of ``host``: a row per VCPU of each instance, all at ``at``.

        Returns the rows written (0 for no samples: nothing is written). One transaction, which
        neither bumps the change cursor nor wakes change listeners. Raises ``KeeperError`` for a
        naive or non-time ``at``, a host name or instance id that is empty or longer than 255
        characters, or a sample that is not an ``InstanceVcpuStats`` of ``VcpuStats``, before
        anything is written; ``StoreUnavailable``/``StoreError`` as every method.
        """
        checked_host = _text("host", host)
        end = _aware("at", at)
        rows = [
            _row(VcpuSample.of(instance_id, checked_host, end, stats))
            for instance_id, stats in _instances(samples)
        ]
        if not rows:
            return 0
        with self._write(f"record the VCPU samples of host {checked_host!r}", wake=False) as connection:
            connection.execute(insert(vcpu_samples), rows)
        return len(rows)

    def vcpu_samples(
        self, instance_id: str, since: datetime, until: datetime | None = None, limit: int = 10_000
    ) -> list[VcpuSample]:
        """Return the instance's samples with ``since < at <= until`` (no end if ``None``), by (at, vcpu).

        At most ``limit``, the oldest first. An instance the store does not know has none: samples
        outlive their instance, so no ``UnknownInstance``. Raises ``InvalidOption`` for a ``limit``
        outside 1 to 100,000, ``KeeperError`` for a naive time or a non-text id.
        """
        count = parse_count("limit", limit, minimum=1, maximum=MAX_VCPU_SAMPLES)
        if not isinstance(instance_id, str):
            raise KeeperError(f"an instance id is text, not {type(instance_id).__name__}")
        start = _aware("since", since)
        query = select(vcpu_samples).where(
            vcpu_samples.c.instance_id == instance_id, vcpu_samples.c.at > start
        )
        if until is not None:
            query = query.where(vcpu_samples.c.at <= _aware("until", until))
        query = query.order_by(vcpu_samples.c.at, vcpu_samples.c.vcpu, vcpu_samples.c.id).limit(count)
        with self._read(f"read the VCPU samples of {instance_id[:_MAX_TEXT]!r}") as connection:
            return [_sample(row) for row in connection.execute(query)]

    def latest_vcpu_samples(self, host: str | None = None) -> list[VcpuSample]:
        """Return the newest sample of each VCPU of each instance (of one host, if given), by instance, VCPU.

        That is each instance's newest round, every VCPU sampled in it (a VCPU unplugged since
        is left out); with ``host``, of the instances whose newest round is of that host. An
        instance no longer sampled keeps its last round. It costs two index lookups per
        instance in the store, whatever the number of samples each has.
        """
        samples = vcpu_samples.c
        # Each instance id in turn through the (instance_id, at) index: a loose index scan, which
        # neither database does by itself for a DISTINCT, so a recursive query does it.
        ids = select(func.min(samples.instance_id).label("id")).cte("ids", recursive=True)
        after = select(func.min(samples.instance_id)).where(samples.instance_id > ids.c.id).scalar_subquery()
        ids = ids.union_all(select(after).where(ids.c.id.is_not(None)))
        newest_at = select(func.max(samples.at)).where(samples.instance_id == ids.c.id).scalar_subquery()
        newest = select(ids.c.id, newest_at.label("at")).where(ids.c.id.is_not(None)).subquery()
        query = (
            select(vcpu_samples)
            .join(newest, and_(samples.instance_id == newest.c.id, samples.at == newest.c.at))
            .order_by(samples.instance_id, samples.vcpu, samples.id.desc())
        )
        if host is not None:
            query = query.where(samples.host == host)
        with self._read("read the latest VCPU samples") as connection:
            rows = connection.execute(query).all()
        found: dict[tuple[str, int], VcpuSample] = {}
        for row in rows:
            # Two rounds stored at the same instant (two processes, one moment): the last written wins.
            found.setdefault((row.instance_id, row.vcpu), _sample(row))
        return list(found.values())

    def trim_vcpu_samples(self, before: datetime) -> int:
        """Delete the samples with ``at < before``; return how many. Raises ``KeeperError`` for a naive time.

        Wakes no change listener, as recording does not.
        """
        cutoff = _aware("before", before)
        with self._write("trim the VCPU samples", wake=False) as connection:
            result = connection.execute(delete(vcpu_samples).where(vcpu_samples.c.at < cutoff))
            return max(int(result.rowcount or 0), 0)


def _aware(label: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise KeeperError(f"{label} must be a time, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise KeeperError(f"{label} must be a timezone-aware time, not {value}")
    return value


def _text(label: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise KeeperError(f"{label} must be text of 1 to {_MAX_TEXT} characters")
    return value


def _instances(samples: object) -> list[tuple[str, VcpuStats]]:
    """Each (instance id, VCPU statistics) pair of a round, checked."""
    if isinstance(samples, (str, bytes, InstanceVcpuStats)) or not isinstance(samples, Sequence):
        raise KeeperError(f"VCPU samples are a sequence of InstanceVcpuStats, not {type(samples).__name__}")
    pairs = []
    for instance in samples:
        if not isinstance(instance, InstanceVcpuStats):
            raise KeeperError(f"a VCPU sample is an InstanceVcpuStats, not {type(instance).__name__}")
        instance_id = _text("an instance id", instance.id)
        for stats in instance.vcpus:
            if not isinstance(stats, VcpuStats):
                raise KeeperError(f"a VCPU's statistics are a VcpuStats, not {type(stats).__name__}")
            if isinstance(stats.vcpu, bool) or not isinstance(stats.vcpu, int) or not 0 <= stats.vcpu < 2**31:
                raise KeeperError(f"a VCPU number is a whole number of at least 0, not {stats.vcpu!r}")
            pairs.append((instance_id, stats))
    return pairs


def _row(sample: VcpuSample) -> dict[str, Any]:
    # The table's columns are the sample's fields, by the same names (and an id of its own).
    return {name: getattr(sample, name) for name in _FIELDS}


def _sample(row: Row[Any]) -> VcpuSample:
    values = row._mapping
    return VcpuSample(**{name: values[name] for name in _FIELDS})
