// Observatory: the few behaviours that need a script. Every page works
// without it; this file only adds the viewer's time zone and the live tail.
(function () {
  "use strict";

  // Remember the viewer's zone so the server renders local times.
  var zone = "UTC";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) {}
  var had = document.cookie.split("; ").some(function (c) { return c.indexOf("obs_tz=") === 0; });
  var secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "obs_tz=" + encodeURIComponent(zone) + "; Path=/; Max-Age=31536000; SameSite=Lax" + secure;
  var tried = false;
  try { tried = sessionStorage.getItem("obs_tz_reload") === "1"; } catch (e) { tried = true; }
  if (!had && !tried && zone !== "UTC" && document.querySelector("time")) {
    try { sessionStorage.setItem("obs_tz_reload", "1"); } catch (e) {}
    location.reload();
    return;
  }

  var toggle = document.getElementById("tail-toggle");
  var rows = document.getElementById("rows");
  var status = document.getElementById("tail-status");
  if (!toggle || !rows || !window.EventSource) return;
  toggle.hidden = false;
  var source = null;
  var added = 0;

  function say(text) { status.textContent = text; }

  function stop(text) {
    if (source) source.close();
    source = null;
    toggle.setAttribute("aria-pressed", "false");
    toggle.textContent = "Live tail";
    say(text || "");
  }

  function start() {
    source = new EventSource(toggle.getAttribute("data-src"));
    toggle.setAttribute("aria-pressed", "true");
    toggle.textContent = "Stop live tail";
    say("Live: waiting for decisions…");
    source.addEventListener("decision", function (e) {
      // The server rendered and escaped the row; it is inserted as is.
      rows.insertAdjacentHTML("afterbegin", e.data);
      var row = rows.firstElementChild;
      if (row) row.classList.add("new");
      var empty = document.querySelector(".results .empty");
      if (empty) empty.remove();
      while (rows.children.length > 500) rows.lastElementChild.remove();
      added++;
      say("Live: " + added + " new decision" + (added === 1 ? "" : "s"));
    });
    source.addEventListener("end", function () { stop("Live tail ended: sign in again."); });
    source.addEventListener("problem", function () { say("Live: paused, retrying…"); });
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) stop("Live tail disconnected.");
    };
  }

  toggle.addEventListener("click", function () {
    if (source) stop("Live tail stopped."); else start();
  });
})();
