/* Small chart helpers for the dashboard: SVG line charts, horizontal bars, placeholders.
 * No dependencies.  Every chart writes its state and latest values into data-* attributes
 * (data-state="ok|empty|zero|error", data-total, per item data-value; line chart legends also data-max,
 * the peak over the drawn range) so tests can read them. */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function finite(v) { return typeof v === "number" && isFinite(v); }

  function fmt(v, digits) {
    if (!finite(v)) return "–";
    const a = Math.abs(v);
    if (digits !== undefined) return v.toFixed(digits);
    if (a === 0) return "0";
    if (Number.isInteger(v) && a < 10000) return String(v);
    if (a >= 10000) return (v / 1000).toFixed(a >= 100000 ? 0 : 1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.01) return String(+v.toFixed(2));
    return v.toExponential(1);
  }

  function fmtSeconds(s) {
    if (!finite(s)) return "–";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
    return s.toFixed(s < 10 ? 2 : 1) + " s";
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function mmss(s) {
    s = Math.max(0, Math.round(s));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function niceMax(v) {
    if (!finite(v) || v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  /* A placeholder instead of a chart: "no data yet", "Prometheus unreachable", "none". */
  function empty(node, message, state) {
    clear(node);
    node.dataset.state = state || "empty";
    node.dataset.total = state === "zero" ? "0" : "";
    node.appendChild(el("div", { class: "empty" }, message || "no data yet"));
  }

  /* series: [{name, colour, points: [[t, v], ...]}]; opts.current: {name: value}; opts.format */
  function line(node, series, opts) {
    opts = opts || {};
    const format = opts.format || fmt;
    clear(node);
    const W = Math.max(200, node.clientWidth || 400), H = 118, L = 42, R = 6, T = 6, B = 16;
    let t0 = Infinity, t1 = -Infinity, vmax = 0;
    for (const s of series) for (const [t, v] of s.points) {
      if (!finite(v)) continue;
      t0 = Math.min(t0, t); t1 = Math.max(t1, t); vmax = Math.max(vmax, v);
    }
    if (opts.t0 !== undefined) t0 = opts.t0;
    if (opts.t1 !== undefined) t1 = opts.t1;
    if (!(t1 > t0)) t1 = t0 + 1;
    const ymax = niceMax(vmax * 1.1);
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    const root = svg("svg", { class: "line", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    for (const f of [0, 0.5, 1]) {
      const yy = y(ymax * f);
      root.appendChild(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: yy, y2: yy }));
      root.appendChild(svg("text", { class: "axis-label", x: L - 5, y: yy + 3, "text-anchor": "end" }, format(ymax * f)));
    }
    root.appendChild(svg("text", { class: "axis-label", x: L, y: H - 3 }, clock(t0)));
    root.appendChild(svg("text", { class: "axis-label", x: W - R, y: H - 3, "text-anchor": "end" }, clock(t1)));
    for (const s of series) {
      let d = "", pen = false;
      for (const [t, v] of s.points) {
        if (!finite(v)) { pen = false; continue; }
        d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      }
      if (d) root.appendChild(svg("path", { class: "series", d, stroke: s.colour, "data-series": s.name }));
    }
    node.appendChild(root);
    const legend = el("div", { class: "legend-items" });
    let total = 0;
    for (const s of series) {
      const cur = opts.current && s.name in opts.current ? opts.current[s.name] : lastValue(s.points);
      if (finite(cur)) total += cur;
      const peak = Math.max(-Infinity, ...s.points.map((p) => p[1]).filter(finite));
      const item = el("span", {
        class: "legend-item", "data-series": s.name, "data-value": finite(cur) ? String(cur) : "",
        "data-max": finite(peak) ? String(peak) : "", title: s.name + ": peak " + format(peak),
      });
      const sw = el("i", { class: "sw" }); sw.style.background = s.colour;
      item.append(sw, el("span", {}, s.name + " "), el("b", {}, format(cur)));
      legend.appendChild(item);
    }
    node.appendChild(legend);
    node.dataset.state = "ok";
    node.dataset.total = String(total);
    return total;
  }

  function lastValue(points) {
    for (let i = points.length - 1; i >= 0; i--) if (finite(points[i][1])) return points[i][1];
    return NaN;
  }

  /* items: [{key, name, sub, value, mark, colour, text, attrs}] */
  function bars(node, items, opts) {
    opts = opts || {};
    const format = opts.format || fmt;
    clear(node);
    const max = opts.max || niceMax(Math.max(0, ...items.map((i) => Math.max(i.value || 0, i.mark || 0))));
    const box = el("div", { class: "bars" });
    let total = 0;
    for (const it of items) {
      if (finite(it.value)) total += it.value;
      const row = el("div", Object.assign({ class: "bar-row", "data-key": it.key, "data-value": String(it.value) }, it.attrs || {}));
      const name = el("span", { class: "name", title: it.title || it.name }, it.name);
      if (it.sub) { name.appendChild(document.createTextNode(" ")); name.appendChild(el("small", {}, it.sub)); }
      const track = el("span", { class: "track" });
      const fill = el("span", { class: "fill" });
      fill.style.width = Math.min(100, Math.max(finite(it.value) && it.value > 0 ? 1.5 : 0, (it.value || 0) / max * 100)) + "%";
      fill.style.background = it.colour || "var(--accent)";
      track.appendChild(fill);
      if (finite(it.mark)) {
        const mark = el("span", { class: "mark" });
        mark.style.left = "calc(" + Math.min(100, it.mark / max * 100) + "% - 1px)";
        track.appendChild(mark);
      }
      const val = el("span", { class: "val" }, it.text !== undefined ? it.text : format(it.value));
      if (it.valueSub) { val.appendChild(document.createTextNode(" ")); val.appendChild(el("small", {}, it.valueSub)); }
      row.append(name, track, val);
      box.appendChild(row);
    }
    node.appendChild(box);
    node.dataset.state = "ok";
    node.dataset.total = String(total);
    return total;
  }

  window.Charts = { el, svg, clear, empty, line, bars, fmt, fmtSeconds, clock, mmss, niceMax, finite };
})();
