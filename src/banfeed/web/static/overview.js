/* banfeed overview: the activity chart (uPlot, vendored) and live numbers.
 * The page is complete without this file: the series is a table, the range switcher links
 * (?range=7d), the numbers those of the page load. With it: a chart of the series from
 * GET /api/v1/overview/series, a range switch without a reload, and the numbers refreshed every
 * 30 s from GET /api/v1/overview, paused while the tab is hidden. Text only goes in through
 * textContent: nothing from the server is parsed as HTML. */
(function () {
  "use strict";
  var REFRESH_MS = 30000;
  var SERIES_EVERY = 10; // refreshes: the chart is fetched again every 5 minutes
  var activity = document.getElementById("activity");
  var live = document.getElementById("live");
  var chartBox = document.getElementById("chart");
  var plot = null;
  var shown = null; // the series drawn
  var ticks = 0;
  var timer = null;

  function get(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error(url + ": HTTP " + r.status);
        return r.json();
      });
  }

  function at(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? o : o[k]; }, obj);
  }

  function minutes(iso) { // the page's time filter: 2026-12-08 10:31
    return iso ? String(iso).slice(0, 16).replace("T", " ") : "—";
  }

  function number(n) { return n == null ? "—" : Number(n).toLocaleString("en-US"); }

  function shownValue(el, value) {
    switch (el.dataset.f) {
      case "n": return number(value);
      case "t": return minutes(value);
      case "until": return value && Date.parse(value) > Date.now() ? minutes(value) : "—";
      case "len": return value == null ? "—" : String(value.length);
      case "err":
        return value && value.error_kind ? value.error_kind + ": " + (value.error_message || "") : "—";
      default: return value == null ? "—" : String(value);
    }
  }

  function row(cells, cls) {
    var tr = document.createElement("tr");
    if (cls) tr.className = cls;
    cells.forEach(function (cell) {
      var td = document.createElement("td");
      if (typeof cell === "number") { td.className = "num"; td.textContent = number(cell); }
      else td.textContent = cell;
      tr.appendChild(td);
    });
    return tr;
  }

  function fill(tbody, rows, empty, width) {
    tbody.replaceChildren.apply(tbody, rows.length ? rows : [row([empty])]);
    if (!rows.length) tbody.firstChild.firstChild.colSpan = width;
  }

  // -- the numbers ---------------------------------------------------------------------------

  function update(o) {
    var feeds = document.querySelectorAll("#feeds tbody tr").length;
    var devices = document.querySelectorAll("#devices tbody tr[data-row]").length;
    if (o.feeds.length !== feeds || o.devices.length !== devices) {
      location.reload(); // the configuration changed (a reload of banfeed): draw it anew
      return;
    }
    document.querySelectorAll("[data-k]").forEach(function (el) {
      el.textContent = shownValue(el, at(o, el.dataset.k));
    });
    document.querySelectorAll("#devices tr[data-row]").forEach(function (tr) {
      tr.classList.toggle("bad", !!(at(o, tr.dataset.row) || {}).error_kind);
    });
    var cycles = document.querySelector("#cycles tbody");
    if (cycles) {
      fill(cycles, o.cycles.map(function (c) {
        return row([minutes(c.started), c.duration_s.toFixed(2), c.polls_ok, c.polls_failed,
          c.new_offenses, c.new_offenders, c.rejected, c.failed.join(", ") || "—"],
          c.polls_failed ? "bad" : "");
      }), "No cycle kept yet.", 8);
      cycles.querySelectorAll("tr").forEach(function (tr) {
        if (tr.children.length > 1) tr.children[1].className = "num";
      });
    }
    live.textContent = "Numbers as of " + new Date().toISOString().slice(11, 19) +
      " UTC, refreshed every 30 s.";
  }

  function refresh() {
    ticks += 1;
    get("/api/v1/overview").then(update).catch(function (e) {
      live.textContent = "Could not refresh the numbers (" + e.message + "); retrying in 30 s.";
    });
    if (activity && ticks % SERIES_EVERY === 0) loadSeries(activity.dataset.range, false);
  }

  function start() {
    if (timer === null && !document.hidden) timer = setInterval(refresh, REFRESH_MS);
  }

  function stop() {
    if (timer !== null) { clearInterval(timer); timer = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) stop();
    else { refresh(); start(); }
  });

  // -- the chart -----------------------------------------------------------------------------

  function colour(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  function utc(ts, daily) { // 24-hour UTC times, as the rest of the page shows them
    var text = new Date(ts * 1000).toISOString();
    return daily ? text.slice(5, 10) : text.slice(5, 16).replace("T", " ");
  }

  function options(width, step, times) {
    var axis = { stroke: colour("--muted"), grid: { stroke: colour("--line"), width: 1 },
      ticks: { stroke: colour("--line"), width: 1 } };
    function line(label, name, extra) {
      return Object.assign({ label: label, stroke: colour(name), width: 2, points: { show: false },
        paths: uPlot.paths.stepped({ align: 1 }), value: function (u, v) { return number(v); } },
        extra || {});
    }
    return {
      width: width,
      height: 260,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false },
        y: { range: function (u, min, max) { return [0, Math.max(4, Math.ceil(max * 1.1))]; } } },
      axes: [
        Object.assign({}, axis, { splits: function () {
          // bucket starts, every few buckets (7d: each day at 00:00 UTC)
          var every = step === 21600 ? 4 : Math.ceil(times.length / 8);
          return times.filter(function (t) { return t % (every * step) === 0; });
        }, values: function (u, splits) {
          return splits.map(function (v) {
            return step >= 86400 ? utc(v, true) : step > 3600 ? utc(v) : utc(v).slice(6);
          });
        } }),
        Object.assign({}, axis, { size: 60 }),
      ],
      series: [
        { label: "from (UTC)", value: function (u, v) { return v == null ? "—" : utc(v); } },
        line("offenses", "--bad", { fill: colour("--badbg") }),
        line("new offenders", "--accent"),
        line("expiries", "--ok", { dash: [6, 4] }),
      ],
    };
  }

  function draw(s) {
    shown = s;
    if (typeof uPlot === "undefined") return; // the table stays the view
    // One more point at the range's end, so the last bucket is drawn as wide as the others.
    function closed(values) { return values.concat([values[values.length - 1]]); }
    var data = [s.time.concat([s.time[s.time.length - 1] + s.step]), closed(s.offenses),
      closed(s.new_offenders), closed(s.expiries)];
    if (plot) plot.destroy();
    chartBox.hidden = false;
    plot = new uPlot(options(chartBox.clientWidth || 800, s.step, s.time), data, chartBox);
    document.getElementById("series-table").open = false;
  }

  var WORDS = { "24h": "the last 24 hours, hourly", "7d": "the last 7 days, 6-hourly",
    "30d": "the last 30 days, daily" };

  function tables(s) {
    var body = document.querySelector("#series-table tbody");
    var rows = s.time.map(function (t, i) {
      return row([minutes(new Date(t * 1000).toISOString()), s.offenses[i], s.new_offenders[i],
        s.expiries[i]]);
    }).reverse();
    fill(body, rows, "", 4);
    var per = { 3600: "hour", 21600: "6 hours", 86400: "day" }[s.step] || s.step + " s";
    document.querySelector("#series-table summary").textContent =
      "Offenses, new offenders and expiries per " + per;
    document.getElementById("range-words").textContent = (WORDS[s.range] || s.range) + " (UTC)";
    ["causes", "devices", "vdoms"].forEach(function (key) {
      var tbody = document.querySelector('[data-top="' + key + '"] tbody');
      fill(tbody, s.top[key].map(function (t) { return row([t.name, t.offenses]); }),
        "No offense in the range.", 2);
    });
  }

  function loadSeries(range, push) {
    return get(activity.dataset.url + "?range=" + encodeURIComponent(range)).then(function (s) {
      activity.dataset.range = s.range;
      activity.querySelectorAll(".ranges a").forEach(function (a) {
        if (a.dataset.range === s.range) a.setAttribute("aria-current", "true");
        else a.removeAttribute("aria-current");
      });
      if (push) history.replaceState(null, "", "?range=" + encodeURIComponent(s.range));
      tables(s);
      draw(s);
    }).catch(function (e) {
      live.textContent = "Could not load the chart (" + e.message + ").";
    });
  }

  if (activity) {
    activity.querySelectorAll(".ranges a").forEach(function (a) {
      a.addEventListener("click", function (event) {
        event.preventDefault();
        loadSeries(a.dataset.range, true);
      });
    });
    loadSeries(activity.dataset.range, false);
    window.addEventListener("resize", function () {
      if (plot) plot.setSize({ width: chartBox.clientWidth, height: 260 });
    });
    if (window.matchMedia) {
      window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
        if (shown) draw(shown); // the colours come from the theme's variables
      });
    }
  }
  live.textContent = "Numbers refreshed every 30 s.";
  start();
})();
