// The dashboard's live feed: one EventSource on the API's stream (the sign-in cookie
// authenticates it); the browser reconnects by itself, resuming from the last event id.
"use strict";

// handlers: a function per event type ("instance", "record", "host"), and optionally
// "reconnected", called when the stream is back after a break: only records are replayed
// (by Last-Event-ID), so a page re-reads what it shows then.
window.pdLive = function (handlers) {
  const indicator = document.getElementById("live");
  const source = new EventSource("/v1/events");
  let broken = false;
  source.onopen = function () {
    indicator.hidden = false;
    indicator.classList.remove("lost");
    indicator.textContent = "live";
    if (broken && handlers.reconnected) {
      handlers.reconnected();
    }
    broken = false;
  };
  source.onerror = function () {
    broken = true;
    indicator.hidden = false;
    indicator.classList.add("lost");
    indicator.textContent = "reconnecting";
  };
  Object.keys(handlers).forEach(function (type) {
    if (type === "reconnected") {
      return;
    }
    source.addEventListener(type, function (event) {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      handlers[type](data);
    });
  });
  return source;
};

// "2026-12-02T18:39:39.123+00:00" -> "2026-12-02 18:39:39", as the server renders times.
window.pdWhen = function (iso) {
  return iso ? iso.slice(0, 19).replace("T", " ") : "";
};

// The badges of an instance object (the API's JSON), built as the server's template builds them.
window.pdBadges = function (instance) {
  const badges = [];
  function badge(kind, text, title) {
    const span = document.createElement("span");
    span.className = "badge badge-" + kind;
    span.textContent = text;
    span.title = title;
    badges.push(span);
  }
  if (instance.stale) {
    badge("stale", "stale", "the host does not answer: this is the last reading");
  }
  if (instance.backoff_until && Date.parse(instance.backoff_until) > Date.now()) {
    badge("backoff", "backoff", "no restart before " + window.pdWhen(instance.backoff_until) + " UTC");
  }
  if (instance.quarantined) {
    badge("quarantine", "quarantine", instance.fault || "quarantined");
  }
  if (instance.in_flight) {
    const action = instance.in_flight;
    badge("action", action.operation + " " + action.status, "requested by " + action.requested_by);
  }
  return badges;
};
