"""The public names: errors named as users import them, whole after pickling; type hints resolve."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import typing

import pytest

import powerdrivers

ERRORS = [
    value
    for name in powerdrivers.__all__
    if isinstance(value := getattr(powerdrivers, name), type)
    and issubclass(value, powerdrivers.PowerDriversError)
]

#: Arguments that construct each error whose constructor takes more than a message.
ARGUMENTS: dict[type[powerdrivers.PowerDriversError], tuple[tuple[object, ...], dict[str, object]]] = {
    powerdrivers.DriverNotFound: (("nosuch", ["fake", "xen"]), {}),
    powerdrivers.DriverLoadError: (("broken", "pd-broken", "ImportError: gone"), {}),
    powerdrivers.DriverConflict: (("twin", ["twin-b", "twin-a"]), {}),
    powerdrivers.IncompatibleDriver: (("future", "2.0", ">=1.0,<2"), {}),
    powerdrivers.InstanceNotFound: (("web-1",), {}),
    powerdrivers.InvalidStateTransition: (
        ("web-1", "start", "running"),
        {"transition": "rebooting", "allowed": ["shutoff"]},
    ),
    powerdrivers.UnsupportedOperation: (("fake", "spawn"), {}),
    powerdrivers.HypervisorError: (("refused",), {"code": "VIR_ERR_X", "details": ["a", "b"]}),
}


def _make(error_class: type[powerdrivers.PowerDriversError]) -> powerdrivers.PowerDriversError:
    args, kwargs = ARGUMENTS.get(error_class, (("it went wrong",), {}))
    return error_class(*args, **kwargs)


def test_every_error_is_covered() -> None:
    assert len(ERRORS) >= 17
    assert set(ARGUMENTS) <= set(ERRORS)


@pytest.mark.parametrize("error_class", ERRORS, ids=lambda cls: cls.__name__)
def test_an_error_is_named_as_users_import_it(error_class: type[powerdrivers.PowerDriversError]) -> None:
    assert error_class.__module__ == "powerdrivers"
    assert getattr(powerdrivers, error_class.__qualname__) is error_class


@pytest.mark.parametrize("error_class", ERRORS, ids=lambda cls: cls.__name__)
def test_an_error_pickles_whole(error_class: type[powerdrivers.PowerDriversError]) -> None:
    error = _make(error_class)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_class
    assert (str(copy), copy.args, vars(copy)) == (str(error), error.args, vars(error))


def test_a_traceback_names_the_error_by_its_public_name() -> None:
    script = "import powerdrivers\nraise powerdrivers.InstanceNotFound('web-1')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert (
        result.stderr.splitlines()[-1] == "powerdrivers.InstanceNotFound: no instance with id or name 'web-1'"
    )


@pytest.mark.parametrize(
    "name", [name for name in powerdrivers.__all__ if inspect.isclass(getattr(powerdrivers, name))]
)
def test_the_type_hints_of_every_public_class_resolve(name: str) -> None:
    typing.get_type_hints(getattr(powerdrivers, name))
