/* The driver's scans: queued on the phone first, sent when there is a network.
 *
 * Each scan gets its own id here, is kept in localStorage, and is sent (with the others
 * waiting) to /driver/scans, which forwards them to logistics' idempotent batch: a scan
 * whose answer was lost is simply sent again and counted once. Nothing is dropped until
 * logistics has answered for it. */
(function () {
  "use strict";
  var box = document.getElementById("scanner");
  if (!box) { return; }
  var d = box.dataset;
  var KEY = "branchline.scans." + d.driver;
  var CRATE = /^CR\d{8}$/i;
  var KEEP_DONE = 50;        // answered scans kept for the log
  var RETRY_MS = 5000;       // re-send waiting scans this often
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var form = document.getElementById("scan-form");
  var code = document.getElementById("scan-code");
  var site = document.getElementById("scan-site");
  var kind = document.getElementById("scan-kind");
  var state = document.getElementById("queue-state");
  var log = document.getElementById("scan-log");
  var sending = false;
  var signedOut = false;

  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // Not a secure context (plain http on a LAN): a random v4 UUID all the same.
    var b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function load() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }

  function save(entries) {
    var waiting = entries.filter(function (e) { return e.state === "waiting"; });
    var done = entries.filter(function (e) { return e.state !== "waiting"; }).slice(-KEEP_DONE);
    var keep = entries.filter(function (e) { return waiting.indexOf(e) >= 0 || done.indexOf(e) >= 0; });
    localStorage.setItem(KEY, JSON.stringify(keep));
  }

  function describe(entry) {
    if (entry.state === "waiting") { return d.queued; }
    if (entry.state === "refused") { return d.refused + (entry.note ? ": " + entry.note : ""); }
    return d.sent + (entry.note ? " · " + entry.note : "");
  }

  function render() {
    var entries = load();
    var waiting = entries.filter(function (e) { return e.state === "waiting"; }).length;
    if (waiting) {
      var text = d.waiting.replace("{n}", String(waiting));
      if (signedOut) { text += " · " + d.signin; } else if (!navigator.onLine) { text += " · " + d.offline; }
      state.textContent = text;
      state.className = "queue " + (signedOut ? "signin" : "waiting");
    } else {
      state.textContent = d.allSent;
      state.className = "queue sent";
    }
    log.textContent = "";
    entries.slice(-20).reverse().forEach(function (e) {
      var li = document.createElement("li");
      li.className = e.state;
      li.dataset.scanId = e.scan.scan_id;
      var what = e.scan.crate_id || (e.scan.barcodes || []).join(", ") || e.scan.site;
      li.textContent = e.label + " · " + what + " — " + describe(e);
      log.appendChild(li);
    });
  }

  function summary(result) {
    if (result.duplicate) { return d.duplicate; }
    var parts = (result.results || []).map(function (r) { return r.barcode + ": " + r.outcome; });
    if (result.crate) { parts.push(result.crate.crate_id + ": " + result.crate.status); }
    if (result.stop) { parts.push(result.stop.site + ": " + result.stop.status); }
    return parts.join("; ");
  }

  function problem(p) {
    if (typeof p === "string") { return p; }
    if (Array.isArray(p)) { return p.map(function (x) { return x.msg || JSON.stringify(x); }).join("; "); }
    return JSON.stringify(p);
  }

  function settle(update) {
    // Apply answers to what storage holds now: scans may have been added meanwhile.
    var entries = load();
    entries.forEach(function (e) { if (update[e.scan.scan_id]) { Object.assign(e, update[e.scan.scan_id]); } });
    save(entries);
  }

  function send() {
    if (sending || !navigator.onLine) { render(); return; }
    var waiting = load().filter(function (e) { return e.state === "waiting"; }).slice(0, 500);
    if (!waiting.length) { render(); return; }
    sending = true;
    fetch("/driver/scans", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRF-Token": csrf},
      body: JSON.stringify({scans: waiting.map(function (e) { return e.scan; })})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        var update = {};
        if (r.ok) {
          signedOut = false;
          (body.scans || []).forEach(function (s) {
            update[s.scan_id] = s.status === 200 && s.result
              ? {state: "sent", note: summary(s.result)}
              : {state: "refused", note: problem(s.problem)};
          });
        } else if (r.status === 401 || r.status === 403) {
          signedOut = true;  // kept: sent once they sign in again
        } else if (r.status < 500) {
          waiting.forEach(function (e) {
            update[e.scan.scan_id] = {state: "refused", note: problem(body.detail)};
          });
        }
        settle(update);
      });
    }).catch(function () {
      // No network after all: the scans stay queued for the next try.
    }).then(function () { sending = false; render(); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var value = code.value.trim();
    var k = kind.value;
    if (!value && k !== "arrive" && k !== "depart") { code.focus(); return; }
    var scan = {scan_id: newId(), route_id: d.route, site: site.value, kind: k,
                time: new Date().toISOString()};
    if (CRATE.test(value)) { scan.crate_id = value.toUpperCase(); }
    else if (value) { scan.barcodes = [value]; }
    var entries = load();
    entries.push({scan: scan, state: "waiting", note: "",
                  label: kind.options[kind.selectedIndex].text + " @ " + site.value});
    save(entries);
    code.value = "";
    code.focus();
    render();
    send();
  });

  window.addEventListener("online", send);
  window.addEventListener("offline", render);
  setInterval(send, RETRY_MS);
  render();
  send();
}());
