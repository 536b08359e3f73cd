/* Live updates for the status pages, without a framework and without a full reload.
 *
 * The page is complete without this script (server-rendered; the filters are a GET form).
 * With it, every 2 s the page fetches its HTML fragment (the URL is in <main data-fragment>),
 * and each element of the fragment with data-live replaces the page's element with the same
 * id, when it changed. The fragment is server-rendered and escaped like the page; it is parsed
 * in an inert <template>, so nothing in it runs or loads while it is parsed.
 *
 * Polling pauses while the tab is hidden, while text is selected inside a live section, and
 * when the reader presses "Pause live updates". The header says when the data last updated.
 *
 * The fetch sends the session cookie (same origin). When the session has ended (401, or a
 * redirect, which is not followed), the reader is sent to the login page, which brings them
 * back here after.
 */
(function () {
  "use strict";

  var PERIOD_MS = 2000;
  var TIMEOUT_MS = 8000;

  var root = document.querySelector("main[data-fragment]");
  var state = document.getElementById("live-state");
  var toggle = document.getElementById("live-toggle");
  if (!root || !state) {
    return;
  }
  document.documentElement.classList.add("js");

  var url = root.getAttribute("data-fragment");
  var login = root.getAttribute("data-login");
  var timer = 0;
  var busy = false;
  var paused = false;
  var lastUpdate = null;

  function clock(date) {
    return date.toISOString().slice(11, 19) + " UTC";
  }

  function show(text, kind) {
    state.textContent = text;
    state.setAttribute("data-kind", kind);
  }

  function since() {
    return lastUpdate ? "last update " + clock(lastUpdate) : "showing the data of page load";
  }

  function selecting() {
    var selection = window.getSelection();
    return Boolean(
      selection && !selection.isCollapsed && root.contains(selection.anchorNode)
    );
  }

  // Where the reader was: horizontal scroll of each table container, and the focused link.
  function remember(section) {
    var scrolls = [];
    section.querySelectorAll(".table-scroll[id]").forEach(function (el) {
      scrolls.push([el.id, el.scrollLeft]);
    });
    var focused = document.activeElement;
    var focus = null;
    if (focused && focused !== section && section.contains(focused)) {
      focus = focused.id ? { id: focused.id } : { href: focused.getAttribute("href") };
    }
    return { scrolls: scrolls, focus: focus };
  }

  function restore(saved) {
    saved.scrolls.forEach(function (pair) {
      var el = document.getElementById(pair[0]);
      if (el) {
        el.scrollLeft = pair[1];
      }
    });
    var f = saved.focus;
    if (!f) {
      return;
    }
    var target = null;
    if (f.id) {
      target = document.getElementById(f.id);
    } else if (f.href) {
      root.querySelectorAll("a[href]").forEach(function (a) {
        if (!target && a.getAttribute("href") === f.href) {
          target = a;
        }
      });
    }
    if (target) {
      target.focus({ preventScroll: true });
    }
  }

  function swap(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var changed = 0;
    template.content.querySelectorAll("[data-live][id]").forEach(function (fresh) {
      var current = document.getElementById(fresh.id);
      if (!current || !root.contains(current) || current.outerHTML === fresh.outerHTML) {
        return;
      }
      var saved = remember(current);
      current.replaceWith(fresh);
      restore(saved);
      changed += 1;
    });
    return changed;
  }

  function toLogin() {
    var here = window.location.pathname + window.location.search;
    window.location.assign(login + "?next=" + encodeURIComponent(here));
  }

  function schedule(delay) {
    window.clearTimeout(timer);
    if (!paused && !document.hidden) {
      timer = window.setTimeout(tick, delay);
    }
  }

  function tick() {
    if (busy || paused || document.hidden) {
      return;
    }
    if (selecting()) {
      show("Paused while text is selected; " + since(), "paused");
      schedule(PERIOD_MS);
      return;
    }
    busy = true;
    var controller = new AbortController();
    var abort = window.setTimeout(function () {
      controller.abort();
    }, TIMEOUT_MS);
    fetch(url, {
      headers: { Accept: "text/html" },
      cache: "no-store",
      credentials: "same-origin",
      redirect: "manual",
      signal: controller.signal,
    })
      .then(function (response) {
        if (response.status === 401 || response.type === "opaqueredirect") {
          show("Your session has ended: opening the login page", "error");
          paused = true;
          toLogin();
          return undefined;
        }
        var type = response.headers.get("Content-Type") || "";
        if (type.indexOf("text/html") !== 0) {
          throw new Error("HTTP " + response.status);
        }
        return response.text().then(function (html) {
          swap(html);
          lastUpdate = new Date();
          if (response.ok) {
            show("Live: updated " + clock(lastUpdate), "ok");
          } else {
            // 503: the server still rendered the page (e.g. PostgreSQL down); it says what.
            show("Updated " + clock(lastUpdate) + " with errors (HTTP " + response.status + ")", "warn");
          }
        });
      })
      .catch(function (error) {
        var why = error && error.name === "AbortError" ? "timed out" : String(error.message || error);
        show("Update failed (" + why + "); " + since() + "; retrying", "error");
      })
      .finally(function () {
        window.clearTimeout(abort);
        busy = false;
        schedule(PERIOD_MS);
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
      show("Paused while the tab is hidden; " + since(), "paused");
    } else if (!paused) {
      schedule(0);
    }
  });

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(paused));
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      if (paused) {
        window.clearTimeout(timer);
        show("Live updates paused; " + since(), "paused");
      } else {
        schedule(0);
      }
    });
  }

  var loaded = state.querySelector("time[datetime]");
  if (loaded && !isNaN(Date.parse(loaded.getAttribute("datetime")))) {
    lastUpdate = new Date(loaded.getAttribute("datetime"));
  }
  show("Live: " + (lastUpdate ? "updated " + clock(lastUpdate) : "updating every 2 s"), "ok");
  schedule(PERIOD_MS);
})();
