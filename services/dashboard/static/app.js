/* The operators' dashboard: polls the dashboard's API every 2 s and redraws each panel.
 * Metrics come from Prometheus through /api/query(_range)?q=<panel>; calls, escalations and the
 * emotion mix from /api/calls; the latest utterances from /api/events?since=<seq>. */
(function () {
  "use strict";
  const C = window.Charts;
  const $ = (id) => document.getElementById(id);
  const RANGE_S = 300;
  const STAGES = ["decode", "process", "produce", "commit", "total"];
  const SERVICE_COLOURS = {
    asr_alignment: "#4cc9f0", text_encoder: "#b197fc", speech_encoder: "#ffd43b", graph_gat: "#63e6be",
    moe_fusion: "#ff8787",
  };
  const EXTRA = ["#74c0fc", "#f783ac", "#a9e34b", "#ffa94d", "#e599f7", "#66d9e8"];
  const state = { config: null, lastSeq: -1, feed: [], refreshMs: 2000, tick: 0 };

  function serviceColour(name) {
    if (SERVICE_COLOURS[name]) return SERVICE_COLOURS[name];
    let h = 0;
    for (const ch of String(name)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return EXTRA[h % EXTRA.length];
  }
  function emotionColour(label) { return (state.config && state.config.colours[label]) || "#8b95a5"; }

  async function getJSON(url) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), 8000);
    try {
      const r = await fetch(url, { cache: "no-store", signal: ctrl.signal });
      let body = null;
      try { body = await r.json(); } catch (e) { /* not JSON */ }
      if (!r.ok) {
        const err = new Error((body && body.error) || ("HTTP " + r.status));
        err.status = r.status;
        throw err;
      }
      return body;
    } finally { clearTimeout(timer); }
  }
  const instant = (q) => getJSON("/api/query?q=" + encodeURIComponent(q)).then((b) => b.data.result);
  const range = (q) => getJSON("/api/query_range?q=" + encodeURIComponent(q) + "&range=" + RANGE_S).then((b) => b.data.result);
  const num = (v) => { const x = parseFloat(v); return isFinite(x) ? x : NaN; };

  function failed(node, settled, what) {
    if (settled.status === "fulfilled") return false;
    const err = settled.reason || {};
    const msg = err.status === 502 ? "Prometheus unreachable" : (what || "query failed") + ": " + (err.message || err);
    C.empty(node, msg, "error");
    return true;
  }

  /* ---- metric panels ------------------------------------------------------------------- */
  function timeSeries(nodeId, kpiId, rangeRes, nowRes, opts) {
    const node = $(nodeId);
    if (failed(node, nowRes)) { $(kpiId).textContent = "–"; return; }
    const current = {};
    for (const r of nowRes.value) current[r.metric[opts.by] || "?"] = num(r.value[1]);
    const byName = {};
    if (rangeRes.status === "fulfilled") {
      for (const r of rangeRes.value) byName[r.metric[opts.by] || "?"] = r.values.map(([t, v]) => [t, num(v)]);
    }
    const names = Array.from(new Set([...Object.keys(byName), ...Object.keys(current)])).sort();
    if (!names.length) {
      C.empty(node, opts.emptyText || "no data yet");
      $(kpiId).textContent = "–";
      return;
    }
    const series = names.map((n) => ({ name: n, colour: serviceColour(n), points: byName[n] || [] }));
    const total = C.line(node, series, { current, format: opts.format });
    $(kpiId).textContent = C.fmt(total);
    $(kpiId).appendChild(C.el("small", {}, " " + opts.unit));
    $(kpiId).dataset.value = String(total);
  }

  function joinPending(res) {
    /* utterances waiting in the joins (graph_gat, moe_fusion) for their other inputs */
    const node = $("join-pending");
    C.clear(node);
    const rows = res.status === "fulfilled" ? res.value.map((r) => [r.metric.service, num(r.value[1])]) : [];
    rows.sort((a, b) => a[0].localeCompare(b[0]));
    node.dataset.state = res.status !== "fulfilled" ? "error" : rows.length ? "ok" : "empty";
    node.dataset.total = String(rows.reduce((a, [, v]) => a + (C.finite(v) ? v : 0), 0));
    node.appendChild(document.createTextNode(rows.length ? "waiting in joins: " : "waiting in joins: no data yet"));
    rows.forEach(([svc, v], i) => {
      if (i) node.appendChild(document.createTextNode(" · "));
      node.appendChild(C.el("span", { class: "join", "data-service": svc, "data-value": String(v) }, svc + " "));
      node.lastChild.appendChild(C.el("b", {}, C.fmt(v)));
    });
  }

  function lagPanel(res) {
    const node = $("chart-lag");
    if (failed(node, res)) return;
    const items = res.value.map((r) => ({
      key: r.metric.topic + "|" + r.metric.service, name: r.metric.topic, sub: "→ " + r.metric.service,
      value: num(r.value[1]), attrs: { "data-topic": r.metric.topic, "data-service": r.metric.service },
    })).sort((a, b) => (b.value - a.value) || a.key.localeCompare(b.key));
    if (!items.length) { C.empty(node, "no data yet"); $("kpi-lag").textContent = "–"; return; }
    for (const it of items) {
      it.colour = it.value >= 1000 ? "var(--bad)" : it.value >= 100 ? "var(--warn)" : "var(--ok)";
      it.text = C.fmt(it.value);
    }
    const total = C.bars(node, items, { max: C.niceMax(Math.max(10, ...items.map((i) => i.value))) });
    $("kpi-lag").textContent = C.fmt(total);
    $("kpi-lag").dataset.value = String(total);
  }

  function latencyTint(s) {
    if (!C.finite(s)) return "";
    // 10 ms green -> 250 ms amber -> 2.5 s red (log scale), as a translucent background
    const f = Math.max(0, Math.min(1, (Math.log10(s) + 2) / 2.4));
    const hue = 140 - 140 * f;
    return `hsla(${hue.toFixed(0)}, 70%, 45%, ${0.18 + 0.25 * f})`;
  }

  function eventLatency(p50, p95) {
    /* end to end, from the utterance message to its emotion event (moe_fusion) */
    const kpi = $("kpi-e2e");
    const value = (res) => (res.status === "fulfilled" && res.value.length ? num(res.value[0].value[1]) : NaN);
    const v50 = value(p50), v95 = value(p95);
    kpi.dataset.p50 = C.finite(v50) ? String(v50) : "";
    kpi.dataset.value = C.finite(v95) ? String(v95) : "";
    kpi.textContent = C.finite(v95) ? C.fmtSeconds(v95) : "–";
    kpi.title = C.finite(v95) ? `emotion events, end to end: p50 ${C.fmtSeconds(v50)}, p95 ${C.fmtSeconds(v95)}`
      : "emotion events, end to end: no data yet";
    kpi.appendChild(C.el("small", {}, " p95 end to end"));
  }

  function latencyPanel(p50, p95) {
    const node = $("chart-latency");
    if (failed(node, p95)) return;
    const cells = {};
    const put = (res, key) => {
      if (res.status !== "fulfilled") return;
      for (const r of res.value) {
        const s = r.metric.service, st = r.metric.stage;
        ((cells[s] = cells[s] || {})[st] = cells[s][st] || {})[key] = num(r.value[1]);
      }
    };
    put(p50, "p50"); put(p95, "p95");
    const services = Object.keys(cells).filter((s) => Object.values(cells[s]).some((c) => C.finite(c.p95) || C.finite(c.p50))).sort();
    if (!services.length) { C.empty(node, "no data yet"); return; }
    C.clear(node);
    const table = C.el("table", { class: "lat" });
    const head = C.el("tr");
    head.appendChild(C.el("th", {}, "service"));
    for (const st of STAGES) head.appendChild(C.el("th", { class: "stage" }, st));
    table.appendChild(head);
    for (const s of services) {
      const tr = C.el("tr", { "data-service": s });
      const name = C.el("td", { class: "svc" });
      const sw = C.el("span", {}, "● "); sw.style.color = serviceColour(s);
      name.append(sw, document.createTextNode(s));
      tr.appendChild(name);
      for (const st of STAGES) {
        const c = (cells[s] || {})[st] || {};
        const td = C.el("td", {
          "data-service": s, "data-stage": st,
          "data-p50": C.finite(c.p50) ? String(c.p50) : "", "data-p95": C.finite(c.p95) ? String(c.p95) : "",
        });
        if (C.finite(c.p50) || C.finite(c.p95)) {
          td.append(C.el("span", { class: "p50" }, C.fmtSeconds(c.p50)), C.el("br"), C.el("span", { class: "p95" }, C.fmtSeconds(c.p95)));
          td.style.background = latencyTint(c.p95);
          td.title = `${s} ${st}: p50 ${C.fmtSeconds(c.p50)}, p95 ${C.fmtSeconds(c.p95)}`;
        } else { td.className = "na"; td.textContent = "–"; }
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    node.appendChild(table);
    node.dataset.state = "ok";
    node.dataset.services = services.join(",");
  }

  function batchPanel(mean, p95) {
    const node = $("chart-batch");
    if (failed(node, mean)) return;
    const marks = {};
    if (p95.status === "fulfilled") for (const r of p95.value) marks[r.metric.service] = num(r.value[1]);
    const items = mean.value.map((r) => {
      const s = r.metric.service, v = num(r.value[1]);
      return { key: s, name: s, value: v, mark: marks[s], colour: serviceColour(s), text: C.fmt(v),
               valueSub: C.finite(marks[s]) ? "p95 " + C.fmt(marks[s]) : "", attrs: { "data-p95": String(marks[s]) } };
    }).filter((i) => C.finite(i.value)).sort((a, b) => a.key.localeCompare(b.key));
    if (!items.length) { C.empty(node, "no data yet"); return; }
    C.bars(node, items);
  }

  function kvList(node, title, rows, haveServices) {
    if (!rows.length) {
      if (haveServices) C.empty(node, title + ": none ✓", "zero"); else C.empty(node, "no data yet");
      return 0;
    }
    C.clear(node);
    const box = C.el("div", { class: "kv" });
    box.appendChild(C.el("div", { class: "title" }, title));
    let total = 0;
    for (const r of rows) {
      total += r.value;
      const row = C.el("div", Object.assign({ class: "row" + (r.value > 0 ? " bad" : ""), "data-value": String(r.value) }, r.attrs));
      row.append(C.el("span", { class: "k" }, r.name), C.el("span", { class: "v" }, C.fmt(r.value)));
      if (r.sub) row.appendChild(C.el("span", { class: "sub", title: r.sub }, r.sub));
      box.appendChild(row);
    }
    node.appendChild(box);
    node.dataset.state = "ok";
    node.dataset.total = String(total);
    return total;
  }

  function failuresPanel(errors, dls, bounded, up) {
    const haveServices = up.status === "fulfilled" && up.value.length > 0;
    let total = 0;
    const byService = (res, label) => {
      const acc = {};
      for (const r of res.value) {
        const s = r.metric.service, v = num(r.value[1]);
        const a = acc[s] = acc[s] || { value: 0, kinds: [] };
        a.value += v;
        if (v > 0) a.kinds.push(r.metric[label] + (v !== 1 ? " ×" + C.fmt(v) : ""));
      }
      return Object.entries(acc).map(([s, a]) => ({ name: s, sub: a.kinds.join(", "), value: a.value,
        attrs: { "data-service": s, "data-kinds": a.kinds.join(",") } })).sort((a, b) => b.value - a.value || a.name.localeCompare(b.name));
    };
    let known = false;
    if (!failed($("chart-errors"), errors)) {
      total += kvList($("chart-errors"), "errors (retried)", byService(errors, "kind"), haveServices);
      known = known || haveServices || errors.value.length > 0;
    }
    if (!failed($("chart-deadletters"), dls)) {
      total += kvList($("chart-deadletters"), "dead letters", byService(dls, "error_type"), haveServices);
      known = known || haveServices || dls.value.length > 0;
    }
    if (!failed($("chart-kafka-bounded"), bounded)) {  // a subset of the errors: not added to the total
      kvList($("chart-kafka-bounded"), "Kafka calls bounded", byService(bounded, "role"), haveServices);
    }
    $("kpi-failures").textContent = known ? C.fmt(total) : "–";
    $("kpi-failures").dataset.value = known ? String(total) : "";
  }

  /* ---- events panels ------------------------------------------------------------------- */
  function mixPanel(calls, metric) {
    const node = $("chart-emotion-mix");
    const labels = (state.config && state.config.emotions) || [];
    let counts = null, source = "events", bySpeaker = {};
    let metricCounts = null;
    if (metric.status === "fulfilled" && metric.value.length) {
      metricCounts = {};
      for (const r of metric.value) metricCounts[r.metric.label] = Math.round(num(r.value[1]));
    }
    if (calls.status === "fulfilled" && calls.value.mix.total > 0) {
      counts = calls.value.mix.counts; bySpeaker = calls.value.mix.by_speaker || {};
    } else if (metricCounts) {
      counts = metricCounts; source = "metric";
    }
    const total = counts ? Object.values(counts).reduce((a, b) => a + (b || 0), 0) : 0;
    $("kpi-events").textContent = total ? String(total) : "–";
    $("kpi-events").dataset.value = String(total);
    mixCheck(source, counts, metricCounts);
    if (!total) {
      if (calls.status !== "fulfilled") C.empty(node, "events unavailable", "error");
      else C.empty(node, "no data yet");
      return;
    }
    const all = Array.from(new Set([...labels, ...Object.keys(counts)]));
    const items = all.map((l) => {
      const n = counts[l] || 0;
      const parts = Object.keys(bySpeaker).sort().filter((s) => bySpeaker[s][l]).map((s) => s + " " + bySpeaker[s][l]);
      return { key: l, name: l, value: n, colour: emotionColour(l), text: String(n),
               valueSub: total ? Math.round(100 * n / total) + "%" : "", title: parts.join(" · ") || l,
               attrs: { "data-label": l, "data-count": String(n),
                        "data-metric-count": metricCounts ? String(metricCounts[l] || 0) : "" } };
    });
    C.bars(node, items, { max: Math.max(...items.map((i) => i.value)) });
    node.dataset.source = source;
  }

  function mixCheck(source, counts, metricCounts) {
    /* the mix from the topic next to moe_fusion's emotion_events_total over the same window */
    const node = $("mix-check");
    const sum = (c) => Object.values(c || {}).reduce((a, b) => a + (b || 0), 0);
    node.dataset.source = counts ? source : "";
    node.dataset.metricTotal = metricCounts ? String(sum(metricCounts)) : "";
    if (!metricCounts) { node.dataset.state = "empty"; node.textContent = "emotion_events_total: no data yet"; return; }
    if (source === "metric") {
      node.dataset.state = "ok";
      node.textContent = "from emotion_events_total (no events read)";
      return;
    }
    const labels = new Set([...Object.keys(counts), ...Object.keys(metricCounts)]);
    const same = Array.from(labels).every((l) => (counts[l] || 0) === (metricCounts[l] || 0));
    node.dataset.state = same ? "ok" : "warn";
    node.textContent = `emotion_events_total: ${sum(metricCounts)} ` +
      (same ? "✓ same mix" : `(topic: ${sum(counts)})`);
  }

  function timelinesPanel(calls) {
    const node = $("chart-timelines");
    if (calls.status !== "fulfilled") { C.empty(node, "events unavailable: " + calls.reason.message, "error"); return; }
    const list = calls.value.calls;
    if (!list.length) { C.empty(node, "no active calls yet"); node.dataset.calls = ""; return; }
    C.clear(node);
    const negative = new Set((state.config && state.config.negative) || []);
    for (const call of list) node.appendChild(callRow(call, negative));
    node.dataset.state = "ok";
    node.dataset.calls = list.map((c) => c.call_id).join(",");
    node.dataset.escalated = list.filter((c) => c.escalated).map((c) => c.call_id).join(",");
    node.dataset.total = String(list.length);
  }

  function callRow(call, negative) {
    const row = C.el("div", {
      class: "call-row", "data-call-id": call.call_id, "data-escalated": String(call.escalated),
      "data-escalation": call.escalated ? (call.escalation.ongoing ? "ongoing" : "past") : "",
      "data-labels": call.utterances.map((u) => u.label).join(","),
      "data-speakers": call.utterances.map((u) => u.speaker).join(","),
    });
    const meta = C.el("div", { class: "call-meta" });
    const id = C.el("div", { class: "call-id", title: call.call_id }, call.call_id);
    if (call.escalated) {
      const e = call.escalation;
      id.appendChild(C.el("span", {
        class: "esc-badge" + (e.ongoing ? "" : " past"), "data-kind": e.kind,
        title: e.reason + (e.ongoing ? "" : " (over)") + ": " + e.labels.join(", "),
      }, (e.ongoing ? "ESCALATING" : "ESCALATED") + (e.kind === "rising" ? " ↗" : " ×") + e.length));
    }
    const idle = call.idle_s < 5 ? "live" : Math.round(call.idle_s) + " s ago";
    meta.append(id, C.el("div", { class: "call-sub" }, `${C.mmss(call.t1)} · ${call.utterances.length} utt · ${idle}`));
    const last = call.utterances[call.utterances.length - 1];
    if (last && last.transcript) meta.appendChild(C.el("div", { class: "call-last", title: last.transcript }, "“" + last.transcript + "”"));
    row.appendChild(meta);

    const lanes = call.speakers.length ? call.speakers : ["mono"];
    const W = Math.max(300, (row.clientWidth || 0) - 200, $("chart-timelines").clientWidth - 230), LANE = 14, GAP = 3, LBL = 58;
    const H = lanes.length * (LANE + GAP) + 10;
    const s = C.svg("svg", { class: "tl", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    s.style.height = H + "px";
    const x = (t) => LBL + (t - call.t0) / (call.t1 - call.t0) * (W - LBL - 4);
    lanes.forEach((sp, i) => {
      const y = i * (LANE + GAP);
      s.appendChild(C.svg("rect", { class: "lane", x: LBL, y, width: W - LBL - 4, height: LANE, rx: 2 }));
      s.appendChild(C.svg("text", { class: "lane-label", x: 0, y: y + 11 }, sp));
    });
    for (const u of call.utterances) {
      const i = Math.max(0, lanes.indexOf(u.speaker));
      const x0 = x(Math.max(u.start, call.t0)), x1 = x(u.end);
      const r = C.svg("rect", {
        class: "utt", x: x0.toFixed(1), y: i * (LANE + GAP), width: Math.max(2, x1 - x0).toFixed(1), height: LANE, rx: 2,
        fill: emotionColour(u.label), "fill-opacity": (0.55 + 0.45 * (C.finite(u.confidence) ? u.confidence : 1)).toFixed(2),
        "data-utterance-id": u.utterance_id, "data-label": u.label, "data-speaker": u.speaker,
      });
      const conf = C.finite(u.confidence) ? " " + Math.round(u.confidence * 100) + "%" : "";
      r.appendChild(C.svg("title", {}, `${u.speaker} ${C.mmss(u.start)}–${C.mmss(u.end)}: ${u.label}${conf}\n${u.transcript || ""}` +
        (u.missing && u.missing.length ? `\n(missing: ${u.missing.join(", ")})` : "")));
      s.appendChild(r);
    }
    if (call.escalated) {
      const i = Math.max(0, lanes.indexOf("customer"));
      const xe = x(Math.max(call.escalation.at, call.t0)), past = call.escalation.ongoing ? "" : " past";
      s.appendChild(C.svg("line", { class: "esc-line" + past, x1: xe, x2: xe, y1: 0, y2: lanes.length * (LANE + GAP) - GAP }));
      s.appendChild(C.svg("path", { class: "esc-mark" + past, d: `M${xe - 5} ${i * (LANE + GAP) + LANE + 7} l5 -6 l5 6 z`,
        "data-escalation-since": call.escalation.since }));
    }
    const yT = lanes.length * (LANE + GAP) + 8;
    s.appendChild(C.svg("text", { class: "tick", x: LBL, y: yT }, C.mmss(call.t0)));
    s.appendChild(C.svg("text", { class: "tick", x: W - 4, y: yT, "text-anchor": "end" }, C.mmss(call.t1)));
    row.appendChild(s);
    return row;
  }

  function feedPanel(events) {
    const node = $("chart-events");
    if (events.status !== "fulfilled") { C.empty(node, "events unavailable", "error"); return; }
    const body = events.value;
    if (body.last_seq < state.lastSeq) state.feed = [];  // the dashboard restarted
    state.feed = state.feed.concat(body.events).slice(-6);
    state.lastSeq = body.last_seq;
    if (!state.feed.length) { C.empty(node, "no data yet"); return; }
    C.clear(node);
    for (const e of state.feed.slice().reverse()) {
      const row = C.el("div", { class: "ev", "data-call-id": e.call_id, "data-label": e.label, "data-seq": String(e.seq) });
      const tag = C.el("span", { class: "label-tag" }, e.label);
      tag.style.background = emotionColour(e.label);
      const txt = C.el("span", { class: "txt", title: e.transcript }, " " + (e.transcript || ""));
      row.append(C.el("span", { class: "t" }, C.clock(e.created_at)), tag, txt,
        C.el("span", { class: "who", title: e.call_id + " / " + e.speaker }, e.speaker + " · " + e.call_id));
      node.appendChild(row);
    }
    node.dataset.state = "ok";
    node.dataset.total = String(state.feed.length);
  }

  /* ---- header -------------------------------------------------------------------------- */
  function pill(id, st, html) {
    const p = $(id);
    p.dataset.state = st;
    C.clear(p);
    for (const part of html) p.appendChild(typeof part === "string" ? document.createTextNode(part) : part);
  }

  function header(r) {
    const promOk = r.thrNow.status === "fulfilled";
    pill("status-prometheus", promOk ? "ok" : "bad", [promOk ? "Prometheus" : "Prometheus unreachable"]);
    if (r.calls.status === "fulfilled") {
      const ev = r.calls.value.events || {};
      if (ev.enabled === false) pill("status-events", "unknown", ["Kafka events off"]);
      else if (ev.assigned) pill("status-events", "ok", ["Kafka ", C.el("b", {}, String(ev.partitions)), " partitions"]);
      else pill("status-events", "bad", [ev.error ? "Kafka: " + ev.error.slice(0, 60) : "Kafka connecting…"]);
      const n = r.calls.value.active_calls, esc = r.calls.value.escalated_calls, now = r.calls.value.escalating_calls;
      pill("status-calls", n ? "ok" : "unknown", [C.el("b", {}, String(n)), " active calls"]);
      pill("status-escalations", now ? "bad" : esc ? "warn" : "ok",
        [C.el("b", {}, String(esc)), " escalations" + (esc ? ` (${now} ongoing)` : "")]);
      $("status-calls").dataset.value = String(n);
      $("status-escalations").dataset.value = String(esc);
      $("status-escalations").dataset.ongoing = String(now);
    } else {
      pill("status-events", "bad", ["dashboard events unavailable"]);
    }
    if (r.up.status === "fulfilled") {
      const svc = r.up.value.map((x) => [x.metric.service, num(x.value[1])]);
      const upCount = svc.filter(([, v]) => v >= 1).length;
      const down = svc.filter(([, v]) => v < 1).map(([s]) => s);
      pill("status-services", !svc.length ? "unknown" : down.length ? "warn" : "ok",
        [C.el("b", {}, `${upCount}/${svc.length}`), " services up" + (down.length ? " (down: " + down.join(", ") + ")" : "")]);
      $("status-services").dataset.value = String(upCount);
    }
    const now = new Date();
    $("last-refresh").textContent = now.toTimeString().slice(0, 8);
    $("last-refresh").dataset.ts = String(now.getTime() / 1000);
  }

  /* ---- loop ---------------------------------------------------------------------------- */
  async function refresh() {
    state.tick += 1;
    const tasks = {
      thrRange: range("throughput"), thrNow: instant("throughput"),
      audioRange: range("audio"), audioNow: instant("audio"),
      lag: instant("lag_by_service"), join: instant("join_pending"),
      p50: instant("stage_p50"), p95: instant("stage_p95"),
      e2e50: instant("event_latency_p50"), e2e95: instant("event_latency_p95"),
      bmean: instant("batch_mean"), bp95: instant("batch_p95"),
      errors: instant("errors"), dls: instant("deadletters"), bounded: instant("kafka_bounded"), up: instant("service_up"),
      mixMetric: getJSON("/api/query?query=" + encodeURIComponent(state.config.mix_query)).then((b) => b.data.result),
      calls: getJSON("/api/calls"),
      events: getJSON("/api/events?limit=6&since=" + Math.max(0, state.lastSeq)),
    };
    const keys = Object.keys(tasks);
    const settled = await Promise.allSettled(Object.values(tasks));
    const r = {};
    keys.forEach((k, i) => { r[k] = settled[i]; });
    const steps = [
      () => timeSeries("chart-throughput", "kpi-throughput", r.thrRange, r.thrNow, { by: "service", unit: "msg/s" }),
      () => timeSeries("chart-audio", "kpi-audio", r.audioRange, r.audioNow, { by: "service", unit: "s/s" }),
      () => lagPanel(r.lag), () => joinPending(r.join),
      () => latencyPanel(r.p50, r.p95), () => eventLatency(r.e2e50, r.e2e95), () => batchPanel(r.bmean, r.bp95),
      () => failuresPanel(r.errors, r.dls, r.bounded, r.up), () => mixPanel(r.calls, r.mixMetric),
      () => timelinesPanel(r.calls), () => feedPanel(r.events), () => header(r),
    ];
    for (const step of steps) {
      try { step(); } catch (e) { console.error("dashboard panel failed", e); }
    }
    document.body.dataset.refreshes = String(state.tick);
    setTimeout(refresh, state.refreshMs);
  }

  function legend() {
    const box = $("emotion-legend");
    C.clear(box);
    for (const l of state.config.emotions) {
      const chip = C.el("span", { class: "chip", "data-label": l });
      const sw = C.el("i"); sw.style.background = emotionColour(l);
      chip.append(sw, document.createTextNode(l));
      box.appendChild(chip);
    }
  }

  async function start() {
    try {
      state.config = await getJSON("/api/config");
    } catch (e) {
      setTimeout(start, 2000);
      return;
    }
    state.refreshMs = state.config.refresh_ms || 2000;
    const esc = state.config.escalation;
    $("stack-name").textContent = state.config.stack;
    $("mix-window").textContent = "last " + Math.round(state.config.mix_window_s / 60) + " min · from the emotions topic";
    $("footer").textContent = `Refreshes every ${state.refreshMs / 1000} s · metrics from Prometheus, events from the ` +
      `${state.config.topics.emotions} Kafka topic · escalation: ${esc.speaker} ${state.config.negative.join("/")} ` +
      `for ${esc.turns} utterances in a row, or negative probability rising over ${esc.turns} to ≥ ${esc.rising_min_final}`;
    legend();
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
