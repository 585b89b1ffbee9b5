// The fleet table: client-side filters, and rows kept current from "instance" events.
"use strict";

(function () {
  const tbody = document.querySelector("#fleet tbody");
  const host = document.getElementById("filter-host");
  const state = document.getElementById("filter-state");
  const policy = document.getElementById("filter-policy");
  const text = document.getElementById("filter-text");
  const count = document.getElementById("shown-count");
  const empty = document.getElementById("empty");

  function rowOf(id) {
    for (const row of tbody.rows) {
      if (row.dataset.id === id) {
        return row;
      }
    }
    return null;
  }

  function matches(row) {
    const needle = text.value.trim().toLowerCase();
    const haystack = (row.dataset.id + " " + row.dataset.host + " " + row.cells[1].textContent).toLowerCase();
    return (
      (!host.value || row.dataset.host === host.value) &&
      (!state.value || row.dataset.state === state.value) &&
      (!policy.value || row.dataset.policy === policy.value) &&
      (!needle || haystack.includes(needle))
    );
  }

  function applyFilters() {
    let shown = 0;
    for (const row of tbody.rows) {
      row.hidden = !matches(row);
      shown += row.hidden ? 0 : 1;
    }
    count.textContent = shown + " of " + tbody.rows.length + " shown";
    empty.hidden = shown > 0;
  }

  function cell(row, index, className) {
    while (row.cells.length <= index) {
      row.insertCell();
    }
    const td = row.cells[index];
    td.className = className;
    td.replaceChildren();
    return td;
  }

  function fill(row, instance) {
    row.dataset.id = instance.id;
    row.dataset.host = instance.host;
    row.dataset.state = instance.power_state;
    row.dataset.policy = instance.policy;
    cell(row, 0, "host").textContent = instance.host;
    const link = document.createElement("a");
    link.href = "/instances/" + encodeURIComponent(instance.id);
    link.textContent = instance.name;
    cell(row, 1, "name").append(link);
    const chip = document.createElement("span");
    chip.className = "state-chip state-" + instance.power_state;
    chip.textContent = instance.power_state;
    cell(row, 2, "state").append(chip);
    cell(row, 3, "transition").textContent = instance.transition || "";
    cell(row, 4, "policy").textContent = instance.policy;
    cell(row, 5, "changed").textContent = window.pdWhen(instance.observed_at);
    cell(row, 6, "badges").append(...window.pdBadges(instance));
  }

  function addHostOption(name) {
    for (const option of host.options) {
      if (option.value === name) {
        return;
      }
    }
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    host.append(option);
  }

  // The server orders rows by (host, id): a new row goes where a reload would put it.
  function insert(row) {
    for (const other of tbody.rows) {
      const before =
        other.dataset.host > row.dataset.host ||
        (other.dataset.host === row.dataset.host && other.dataset.id > row.dataset.id);
      if (before) {
        tbody.insertBefore(row, other);
        return;
      }
    }
    tbody.append(row);
  }

  function update(instance) {
    let row = rowOf(instance.id);
    if (row === null) {
      row = document.createElement("tr");
      fill(row, instance);
      insert(row);
      addHostOption(instance.host);
    } else {
      fill(row, instance);
    }
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight's animation
    row.classList.add("flash");
    applyFilters();
  }

  for (const control of [host, state, policy, text]) {
    control.addEventListener("input", applyFilters);
    control.addEventListener("change", applyFilters);
  }
  document.getElementById("filters").addEventListener("submit", function (event) {
    event.preventDefault();
  });
  // After a break in the stream: every instance, re-read page by page through the API.
  async function reread() {
    let url = "/v1/instances?limit=1000";
    while (url !== null) {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) {
        return;
      }
      const page = await response.json();
      page.items.forEach(update);
      url = page.next === null ? null : "/v1/instances?limit=1000&cursor=" + encodeURIComponent(page.next);
    }
  }

  applyFilters();
  window.pdLive({ instance: update, reconnected: reread });
})();
