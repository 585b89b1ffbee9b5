"""The dashboard's pages over HTTP, without a browser: sign-in, its cookie, redirects and errors.

What a browser cannot show: the cookie's flags, a token kept out of every answer and log, the
status codes of the pages' errors, and the headers that keep other sites and inline scripts out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from powerdrivers.service._app import create_app
from powerdrivers.service._auth import COOKIE_NAME
from powerdrivers.service._fleet import Fleet

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def client(fleet: Fleet) -> Iterator[TestClient]:
    """A client of the service's app over a started fleet; it follows no redirect by itself."""
    with TestClient(create_app(fleet), follow_redirects=False) as test_client:
        yield test_client


def _sign_in(client: TestClient, token: str) -> None:
    answer = client.post("/login", data={"token": token})
    assert answer.status_code == 303, answer.text


@pytest.mark.parametrize("path", ["/", "/instances/anything", "/instances/anything/parts"])
def test_a_page_without_a_token_sends_the_browser_to_the_login_form(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"


def test_the_login_form_and_the_static_files_need_no_token(client: TestClient) -> None:
    form = client.get("/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text and 'type="password"' in form.text
    for name, kind in [
        ("dashboard.css", "text/css"),
        ("fleet.js", "javascript"),
        ("instance.js", "javascript"),
    ]:
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200
        assert kind in answer.headers["content-type"]


def test_signing_in_sets_an_httponly_strict_cookie_and_never_shows_the_token(
    client: TestClient, service_tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    token = service_tokens["operator"]
    with caplog.at_level(logging.DEBUG):
        answer = client.post("/login", data={"token": token})
        page = client.get("/")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert flags[0] == f"{COOKIE_NAME}={token}".lower()
    assert {"httponly", "path=/", "samesite=strict"} <= set(flags)
    assert page.status_code == 200
    assert "signed in as <strong>operator</strong>" in page.text
    for text in (answer.text, answer.headers["location"], page.text, caplog.text):
        assert token not in text


def test_a_bad_token_is_answered_401_with_the_form_and_no_cookie(
    client: TestClient, service_tokens: dict[str, str]
) -> None:
    wrong = service_tokens["reader"][:-1]
    for body in ({"token": wrong}, {"token": ""}, {"other": "x"}):
        answer = client.post("/login", data=body)
        assert answer.status_code == 401
        assert "That token is not valid: check it and try again." in answer.text
        assert "set-cookie" not in answer.headers
        assert wrong not in answer.text
    undecodable = client.post("/login", content=b"token=\xff\xfe", headers=FORM)
    assert undecodable.status_code == 401


def test_a_huge_login_body_is_refused_unread(client: TestClient) -> None:
    answer = client.post("/login", content=b"token=" + b"a" * 100_000, headers=FORM)
    assert answer.status_code == 413
    assert "set-cookie" not in answer.headers


def test_signing_out_forgets_the_cookie(client: TestClient, service_tokens: dict[str, str]) -> None:
    _sign_in(client, service_tokens["reader"])
    assert client.get("/").status_code == 200
    answer = client.post("/logout")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    assert f'{COOKIE_NAME}=""' in answer.headers["set-cookie"]
    assert client.get("/").status_code == 303


def test_pages_forbid_inline_scripts_framing_and_caching(
    client: TestClient, service_tokens: dict[str, str]
) -> None:
    _sign_in(client, service_tokens["reader"])
    for path in ("/", "/login"):
        headers = client.get(path).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_an_unknown_instance_is_a_404_page_and_a_bad_period_a_400(
    client: TestClient, fleet: Fleet, service_tokens: dict[str, str]
) -> None:
    _sign_in(client, service_tokens["reader"])
    missing = client.get("/instances/no-such-instance")
    assert missing.status_code == 404
    assert "no instance has the id &#39;no-such-instance&#39;" in missing.text
    instance = fleet.instances(limit=1)[0][0]
    for period in ("2h", "", "1h" * 100):
        answer = client.get(f"/instances/{instance.id}", params={"period": period})
        assert answer.status_code == 400
        assert "period must be one of 1h, 24h, 7d" in answer.text
    for period in ("1h", "24h", "7d"):
        answer = client.get(f"/instances/{instance.id}", params={"period": period})
        assert answer.status_code == 200
        assert f'class="period current" href="?period={period}"' in answer.text


def test_only_an_operator_gets_the_operations_and_the_policy_selector(
    client: TestClient, fleet: Fleet, service_tokens: dict[str, str]
) -> None:
    instance = fleet.instances(limit=1)[0][0]
    _sign_in(client, service_tokens["reader"])
    page = client.get(f"/instances/{instance.id}").text
    assert "data-operation" not in page and "policy-select" not in page
    _sign_in(client, service_tokens["operator"])
    page = client.get(f"/instances/{instance.id}").text
    for operation in (
        "start",
        "shutdown",
        "power_off",
        "reboot",
        "hard_reboot",
        "pause",
        "unpause",
        "suspend",
        "resume",
    ):
        assert f'data-operation="{operation}"' in page
    assert 'data-operation="clear_quarantine"' in page
    assert 'id="policy-select"' in page


def test_the_live_parts_are_the_instance_pages_facts_timeline_and_actions(
    client: TestClient, fleet: Fleet, service_tokens: dict[str, str]
) -> None:
    instance = fleet.instances(limit=1)[0][0]
    _sign_in(client, service_tokens["reader"])
    parts = client.get(f"/instances/{instance.id}/parts", params={"period": "24h"})
    assert parts.status_code == 200
    assert 'id="fact-state"' in parts.text and 'id="timeline"' in parts.text and 'id="actions"' in parts.text
    assert "<html" not in parts.text


def test_a_change_on_the_sign_in_cookie_needs_the_dashboards_header(
    client: TestClient, fleet: Fleet, service_tokens: dict[str, str]
) -> None:
    instance = next(view for view in fleet.instances(limit=100)[0] if view.power_state.value == "running")
    _sign_in(client, service_tokens["operator"])
    path = f"/v1/instances/{instance.id}/policy"
    forged = client.put(path, json={"policy": "on_failure"})
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "csrf"
    assert fleet.instance(instance.id).policy.value == instance.policy.value
    answer = client.put(path, json={"policy": "on_failure"}, headers={"X-Powerdrivers-Dashboard": "1"})
    assert answer.status_code == 200, answer.text
    assert fleet.instance(instance.id).policy.value == "on_failure"


def test_an_id_holding_a_control_character_is_no_instance(
    client: TestClient, service_tokens: dict[str, str]
) -> None:
    _sign_in(client, service_tokens["reader"])
    for odd in ("a%00b", "a%0Ab", "%7F"):
        answer = client.get(f"/instances/{odd}")
        assert answer.status_code == 404
        assert "no instance has the id" in answer.text
