"""The dashboard in Debian's headless Chromium, over a real fleet of fake hosts on uvicorn.

Each test asserts what a person sees: the table, its badges and its live rows, the timeline,
an operator's buttons (and a reader's lack of them), the login form's error, escaped names.
Live means without a reload: a marker set in the page's window before the change must still be
there after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import bearer, serve, wait_for
from browser_support import (
    attributes,
    chromium,
    console_errors,
    screenshot_if_asked,
    sign_in,
    text,
    texts,
    wait,
    wait_live,
)
from conftest import ConfigFactory, make_fake_host
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from powerdrivers import InstanceSpec, load_driver
from powerdrivers.keeper import RecordKind
from powerdrivers.service._app import create_app
from powerdrivers.service._fleet import Fleet

#: A name the fake's state file allows (the fake's spawn would not): markup, if not escaped, runs.
HTML_NAME = '<script>window.pdInjected = 1</script><b id="injected">bold</b> & "quoted"'
FINAL = ("done", "failed", "interrupted")


@pytest.fixture
def service(
    request: pytest.FixtureRequest, tmp_path: Path, service_config_factory: ConfigFactory
) -> Iterator[tuple[Fleet, str]]:
    """A started fleet of 2 fake hosts of 4 instances each, and its URL.

    Parametrized indirectly, host-1's first instance (``h1-vm-0``) is changed in its state file
    before the fleet starts: ``"markup"`` names it ``HTML_NAME``; ``"stubborn"`` makes its guest
    ignore a shutdown request (a graceful shutdown then lasts until its timeout).
    """
    change = getattr(request, "param", None)
    if change is not None:
        state = tmp_path / "host-1.json"
        make_fake_host(state, "h1", 4)
        document = json.loads(state.read_text())
        first = next(record for record in document["instances"].values() if record["name"] == "h1-vm-0")
        if change == "markup":
            first["name"] = HTML_NAME
        else:
            first["guest"] = "uncooperative"
        state.write_text(json.dumps(document))
    fleet = Fleet(service_config_factory())
    fleet.start()
    try:
        with serve(create_app(fleet)) as url:
            yield fleet, url
    finally:
        fleet.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium, quit after the test."""
    with chromium() as driver:
        yield driver


def _instances(url: str, token: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/v1/instances", headers=bearer(token), params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _by_name(url: str, token: str, name: str) -> dict[str, Any]:
    return next(item for item in _instances(url, token) if item["name"] == name)


def _act(url: str, token: str, instance_id: str, operation: str) -> dict[str, Any]:
    """Ask for an operation through the API and wait until it is over; return the action."""
    answer = httpx.post(
        f"{url}/v1/instances/{instance_id}/actions", headers=bearer(token), json={"operation": operation}
    )
    assert answer.status_code == 202, answer.text
    action_id = answer.json()["id"]

    def finished() -> dict[str, Any] | None:
        action: dict[str, Any] = httpx.get(f"{url}/v1/actions/{action_id}", headers=bearer(token)).json()
        return action if action["status"] in FINAL else None

    action: dict[str, Any] = wait_for(finished, f"{operation} to finish")
    assert action["status"] == "done", action
    return action


def _row(browser: WebDriver, instance_id: str) -> Any:
    for row in browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr"):
        if row.get_attribute("data-id") == instance_id:
            return row
    return None


def _row_text(browser: WebDriver, instance_id: str, column: str) -> str | None:
    row = _row(browser, instance_id)
    return None if row is None else str(row.find_element(By.CSS_SELECTOR, f"td.{column}").text)


def _mark_page(browser: WebDriver) -> None:
    browser.execute_script("window.pdNotReloaded = true;")


def _still_same_page(browser: WebDriver) -> bool:
    return bool(browser.execute_script("return window.pdNotReloaded === true;"))


def test_the_table_shows_every_instance_with_its_state_and_badges(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    fleet, url = service
    instances = _instances(url, service_tokens["operator"])
    off = [i for i in instances if i["host"] == "host-1" and i["power_state"] == "shutoff"]
    quarantined, backed_off = off
    now = datetime.now(UTC)
    fleet.store.quarantine(quarantined["id"], "three failed starts", now)
    fleet.store.set_backoff(backed_off["id"], 2, now + timedelta(minutes=10))
    # What the keeper records when a host stops answering: every reading of it is then stale.
    assert fleet.store.set_host_reachable("host-2", False, now, "connection refused")
    always = next(i for i in instances if i["host"] == "host-1" and i["power_state"] == "running")
    answer = httpx.put(
        f"{url}/v1/instances/{always['id']}/policy",
        headers=bearer(service_tokens["operator"]),
        json={"policy": "always"},
    )
    assert answer.status_code == 200, answer.text

    sign_in(browser, url, service_tokens["operator"])

    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert len(rows) == len(instances) == 8
    for instance in instances:
        assert _row_text(browser, instance["id"], "host") == instance["host"]
        assert _row_text(browser, instance["id"], "state") == instance["power_state"]
        policy = "always" if instance["id"] == always["id"] else instance["policy"]
        assert _row_text(browser, instance["id"], "policy") == policy
        stale = instance["host"] == "host-2"
        assert ("stale" in (_row_text(browser, instance["id"], "badges") or "").split()) is stale
    assert {_row_text(browser, i["id"], "state") for i in instances} == {"running", "shutoff"}
    assert _row_text(browser, quarantined["id"], "badges") == "quarantine"
    assert _row_text(browser, backed_off["id"], "badges") == "backoff"
    assert browser.find_element(By.ID, "shown-count").text == "8 of 8 shown"
    screenshot_if_asked(browser)


def test_the_filters_narrow_the_table_without_a_reload(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    sign_in(browser, url, service_tokens["reader"])
    _mark_page(browser)

    def shown() -> list[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
        return [row.find_element(By.CSS_SELECTOR, "td.name").text for row in rows if row.is_displayed()]

    browser.find_element(By.CSS_SELECTOR, "#filter-host option[value='host-2']").click()
    assert sorted(shown()) == ["h2-vm-0", "h2-vm-1", "h2-vm-2", "h2-vm-3"]
    browser.find_element(By.CSS_SELECTOR, "#filter-state option[value='shutoff']").click()
    assert sorted(shown()) == ["h2-vm-1", "h2-vm-3"]
    browser.find_element(By.CSS_SELECTOR, "#filter-host option[value='']").click()
    browser.find_element(By.ID, "filter-text").send_keys("vm-3")
    assert sorted(shown()) == ["h1-vm-3", "h2-vm-3"]
    browser.find_element(By.CSS_SELECTOR, "#filter-policy option[value='always']").click()
    assert shown() == []
    assert browser.find_element(By.ID, "empty").is_displayed()
    assert _still_same_page(browser)


def test_changes_made_through_the_api_appear_in_the_table_without_a_reload(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str], tmp_path: Path
) -> None:
    fleet, url = service
    operator = service_tokens["operator"]
    running = _by_name(url, operator, "h2-vm-0")
    sign_in(browser, url, service_tokens["reader"])
    wait_live(browser)
    _mark_page(browser)

    answer = httpx.put(
        f"{url}/v1/instances/{running['id']}/policy", headers=bearer(operator), json={"policy": "on_failure"}
    )
    assert answer.status_code == 200, answer.text
    wait(browser).until(lambda _: _row_text(browser, running["id"], "policy") == "on_failure")

    _act(url, operator, running["id"], "power_off")
    wait(browser).until(lambda _: _row_text(browser, running["id"], "state") == "shutoff")

    with load_driver("fake", f"fake://{tmp_path / 'host-2.json'}") as driver:
        spawned = driver.spawn(InstanceSpec(name="h2-newcomer"))
    wait(browser).until(lambda _: _row_text(browser, spawned.id, "name") == "h2-newcomer")
    assert _row_text(browser, spawned.id, "host") == "host-2"
    assert _row_text(browser, spawned.id, "state") == "running"

    unreachable = _by_name(url, operator, "h1-vm-1")
    assert fleet.store.set_host_reachable("host-1", False, datetime.now(UTC), "connection refused")
    wait(browser).until(lambda _: _row_text(browser, unreachable["id"], "badges") == "stale")
    assert _still_same_page(browser)
    assert console_errors(browser) == []


def test_the_instance_page_follows_changes_live(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    operator = service_tokens["operator"]
    instance = _by_name(url, operator, "h1-vm-0")
    sign_in(browser, url, service_tokens["reader"])
    browser.get(f"{url}/instances/{instance['id']}")
    wait_live(browser)
    _mark_page(browser)

    def band_states() -> list[str | None]:
        return attributes(browser, "svg#timeline rect.band", "data-state")

    assert band_states() == ["running"]
    _act(url, operator, instance["id"], "power_off")

    wait(browser).until(lambda _: text(browser, "#fact-state") == "shutoff")
    wait(browser).until(lambda _: band_states() == ["running", "shutoff"])
    assert texts(browser, "#actions tbody tr:first-child td")[1:4] == ["power_off", "done", "operator"]
    assert _still_same_page(browser)


def test_the_timeline_draws_the_recorded_states_in_order(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    fleet, url = service
    operator = service_tokens["operator"]
    instance = _by_name(url, operator, "h1-vm-2")
    _act(url, operator, instance["id"], "power_off")
    _act(url, operator, instance["id"], "start")
    recorded = [
        record.to_state.value
        for record in reversed(fleet.history(instance["id"]))
        if record.kind is RecordKind.OBSERVED and record.to_state is not None
    ]
    assert recorded == ["running", "shutoff", "running"]

    sign_in(browser, url, service_tokens["reader"])
    browser.get(f"{url}/instances/{instance['id']}?period=1h")

    assert attributes(browser, "svg#timeline rect.band", "data-state") == recorded
    titles = texts(browser, "svg#timeline rect.band > title")
    assert [title.split(" from ")[0] for title in titles] == recorded
    widths = [float(width or 0) for width in attributes(browser, "svg#timeline rect.band", "width")]
    assert all(width >= 0 for width in widths) and sum(widths) <= 1000
    assert texts(browser, ".legend li")[:2] == ["running", "shutoff"]
    marker_titles = texts(browser, "svg#timeline rect.marker-action > title")
    assert [title.split(":")[0] for title in marker_titles] == ["power_off", "start"]
    assert all("by operator" in title for title in marker_titles)
    assert texts(browser, "#actions tbody tr td:nth-child(2)") == ["start", "power_off"]
    assert set(texts(browser, "#actions tbody tr td:nth-child(4)")) == {"operator"}

    browser.find_element(By.LINK_TEXT, "last 7d").click()
    wait(browser).until(lambda d: d.current_url.endswith("?period=7d"))
    assert texts(browser, ".period.current") == ["last 7d"]
    assert attributes(browser, "svg#timeline rect.band", "data-state") == recorded
    header = text(browser, ".timeline h2 small")
    start, end = (datetime.fromisoformat(f"{part.strip()}+00:00") for part in header[:-4].split(" to "))
    assert end - start == timedelta(days=7)


def test_an_operators_click_performs_the_action(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    instance = _by_name(url, service_tokens["operator"], "h2-vm-2")
    assert instance["power_state"] == "running"
    sign_in(browser, url, service_tokens["operator"])
    browser.get(f"{url}/instances/{instance['id']}")
    wait_live(browser)
    _mark_page(browser)

    browser.find_element(By.CSS_SELECTOR, "button.op[data-operation='power_off']").click()

    wait(browser).until(lambda _: text(browser, "#result").endswith(" done"))
    assert text(browser, "#result").startswith("power off: action ")
    wait(browser).until(lambda _: text(browser, "#fact-state") == "shutoff")
    wait(browser).until(lambda _: texts(browser, "#actions tbody tr:first-child td")[1:2] == ["power_off"])
    assert texts(browser, "#actions tbody tr:first-child td")[1:4] == ["power_off", "done", "operator"]
    assert _by_name(url, service_tokens["operator"], "h2-vm-2")["power_state"] == "shutoff"

    browser.find_element(By.CSS_SELECTOR, "button.op[data-operation='pause']").click()
    wait(browser).until(lambda _: text(browser, "#result").startswith("pause refused: "))
    assert "shutoff" in text(browser, "#result")
    assert _still_same_page(browser)
    Select(browser.find_element(By.ID, "policy-select")).select_by_value("halted")
    wait(browser).until(lambda _: text(browser, "#result") == "policy set to halted")
    wait(browser).until(lambda _: text(browser, "#fact-policy") == "halted")
    assert _by_name(url, service_tokens["operator"], "h2-vm-2")["policy"] == "halted"
    # The refused pause is the one failed request the page made (the browser logs its 409).
    assert [error for error in console_errors(browser) if "409" not in error] == []


def test_a_reader_sees_no_buttons_and_a_forged_change_is_refused(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    instance = _by_name(url, service_tokens["reader"], "h1-vm-2")
    sign_in(browser, url, service_tokens["reader"])
    browser.get(f"{url}/instances/{instance['id']}")

    assert browser.find_element(By.ID, "timeline")
    assert browser.find_elements(By.CSS_SELECTOR, "button.op") == []
    assert browser.find_elements(By.ID, "policy-select") == []
    assert "data-operation" not in browser.page_source
    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-Powerdrivers-Dashboard": "1"},
            body: JSON.stringify({operation: "power_off"})}).then(r => done(r.status));
        """,
        f"/v1/instances/{instance['id']}/actions",
    )
    assert status == 403
    assert _by_name(url, service_tokens["reader"], "h1-vm-2")["power_state"] == "running"


def test_a_bad_token_is_refused_on_the_login_form(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    browser.get(f"{url}/")
    assert browser.current_url == f"{url}/login"
    wrong = service_tokens["operator"] + "x"
    browser.find_element(By.ID, "token").send_keys(wrong)
    browser.find_element(By.ID, "sign-in").click()

    error = wait(browser).until(lambda d: d.find_element(By.ID, "login-error"))
    assert error.text == "That token is not valid: check it and try again."
    assert wrong not in browser.page_source
    assert browser.get_cookies() == []
    browser.get(f"{url}/")
    assert browser.current_url == f"{url}/login"


@pytest.mark.parametrize("service", ["markup"], indirect=True)
def test_a_name_with_markup_is_shown_as_text(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    instance = _by_name(url, service_tokens["operator"], HTML_NAME)
    sign_in(browser, url, service_tokens["operator"])

    assert _row_text(browser, instance["id"], "name") == HTML_NAME
    assert browser.find_elements(By.ID, "injected") == []
    # A row the page's script rebuilds from a live event shows the name as text too.
    wait_live(browser)
    answer = httpx.put(
        f"{url}/v1/instances/{instance['id']}/policy",
        headers=bearer(service_tokens["operator"]),
        json={"policy": "halted"},
    )
    assert answer.status_code == 200, answer.text
    wait(browser).until(lambda _: _row_text(browser, instance["id"], "policy") == "halted")
    assert _row_text(browser, instance["id"], "name") == HTML_NAME
    assert browser.find_elements(By.ID, "injected") == []
    browser.get(f"{url}/instances/{instance['id']}")
    assert browser.find_element(By.TAG_NAME, "h1").text == HTML_NAME
    assert browser.find_elements(By.ID, "injected") == []
    assert browser.execute_script("return window.pdInjected === undefined;")


@pytest.mark.parametrize("service", ["stubborn"], indirect=True)
def test_an_action_in_progress_shows_until_it_ends(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    operator = service_tokens["operator"]
    instance = _by_name(url, operator, "h1-vm-0")
    sign_in(browser, url, service_tokens["reader"])
    answer = httpx.post(
        f"{url}/v1/instances/{instance['id']}/actions",
        headers=bearer(operator),
        json={"operation": "shutdown", "timeout": 4, "force": True},
    )
    assert answer.status_code == 202, answer.text
    browser.get(f"{url}/instances/{instance['id']}")
    wait_live(browser)
    _mark_page(browser)

    assert text(browser, "#fact-badges") in ("shutdown pending", "shutdown running")
    (ongoing,) = attributes(browser, "svg#timeline rect.ongoing", "data-ongoing")
    assert (ongoing or "").startswith("shutdown ")

    wait(browser).until(lambda _: text(browser, "#fact-state") == "shutoff")
    wait(browser).until(lambda _: text(browser, "#fact-badges") == "")
    assert attributes(browser, "svg#timeline rect.ongoing", "data-ongoing") == []
    assert texts(browser, "#actions tbody tr:first-child td")[1:4] == ["shutdown", "forced", "operator"]
    assert _still_same_page(browser)


def test_a_past_transition_stays_drawn_from_the_history(
    service: tuple[Fleet, str], browser: WebDriver, service_tokens: dict[str, str]
) -> None:
    _, url = service
    operator = service_tokens["operator"]
    instance = _by_name(url, operator, "h1-vm-0")
    sign_in(browser, url, service_tokens["reader"])
    browser.get(f"{url}/instances/{instance['id']}")
    wait_live(browser)
    assert attributes(browser, "svg#timeline rect.transition", "data-transition") == []
    answer = httpx.post(
        f"{url}/v1/instances/{instance['id']}/actions",
        headers=bearer(operator),
        json={"operation": "shutdown", "timeout": 10},
    )
    assert answer.status_code == 202, answer.text
    wait(browser).until(lambda _: text(browser, "#fact-state") == "shutoff")
    wait(browser).until(lambda _: text(browser, "#fact-badges") == "")
    # The guest took its time to shut down: that stretch is drawn over the running band.
    assert attributes(browser, "svg#timeline rect.transition", "data-transition") == ["shutting_down"]
    assert "in transition (shutting_down)" in text(browser, "ul.legend")
