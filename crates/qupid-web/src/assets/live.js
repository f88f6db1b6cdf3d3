// Keeps the overview live: polls /api/stats and /api/throughput, updates the counts and
// leases, and draws the throughput chart. Plain ES2017; no build step.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var base = document.body.getAttribute("data-base") || "";
  var every = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 2000;
  var SVG = "http://www.w3.org/2000/svg";

  function setText(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value; }
  }
  function span(secs) {
    if (secs < 60) { return secs + "s"; }
    if (secs < 3600) { return Math.floor(secs / 60) + "m"; }
    if (secs < 86400) { return Math.floor(secs / 3600) + "h"; }
    return Math.floor(secs / 86400) + "d";
  }
  function relative(at, now) {
    var ms = Math.abs(at - now);
    if (ms < 1000) { return "now"; }
    var s = span(Math.floor(ms / 1000));
    return at >= now ? "in " + s : s + " ago";
  }
  function utc(ms) { return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z"); }
  function getJson(path) {
    return fetch(base + path, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error(path + " answered " + r.status); }
        return r.json();
      });
  }
  function el(name, attrs, text) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function fmt(rate) { return rate >= 100 ? Math.round(rate).toString() : rate.toFixed(1); }

  function draw(tp) {
    var svg = document.getElementById("chart");
    if (!svg) { return; }
    var rates = tp.rates || [];
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("data-points", String(rates.length));
    if (rates.length < 2) {
      svg.appendChild(el("text", { x: "50%", y: "50%", "text-anchor": "middle", "class": "empty" }, "collecting samples…"));
      return;
    }
    // Draw in the chart's own pixels, so that the labels are not stretched.
    var W = Math.max(200, Math.round(svg.clientWidth || 600));
    var H = Math.max(80, Math.round(svg.clientHeight || 160));
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var top = 14, bottom = H - 12;
    var max = 1;
    rates.forEach(function (r) { max = Math.max(max, r.completed_per_sec, r.dead_per_sec); });
    var t0 = rates[0].at_ms, t1 = rates[rates.length - 1].at_ms, span_ = Math.max(1, t1 - t0);
    function x(r) { return ((r.at_ms - t0) / span_ * (W - 50) + 45).toFixed(1); }
    function y(v) { return (bottom - v / max * (bottom - top)).toFixed(1); }
    [0, 0.5, 1].forEach(function (f) {
      var yy = y(max * f);
      svg.appendChild(el("line", { x1: 45, x2: W, y1: yy, y2: yy, "class": "grid" }));
      svg.appendChild(el("text", { x: 40, y: Number(yy) + 4, "text-anchor": "end", "class": "axis" }, fmt(max * f)));
    });
    ["completed", "dead"].forEach(function (k) {
      var pts = rates.map(function (r) { return x(r) + "," + y(r[k + "_per_sec"]); }).join(" ");
      svg.appendChild(el("polyline", { points: pts, "class": "line-" + k }));
    });
    // The legend: the mean of the last few rates, steadier than the last one alone.
    var recent = rates.slice(-5);
    function mean(k) {
      return recent.reduce(function (sum, r) { return sum + r[k + "_per_sec"]; }, 0) / recent.length;
    }
    setText("rate-completed", fmt(mean("completed")));
    setText("rate-dead", fmt(mean("dead")));
  }

  function refresh() {
    Promise.all([getJson("/api/stats"), getJson("/api/throughput")])
      .then(function (r) {
        var st = r[0];
        ["queued", "running", "completed", "dead"].forEach(function (s) {
          setText("count-" + s, String(st.counts[s]));
        });
        setText("count-total", String(st.total));
        setText("expired", st.expired_leases === 0 ? "none" : String(st.expired_leases));
        var at = st.oldest_lease_expires_at_ms;
        setText("oldest-lease", at === null ? "none"
          : (at >= st.now_ms ? "expires " : "expired ") + relative(at, st.now_ms));
        setText("clock", utc(st.now_ms));
        draw(r[1]);
        live.setAttribute("data-state", "ok");
        live.textContent = "updated " + new Date().toLocaleTimeString() + ", every " + (every / 1000) + "s";
      })
      .catch(function (e) {
        live.setAttribute("data-state", "error");
        live.textContent = "refresh failed: " + e.message;
      })
      .then(function () { setTimeout(refresh, every); });
  }
  refresh();
})();
