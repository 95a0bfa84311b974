// roomgate status page: keeps the live parts fresh from status.json (a
// relative URL, so a path prefix works) and adds copy buttons. The page is
// complete without it. Text goes in through textContent only. Its words
// come from the page (data-strings on <html>, in the language of
// site.lang), so that this file stays the same for every language.
(function () {
  "use strict";
  var REFRESH_MS = 5000;
  var BAR_WIDTH = 1440;
  var T = {};
  try {
    T = JSON.parse(document.documentElement.getAttribute("data-strings") || "{}");
  } catch (e) {
    T = {};
  }
  var UNITS = T.units || ["s", "min", "h", "d"];

  // A phrase with its one placeholder filled in, like Strings::fill.
  function fill(pattern, value) {
    return (pattern || "{}").replace("{}", value);
  }

  function each(sel, root, fn) {
    Array.prototype.forEach.call((root || document).querySelectorAll(sel), fn);
  }
  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }
  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }
  function span(s) {
    if (s < 60) return s + " " + UNITS[0];
    if (s < 3600) return Math.floor(s / 60) + " " + UNITS[1];
    if (s < 86400) return Math.floor(s / 3600) + " " + UNITS[2];
    return Math.floor(s / 86400) + " " + UNITS[3];
  }
  function ago(iso) {
    return fill(T.ago, span(Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000))));
  }
  function setTime(el, iso) {
    if (!el) return;
    if (iso) {
      el.setAttribute("datetime", iso);
      el.title = new Date(iso).toLocaleString(document.documentElement.lang || undefined);
      setText(el, ago(iso));
    } else {
      el.removeAttribute("datetime");
      setText(el, T.never || "");
    }
  }
  function setState(el, state) {
    if (!el) return;
    el.className = "badge state-" + state;
    setText(el, T[state] || state);
  }

  function drawBar(svg, segments) {
    if (!svg) return;
    var end = Date.now();
    var start = end - 86400 * 1000;
    var ns = "http://www.w3.org/2000/svg";
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    segments.forEach(function (seg) {
      var a = (Date.parse(seg.from) - start) / (end - start) * BAR_WIDTH;
      var b = (Date.parse(seg.to) - start) / (end - start) * BAR_WIDTH;
      a = Math.min(BAR_WIDTH, Math.max(0, a));
      b = Math.min(BAR_WIDTH, Math.max(0, b));
      var r = document.createElementNS(ns, "rect");
      r.setAttribute("x", a.toFixed(1));
      r.setAttribute("y", "0");
      r.setAttribute("width", Math.max(3, b - a).toFixed(1));
      r.setAttribute("height", "1");
      r.setAttribute("class", seg.state);
      svg.appendChild(r);
    });
  }

  function render(status) {
    var labels = {};
    var states = {};
    var down = [];
    status.servers.forEach(function (s) {
      labels[s.name] = s.label;
      states[s.name] = s.state;
      if (s.state === "down") down.push(s.label);
      var box = document.querySelector('[data-server="' + CSS.escape(s.name) + '"]');
      if (!box) return;
      setState(field(box, "state"), s.state);
      setTime(field(box, "since"), s.since);
      setTime(field(box, "last-check"), s.last_check);
      setText(field(box, "latency"), s.latency_ms === null ? "\u2013" : s.latency_ms + " ms");
      var err = field(box, "error");
      setText(err, s.error || T.no_error || "");
      if (err) err.className = s.error ? "error" : "";
      var a = s.uptime.availability_percent;
      setText(field(box, "availability"),
        a === null ? T.no_data || "" : a.toFixed(2).replace(".", T.decimal || ".") + " %");
      setText(field(box, "watched"), fill(T.watched_for, span(s.uptime.known_s)));
      drawBar(field(box, "bar"), s.uptime.segments);
    });
    status.rooms.forEach(function (r) {
      var card = document.querySelector('[data-room="' + CSS.escape(r.name) + '"]');
      if (!card) return;
      var target = field(card, "target");
      if (r.server) {
        setText(field(card, "server"), labels[r.server] || r.server);
        setState(field(card, "server-state"), states[r.server] || "unknown");
        field(card, "server-state").hidden = states[r.server] === "up";
        if (target) {
          target.href = r.target;
          setText(target, r.target);
        }
      } else {
        setText(field(card, "server"), T.every_server_down || "");
        field(card, "server-state").hidden = true;
        if (target) {
          target.removeAttribute("href");
          setText(target, "");
        }
      }
      field(card, "backup").hidden = !r.fallback;
      // How many are in the room: nothing when unknown (see IndexPage::new).
      var n = r.occupants;
      var people = field(card, "occupants");
      if (people) {
        people.hidden = typeof n !== "number";
        setText(people, typeof n !== "number" ? "" : n > 0 ? fill(T.here_now, n) : T.nobody_here || "");
        people.classList.toggle("nobody", n === 0);
      }
      card.classList.toggle("occupied", typeof n === "number" && n > 0);
    });
    // The banner names rooms with no server left instead of promising
    // them a backup (see IndexPage::new).
    var stranded = [];
    var moved = false;
    status.rooms.forEach(function (r) {
      var state = r.server ? states[r.server] : undefined;
      if (!r.target || state === "down") stranded.push(r.name);
      else if (r.fallback) moved = true;
    });
    var alert = document.getElementById("alert");
    if (alert) {
      setText(field(alert, "down-list"), down.join(", "));
      setText(field(alert, "stranded-list"), stranded.join(", "));
      field(alert, "moved").hidden = !moved;
      field(alert, "stranded").hidden = stranded.length === 0;
      alert.hidden = down.length === 0;
    }
    var allUp = document.getElementById("all-up");
    if (allUp) {
      allUp.hidden = !status.servers.every(function (s) { return s.state === "up"; });
    }
    var updated = document.getElementById("updated");
    setTime(updated, status.generated);
    if (updated) updated.classList.remove("stale");
  }

  function refresh() {
    fetch("status.json", { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (!resp.ok) throw new Error("status.json answered " + resp.status);
        return resp.json();
      })
      .then(render)
      .catch(function () {
        // Say how old what is shown is, and that fresher news failed.
        var updated = document.getElementById("updated");
        if (!updated) return;
        var iso = updated.getAttribute("datetime");
        setText(updated, fill(T.stale, iso ? ago(iso) : T.a_while_ago || ""));
        updated.classList.add("stale");
      });
  }

  function copy(text, button) {
    function done(ok) {
      var old = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", old);
      button.textContent = (ok ? T.copied : T.press_ctrl_c) || old;
      setTimeout(function () { button.textContent = old; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      return;
    }
    // Plain http: select the link so that the user can copy it.
    var code = button.parentNode.querySelector("code");
    var range = document.createRange();
    range.selectNodeContents(code);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    done(ok);
  }

  // Short links from the page's own address: right behind any proxy prefix.
  each("[data-room]", document, function (card) {
    var name = card.getAttribute("data-room");
    var link = new URL("./" + name, document.baseURI).href;
    var code = field(card, "short");
    if (code && code.textContent !== link) {
      // Let a long link break after the last slash, not inside the name.
      var cut = link.length - name.length;
      code.textContent = link.slice(0, cut);
      code.appendChild(document.createElement("wbr"));
      code.appendChild(document.createTextNode(link.slice(cut)));
    }
    var button = field(card, "copy");
    if (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copy(link, button); });
    }
  });

  setInterval(refresh, REFRESH_MS);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();
