// Marks the page when the script ran, then fetches a JSON file from the same server.
"use strict";

function mark(id, text) {
  const el = document.getElementById(id);
  if (el) {
    el.textContent = text;
    el.className = "ok";
  }
}

mark("js-status", "JavaScript loaded.");

fetch("/data.json")
  .then((r) => {
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  })
  .then((d) => mark("data-status", "data.json loaded: " + d.message))
  .catch((e) => {
    const el = document.getElementById("data-status");
    if (el) el.textContent = "data.json failed: " + e;
  });
