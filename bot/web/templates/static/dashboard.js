// Live updates for the dashboard pages: listen to the bot's event stream and, when a release this page
// shows changes, fetch the page again and swap its live part in place (no reload, focus kept).
(function () {
  "use strict";
  var body = document.body;
  var source = body.getAttribute("data-events");
  var status = document.getElementById("live-status");
  if (!source || !window.EventSource || !window.fetch || !window.DOMParser) {
    if (status) status.textContent = "Live updates are off in this browser: reload to see changes.";
    return;
  }
  var scope = body.getAttribute("data-repo");
  var pr = body.getAttribute("data-pr");
  var timer = null;
  var busy = false;
  var again = false;
  var said = "";

  function say(text) {
    if (status) status.textContent = text;
  }

  function clock() {
    var now = new Date();
    return ("0" + now.getHours()).slice(-2) + ":" + ("0" + now.getMinutes()).slice(-2) + ":" +
      ("0" + now.getSeconds()).slice(-2);
  }

  // Where the focus was, so the same link or button has it after the swap.
  function focusKey(live) {
    var el = document.activeElement;
    if (!el || el === body || !live.contains(el)) return null;
    return { id: el.id, href: el.getAttribute("href"), text: el.textContent };
  }

  function refocus(live, key) {
    if (!key) return;
    var found = key.id ? document.getElementById(key.id) : null;
    if (!found && key.href) {
      var links = live.querySelectorAll("a[href]");
      for (var i = 0; i < links.length; i++) {
        if (links[i].getAttribute("href") === key.href) { found = links[i]; break; }
      }
    }
    if (found) found.focus({ preventScroll: true });
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected || !response.ok) { window.location.reload(); return null; }
        return response.text();
      })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (!fresh || !live) return;
        var key = focusKey(live);
        live.replaceWith(document.adoptNode(fresh));
        refocus(fresh, key);
        say("Updated at " + clock() + (said ? ": " + said : "") + ".");
      })
      .catch(function () { say("Could not update the page; it will try again on the next change."); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function changed(event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (scope && (String(data.repo).toLowerCase() !== scope.toLowerCase() || String(data.pr) !== pr)) return;
    said = data.repo + "#" + data.pr + " is " + String(data.state).replace("_", " ");
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 150);
  }

  var stream = new EventSource(source);
  stream.addEventListener("open", function () { say("Live updates on."); });
  stream.addEventListener("release", changed);
  stream.addEventListener("signed-out", function () {
    stream.close();
    say("Your session ended: reload to sign in again.");
  });
  stream.addEventListener("error", function () {
    if (stream.readyState === EventSource.CLOSED) say("Live updates stopped: reload to see changes.");
    else say("Live updates: reconnecting…");
  });
})();
