"""The instance page's VCPU plots: in headless Chromium over a real fleet sampling every 0.1 s, and as HTML.

The browser test compares what the page draws with the plots computed from the stored samples
the page read (up to the newest sample it drew), and waits for new samples to be drawn without
a reload.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_support import bearer, serve, wait_for
from browser_support import chromium, console_errors, screenshot_if_asked, sign_in, wait
from conftest import ConfigFactory
from selenium.webdriver.common.by import By
from starlette.testclient import TestClient

from powerdrivers import InstanceSpec, InstanceVcpuStats, VcpuStats, load_driver
from powerdrivers.service import _dashboard
from powerdrivers.service._app import create_app
from powerdrivers.service._dashboard_timeline import PERIODS
from powerdrivers.service._dashboard_vcpu import build_vcpu_plots
from powerdrivers.service._fleet import Fleet

SAMPLED = "[keeper]\nvcpu_sample_interval = 0.1\nvcpu_retention = 600\n"
#: Set to a path, the browser test writes the docs' picture of an instance page there.
INSTANCE_SCREENSHOT_ENV = "POWERDRIVERS_INSTANCE_SCREENSHOT"

#: Everything the page draws of its VCPU plots, read in one go (a live refresh cannot interleave).
READ_PLOTS = """
const section = document.getElementById("vcpu");
const timeline = document.getElementById("timeline").getBoundingClientRect();
return {
  start: section.dataset.start,
  end: section.dataset.end,
  timeline: [timeline.left, timeline.width],
  plots: Array.from(section.querySelectorAll("svg.vcpu-plot"), (svg) => ({
    vcpu: Number(svg.dataset.vcpu),
    samples: Number(svg.dataset.samples),
    last: svg.dataset.last,
    box: [svg.getBoundingClientRect().left, svg.getBoundingClientRect().width],
    viewBox: svg.getAttribute("viewBox"),
    titles: Array.from(svg.querySelectorAll("rect.column > title"), (title) => title.textContent),
    paths: Object.fromEntries(
      Array.from(svg.querySelectorAll("path.layer"), (path) => [path.classList[1], path.getAttribute("d")])
    ),
  })),
};
"""
#: The newest sample each plot drew.
READ_LASTS = "return Array.from(document.querySelectorAll('svg.vcpu-plot'), (svg) => svg.dataset.last);"


def spawn_wide(config_uri: str | None, vcpus: int = 3) -> str:
    """Spawn a running instance named ``wide`` with ``vcpus`` VCPUs on the fake host; return its id."""
    with load_driver("fake", config_uri) as driver:
        found: str = driver.spawn(InstanceSpec(name="wide", vcpus=vcpus)).id
        return found


def wait_rounds(fleet: Fleet, instance_id: str, count: int) -> None:
    since = datetime.now(UTC) - timedelta(minutes=5)
    wait_for(
        lambda: len({sample.at for sample in fleet.vcpu_samples(instance_id, since)}) >= count,
        f"{count} sampling rounds of {instance_id}",
    )


@pytest.fixture
def sampled(service_config_factory: ConfigFactory) -> Iterator[tuple[Fleet, str, str]]:
    """A fleet of one fake host sampled every 0.1 s on uvicorn, its URL, and a 3-VCPU instance's id."""
    config = service_config_factory(hosts=1, extra=SAMPLED)
    wide = spawn_wide(config.hosts[0].uri)
    fleet = Fleet(config)
    fleet.start()
    try:
        with serve(create_app(fleet)) as url:
            yield fleet, url, wide
    finally:
        fleet.stop()


def expected_plots(fleet: Fleet, instance_id: str, drawn: dict[str, Any]) -> list[dict[str, Any]]:
    """The plots computed from the stored samples the page read: its period, up to its newest sample."""
    end = datetime.fromisoformat(drawn["end"])
    last = max(datetime.fromisoformat(plot["last"]) for plot in drawn["plots"])
    stored = fleet.vcpu_samples(instance_id, end - PERIODS["1h"], last)
    plots = build_vcpu_plots(stored, end, PERIODS["1h"], 0.1)
    paths = ("running", "blocked", "halted", "waiting")
    return [
        {
            "vcpu": plot.vcpu,
            "samples": plot.samples,
            "titles": [column.title for column in plot.columns],
            "paths": {name: getattr(plot, f"{name}_path") for name in paths if getattr(plot, f"{name}_path")},
        }
        for plot in plots.plots
    ]


def test_the_instance_page_draws_one_plot_per_vcpu_from_the_samples_and_follows_new_ones(
    sampled: tuple[Fleet, str, str], service_tokens: dict[str, str]
) -> None:
    fleet, url, wide = sampled
    wait_rounds(fleet, wide, 3)
    with chromium() as browser:
        sign_in(browser, url, service_tokens["reader"])
        browser.get(f"{url}/instances/{wide}?period=1h")
        wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.vcpu-plot")) == 3)
        drawn: dict[str, Any] = browser.execute_script(READ_PLOTS)

        assert [plot["vcpu"] for plot in drawn["plots"]] == [0, 1, 2]
        assert all(plot["samples"] >= 3 for plot in drawn["plots"])
        assert [
            {key: plot[key] for key in ("vcpu", "samples", "titles", "paths")} for plot in drawn["plots"]
        ] == expected_plots(fleet, wide, drawn)
        # The fake measures halted, so it is drawn within blocked, and the legend names it.
        assert all({"running", "blocked", "halted"} <= set(plot["paths"]) for plot in drawn["plots"])
        legend = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#vcpu .legend li")]
        assert legend[:4] == [
            "running",
            "blocked (idle or I/O in the guest)",
            "of which halted (nothing to run)",
            "waiting for a physical CPU (steal)",
        ]
        # The same time axis as the power timeline: the same period, width and place on the page.
        assert datetime.fromisoformat(drawn["end"]) - datetime.fromisoformat(drawn["start"]) == PERIODS["1h"]
        for plot in drawn["plots"]:
            assert plot["viewBox"].startswith("0 0 1000 ")
            assert plot["box"] == pytest.approx(drawn["timeline"], abs=1.0)

        # New samples are drawn without a reload (the page reads its parts again every interval).
        browser.execute_script("window.pdNotReloaded = true;")
        shown = max(plot["last"] for plot in drawn["plots"])
        wait(browser).until(lambda d: min(d.execute_script(READ_LASTS) or [""]) > shown)
        assert browser.execute_script("return window.pdNotReloaded === true;")
        assert console_errors(browser) == []
        if os.environ.get(INSTANCE_SCREENSHOT_ENV):
            record_a_past_hour(fleet, wide, 3)
            browser.refresh()
            wait(browser).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.vcpu-plot rect.column")) > 300
            )
            screenshot_if_asked(browser, height=1100, variable=INSTANCE_SCREENSHOT_ENV)


def record_a_past_hour(fleet: Fleet, instance_id: str, vcpus: int) -> None:
    """For the docs' picture only: an hour of 30-second rounds before now, with 15 minutes of contention."""
    now = datetime.now(UTC)
    for step in range(120, 0, -1):
        waiting = 0.3 if 40 <= step <= 70 else 0.02
        stats = []
        for vcpu in range(vcpus):
            running = 0.3 + 0.2 * math.sin(step / 9 + vcpu)
            blocked = 1.0 - running - waiting - 0.03
            stats.append(VcpuStats(vcpu, running, blocked, waiting, 30.0, halted=blocked * 0.7))
        round_ = InstanceVcpuStats(instance_id, "wide", 30.0, tuple(stats))
        fleet.store.record_vcpu_samples("host-1", now - timedelta(seconds=30 * step), [round_])


def page(client: TestClient, token: str, instance_id: str) -> str:
    answer = client.get(f"/instances/{instance_id}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    shown: str = answer.text
    return shown


def test_without_samples_the_page_says_why(
    service_config_factory: ConfigFactory, service_tokens: dict[str, str]
) -> None:
    config = service_config_factory(hosts=1, extra="[keeper]\nvcpu_sample_interval = 0\n")
    wide = spawn_wide(config.hosts[0].uri)
    with Fleet(config) as fleet, TestClient(create_app(fleet)) as client:
        shown = page(client, service_tokens["reader"], wide)
        assert "VCPU sampling is off." in shown
        assert 'data-refresh-ms="0"' in shown
        assert 'svg class="vcpu-plot"' not in shown


def test_an_instance_never_sampled_has_a_note_and_a_sampled_one_a_plot_per_vcpu(
    service_config_factory: ConfigFactory, service_tokens: dict[str, str]
) -> None:
    config = service_config_factory(hosts=1, extra=SAMPLED)
    wide = spawn_wide(config.hosts[0].uri, vcpus=2)
    with Fleet(config) as fleet, TestClient(create_app(fleet)) as client:
        off = next(view for view in fleet.instances()[0] if view.power_state.value == "shutoff")
        shown = page(client, service_tokens["reader"], off.id)
        assert "No VCPU samples in this period." in shown
        # Sampling every 0.1 s: the page reads its parts again every 2 s (its floor), not 10 times a second.
        assert 'data-refresh-ms="2000"' in shown
        wait_rounds(fleet, wide, 1)
        shown = page(client, service_tokens["reader"], wide)
        assert shown.count('<svg class="vcpu-plot"') == 2
        assert "No VCPU samples" not in shown
        parts = client.get(f"/instances/{wide}/parts", headers=bearer(service_tokens["reader"])).text
        assert parts.count('<svg class="vcpu-plot"') == 2


def test_a_period_holding_more_samples_than_a_page_reads_shows_its_newest_part(
    service_config_factory: ConfigFactory, service_tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = service_config_factory(hosts=1, extra=SAMPLED)
    wide = spawn_wide(config.hosts[0].uri, vcpus=2)
    monkeypatch.setattr(_dashboard, "MAX_VCPU_SAMPLES", 6)
    with Fleet(config) as fleet, TestClient(create_app(fleet)) as client:
        wait_rounds(fleet, wide, 5)
        since = datetime.now(UTC) - timedelta(minutes=5)
        newest_before = max(sample.at for sample in fleet.vcpu_samples(wide, since))
        shown = page(client, service_tokens["reader"], wide)
        assert "The period holds more samples than a page draws: the plots begin at " in shown
        lasts = re.findall(r'data-last="([^"]+)"', shown)
        assert len(lasts) == 2
        assert all(datetime.fromisoformat(last) >= newest_before for last in lasts)
