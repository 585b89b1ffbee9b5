"""The one place where OS errors become powerdrivers' typed errors.

Every primitive, the constructor and :func:`powerdrivers_procs.define` run
inside :func:`translated`, so nothing but a
:class:`powerdrivers.PowerDriversError` leaves the driver:

=====================================  ==============================================================
raised inside the driver               reported as
=====================================  ==============================================================
a ``PowerDriversError``                itself (``InstanceNotFound``, ``InvalidStateTransition``...)
``DefinitionError`` (from ``define``)  ``InvalidSpec``: the caller's definition is wrong
``BadFileError``                       ``HypervisorError``, code ``invalid-definitions`` or
                                       ``corrupt-state``: a file of the directory is unusable
``TimeoutError``                       ``OperationTimeout``: /proc did not show the result in time
``PermissionError``                    ``HypervisorError``, code ``EPERM`` or ``EACCES``
``FileNotFoundError``                  ``HypervisorError``, code ``ENOENT`` (a missing command)
any other ``OSError``                  ``HypervisorError``, code the errno name (``ENOEXEC``...)
anything else                          ``HypervisorError``, code ``internal``, chained to the cause
=====================================  ==============================================================

Why ``PermissionError`` is not ``AuthenticationError``: powerdrivers raises
that when a hypervisor refuses credentials the caller gave, and the procs
driver is given none. Being refused by the OS (signalling another user's
process, executing a file without the x bit, writing a read-only directory)
is a refusal of that operation, with the errno kept as the code.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from powerdrivers import HypervisorError, InvalidSpec, OperationTimeout, PowerDriversError
from powerdrivers_procs._definitions import BadFileError, DefinitionError


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run the block, turning any exception but powerdrivers' own into a typed one about ``what``."""
    try:
        yield
    except PowerDriversError:
        raise
    except DefinitionError as error:
        raise InvalidSpec(str(error)) from error
    except BadFileError as error:
        raise HypervisorError(f"{what}: {error}", code=error.code) from error
    except TimeoutError as error:
        raise OperationTimeout(f"{what}: {error}") from error
    except OSError as error:
        code = errno.errorcode.get(error.errno or 0, type(error).__name__)
        subject = [str(error.filename)] if error.filename is not None else []
        reason = error.strerror or str(error)
        where = f" ({subject[0]})" if subject else ""
        raise HypervisorError(f"{what}: {reason}{where}", code=code, details=subject) from error
    except Exception as error:
        raise HypervisorError(
            f"{what}: unexpected {type(error).__name__}: {error}", code="internal"
        ) from error
