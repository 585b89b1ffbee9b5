"""The driver contract is on the page: every primitive and helper is rendered from its docstring.

A *primitive* is a ``_``-prefixed method of :class:`powerdrivers.Driver` a
driver implements or may override: the abstract ones, the primitive of every
capability (the loader's list) and whatever a shipped driver overrides. A
*hook* is a primitive or a documented helper a driver calls (``_publish``...);
internal methods carry no docstring and are neither. ``docs/writing-a-driver.rst``
walks through the hooks and ``docs/api.rst`` is their reference; both render
them with ``automethod``, so a primitive added to the core without its page, or
without saying when it is called and what it raises, fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import powerdrivers
from powerdrivers import Driver
from powerdrivers._loader import _PRIMITIVES

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "writing-a-driver.rst", ROOT / "docs" / "api.rst"]
#: The drivers this repository ships: what they override is what a driver may override.
SHIPPED_DRIVERS = ("fake", "libvirt", "xen", "procs")
_AUTOMETHOD = re.compile(r"^\s*\.\. automethod:: (?:powerdrivers\.Driver\.)?(_\w+)\s*$", re.MULTILINE)


def _defined_by_core(name: str) -> bool:
    owner = next(cls for cls in Driver.__mro__ if name in vars(cls))
    return owner.__module__.startswith("powerdrivers")


def _shipped_driver_overrides() -> set[str]:
    names: set[str] = set()
    for name in SHIPPED_DRIVERS:
        driver_class = powerdrivers.load_driver_class(name)
        own_classes = driver_class.__mro__[: driver_class.__mro__.index(Driver)]
        names.update(attribute for klass in own_classes for attribute in vars(klass))
    return names


def _private_methods() -> set[str]:
    return {
        name
        for name, _ in inspect.getmembers(Driver, callable)
        if name.startswith("_") and not name.startswith("__") and _defined_by_core(name)
    }


def driver_primitives() -> list[str]:
    """What a driver implements or overrides: abstract, per capability, or overridden by a shipped driver."""
    capability_primitives = {name for names in _PRIMITIVES.values() for name in names}
    candidates = set(Driver.__abstractmethods__) | capability_primitives | _shipped_driver_overrides()
    return sorted(candidates & _private_methods())


def driver_hooks() -> list[str]:
    """The primitives, and the documented helpers a driver calls."""
    documented = {name for name in _private_methods() if inspect.getdoc(getattr(Driver, name))}
    return sorted(documented | set(driver_primitives()))


PRIMITIVES = driver_primitives()
HOOKS = driver_hooks()


def test_the_abstract_capability_and_overridden_primitives_are_all_found() -> None:
    # Each way a primitive is recognised finds what it should.
    assert {"_read_all", "_read_one", "_start", "_power_off"} <= set(PRIMITIVES)
    assert {"_request_shutdown", "_spawn", "_vcpu_stats", "_start_native_events"} <= set(PRIMITIVES)
    assert {"_close", "_stop_native_events"} <= set(PRIMITIVES)
    assert "_reject_unknown_options" in HOOKS


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_every_hook_is_rendered_on_the_page(page: Path) -> None:
    rendered = set(_AUTOMETHOD.findall(page.read_text()))
    missing = [name for name in HOOKS if name not in rendered]
    assert not missing, f"{page.name} does not render (automethod) these Driver hooks: {', '.join(missing)}"


@pytest.mark.parametrize("name", PRIMITIVES)
def test_every_primitive_has_a_docstring_saying_when_it_is_called_and_what_it_raises(name: str) -> None:
    doc = " ".join((inspect.getdoc(getattr(Driver, name)) or "").split())
    assert doc, f"Driver.{name} has no docstring to render"
    assert "Called" in doc, f"Driver.{name}'s docstring does not say when the core calls it"
    assert re.search(r"\b[Rr]ais", doc), f"Driver.{name}'s docstring does not say what it may raise"


@pytest.mark.parametrize("name", PRIMITIVES)
def test_a_primitive_that_may_return_a_reading_says_what_the_core_does_with_it(name: str) -> None:
    returns = inspect.signature(getattr(Driver, name), eval_str=True).return_annotation
    doc = " ".join((inspect.getdoc(getattr(Driver, name)) or "").split())
    if returns == (powerdrivers.InstanceReading | None):
        assert "new reading" in doc, f"Driver.{name} may return a reading; its docstring does not say so"
