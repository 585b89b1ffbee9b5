// An instance's page: live parts swapped in from the server, and (operators) the operations.
"use strict";

(function () {
  const parts = document.getElementById("parts");
  const id = parts.dataset.instance;
  const period = parts.dataset.period;
  const result = document.getElementById("result");
  const FINAL = ["done", "failed", "interrupted"];
  let pending = null;

  async function refresh() {
    pending = null;
    const url = "/instances/" + encodeURIComponent(id) + "/parts?period=" + encodeURIComponent(period);
    const response = await fetch(url, { credentials: "same-origin", redirect: "manual" });
    if (response.type === "opaqueredirect") {
      window.location.assign("/login");
    } else if (response.ok) {
      parts.innerHTML = await response.text(); // the server's template escaped every value
    }
  }

  function refreshSoon() {
    if (pending === null) {
      pending = window.setTimeout(refresh, 150);
    }
  }

  // VCPU samples come without events: with sampling on, the parts are read again every interval.
  const every = Number(parts.dataset.refreshMs || 0);
  if (every > 0) {
    window.setInterval(refreshSoon, every);
  }

  window.pdLive({
    instance: function (data) {
      if (data.id === id) {
        refreshSoon();
      }
    },
    record: function (data) {
      if (data.instance_id === id) {
        refreshSoon();
      }
    },
    reconnected: refreshSoon,
  });

  if (result === null) {
    return; // a reader's page: no operations
  }

  function show(message, failed) {
    result.textContent = message;
    result.classList.toggle("error", failed);
  }

  // Every write carries the dashboard's header: the API refuses a cookie-authenticated write
  // without it, so another site's form cannot borrow the cookie.
  async function api(method, path, body) {
    const response = await fetch(path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Powerdrivers-Dashboard": "1" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : "HTTP " + response.status;
      throw new Error(message);
    }
    return data;
  }

  async function follow(label, action) {
    show(label + ": action " + action.id + " " + action.status, false);
    const deadline = Date.now() + 120000;
    while (!FINAL.includes(action.status) && Date.now() < deadline) {
      await new Promise(function (resolve) {
        window.setTimeout(resolve, 300);
      });
      action = await api("GET", "/v1/actions/" + action.id);
    }
    const outcome = action.outcome && action.outcome !== action.status ? " (" + action.outcome + ")" : "";
    const error = action.error ? ": " + action.error : "";
    show(label + ": action " + action.id + " " + action.status + outcome + error, action.status !== "done");
  }

  async function operate(operation) {
    const base = "/v1/instances/" + encodeURIComponent(id);
    const label = operation.replace("_", " ");
    try {
      if (operation === "clear_quarantine") {
        await api("POST", base + "/quarantine/clear");
        show("quarantine cleared", false);
      } else {
        await follow(label, await api("POST", base + "/actions", { operation: operation }));
      }
    } catch (error) {
      show(label + " refused: " + error.message, true);
    }
    refreshSoon();
  }

  for (const button of document.querySelectorAll("button.op")) {
    button.addEventListener("click", function () {
      operate(button.dataset.operation);
    });
  }

  const select = document.getElementById("policy-select");
  select.addEventListener("change", async function () {
    try {
      const instance = await api("PUT", "/v1/instances/" + encodeURIComponent(id) + "/policy", {
        policy: select.value,
      });
      show("policy set to " + instance.policy, false);
    } catch (error) {
      show("policy refused: " + error.message, true);
    }
    refreshSoon();
  });
})();
