// The built-in dashboard: polls /dashboard/data and draws each panel as plain SVG.
// No libraries and no network beyond this server, so it works offline. Every drawn data
// element has class "mark"; each panel's <section> carries data-state (ok, empty, error)
// and data-marks, which the tests read from the page.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b",
  "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"];
const W = 560, H = 230, M = { l: 48, r: 12, t: 10, b: 26 };
const body = document.body;
let timer = null;

function el(tag, attrs, parent, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (Number.isInteger(v)) return v.toLocaleString("en");
  return a >= 10 ? v.toFixed(1) : v.toFixed(a >= 1 ? 2 : 3);
}

function fmtTime(ms, span) {
  const d = new Date(ms);
  if (span <= 2 * 86400e3) return d.toISOString().slice(11, 16);
  if (span <= 400 * 86400e3) return d.toISOString().slice(0, 10);
  return d.toISOString().slice(0, 7);
}

function frame(box) {
  return el("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" }, box);
}

function niceMax(v) {
  // The smallest "round" number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^n) at or above v.
  if (!(v > 0)) return 1;
  const mag = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map(m => m * mag).find(s => s >= v * 0.999);
}

function yAxis(svg, max, percent) {
  const g = el("svg:g", { class: "grid" }, svg);
  for (let i = 0; i <= 4; i++) {
    const y = M.t + (H - M.t - M.b) * (1 - i / 4);
    el("svg:line", { x1: M.l, x2: W - M.r, y1: y, y2: y }, g);
    const v = max * i / 4;
    el("svg:text", { x: M.l - 4, y: y + 3, "text-anchor": "end" }, g,
      percent ? Math.round(v * 100) + "%" : fmt(v));
  }
}

function xTimeAxis(svg, x0, x1) {
  const span = x1 - x0 || 1;
  for (let i = 0; i <= 4; i++) {
    const t = x0 + span * i / 4;
    el("svg:text", { x: M.l + (W - M.l - M.r) * i / 4, y: H - 8,
      "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, svg, fmtTime(t, span));
  }
}

function legend(box, names) {
  if (names.length < 2) return;
  const div = el("div", { class: "legend" }, box);
  names.forEach((n, i) => {
    const s = el("span", {}, div);
    el("i", { style: `background:${COLORS[i % COLORS.length]}` }, s);
    s.appendChild(document.createTextNode(n));
  });
}

function lineChart(box, p) {
  const pts = p.series.flatMap(s => s.points).filter(q => q[1] !== null);
  const x0 = Math.min(...pts.map(q => q[0])), x1 = Math.max(...pts.map(q => q[0]));
  const max = niceMax(Math.max(...pts.map(q => q[1]), 0));
  const svg = frame(box);
  yAxis(svg, max, false);
  xTimeAxis(svg, x0, x1);
  const sx = t => M.l + (W - M.l - M.r) * (x1 === x0 ? 0.5 : (t - x0) / (x1 - x0));
  const sy = v => M.t + (H - M.t - M.b) * (1 - v / max);
  p.series.forEach((s, i) => {
    let d = "", pen = "M";
    for (const [t, v] of s.points) {
      if (v === null) { pen = "M"; continue; }
      d += `${pen}${sx(t).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = "L";
    }
    if (!d) return;
    const path = el("svg:path", { class: "mark", d, fill: "none", "stroke-width": 1.5,
      stroke: COLORS[i % COLORS.length] }, svg);
    el("svg:title", {}, path, s.name);
    // A value between two gaps (a minute with predictions among empty ones) has no
    // segment to draw: show it as a dot.
    const gap = j => j < 0 || j >= s.points.length || s.points[j][1] === null;
    s.points.forEach(([t, v], j) => {
      if (v !== null && gap(j - 1) && gap(j + 1)) {
        el("svg:circle", { class: "mark", cx: sx(t), cy: sy(v), r: 3,
          fill: COLORS[i % COLORS.length] }, svg);
      }
    });
  });
  legend(box, p.series.map(s => s.name));
}

function shareChart(box, p, bars) {
  const xs = p.series[0].points.map(q => q[0]);
  const x0 = xs[0], x1 = xs[xs.length - 1];
  const svg = frame(box);
  yAxis(svg, 1, true);
  xTimeAxis(svg, x0, x1);
  const pw = W - M.l - M.r, ph = H - M.t - M.b, n = xs.length;
  const sx = j => M.l + (bars ? pw * (j + 0.5) / n : pw * (n > 1 ? j / (n - 1) : 0.5));
  const sy = v => M.t + ph * (1 - v);
  const base = xs.map(() => 0);
  p.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const top = s.points.map((q, j) => base[j] + (q[1] || 0));
    if (bars) {
      const bw = Math.max(pw / n - 1, 1);
      s.points.forEach((q, j) => {
        if (!q[1]) return;
        const r = el("svg:rect", { class: "mark", x: (sx(j) - bw / 2).toFixed(1),
          y: sy(top[j]).toFixed(1), width: bw.toFixed(1),
          height: (ph * q[1]).toFixed(1), fill: color }, svg);
        el("svg:title", {}, r, `${s.name}: ${Math.round(q[1] * 100)}%`);
      });
    } else {
      const up = top.map((v, j) => `${sx(j).toFixed(1)},${sy(v).toFixed(1)}`);
      const down = base.map((v, j) => `${sx(j).toFixed(1)},${sy(v).toFixed(1)}`).reverse();
      const path = el("svg:path", { class: "mark", d: `M${up.join("L")}L${down.join("L")}Z`,
        fill: color, "fill-opacity": 0.85 }, svg);
      el("svg:title", {}, path, s.name);
    }
    top.forEach((v, j) => { base[j] = v; });
  });
  legend(box, p.series.map(s => s.name));
}

function barChart(box, p, horizontal) {
  const pts = p.series[0].points.filter(q => q[1] !== null);
  const max = horizontal ? Math.max(...pts.map(q => q[1]), 0) || 1
    : niceMax(Math.max(...pts.map(q => q[1]), 0));
  const rowH = 20, height = horizontal ? M.t + pts.length * rowH + 4 : H;
  const svg = el("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${height}` }, box);
  if (horizontal) {
    const left = 200, right = W - 60;
    pts.forEach(([label, v], j) => {
      const y = M.t + j * rowH;
      const text = String(label);
      el("svg:text", { x: left - 6, y: y + 13, "text-anchor": "end" }, svg,
        text.length > 34 ? text.slice(0, 33) + "…" : text);
      const r = el("svg:rect", { class: "mark", x: left, y: y + 3, height: rowH - 6,
        width: Math.max((right - left) * v / max, 1).toFixed(1), fill: COLORS[0] }, svg);
      el("svg:title", {}, r, `${text}: ${fmt(v)}`);
      el("svg:text", { x: left + (right - left) * v / max + 4, y: y + 13 }, svg, fmt(v));
    });
    return;
  }
  yAxis(svg, max, false);
  const pw = W - M.l - M.r, ph = H - M.t - M.b, bw = pw / pts.length;
  pts.forEach(([label, v], j) => {
    const x = M.l + j * bw;
    const r = el("svg:rect", { class: "mark", x: (x + bw * 0.1).toFixed(1),
      y: (M.t + ph * (1 - v / max)).toFixed(1), width: (bw * 0.8).toFixed(1),
      height: (ph * v / max).toFixed(1), fill: COLORS[0] }, svg);
    el("svg:title", {}, r, `${label}: ${fmt(v)}`);
    if (pts.length <= 24 || j % Math.ceil(pts.length / 12) === 0) {
      el("svg:text", { x: x + bw / 2, y: H - 8, "text-anchor": "middle" }, svg,
        typeof label === "number" ? String(+label.toPrecision(3)) : String(label));
    }
  });
}

function pieChart(box, p) {
  const pts = p.series[0].points.filter(q => q[1] > 0);
  const total = pts.reduce((a, q) => a + q[1], 0);
  const svg = frame(box);
  const cx = 150, cy = H / 2, r = 95, inner = 50;
  let angle = -Math.PI / 2;
  pts.forEach(([label, v], i) => {
    const color = COLORS[i % COLORS.length];
    const share = v / total;
    let mark;
    if (share >= 0.9999) {
      mark = el("svg:circle", { class: "mark", cx, cy, r: (r + inner) / 2, fill: "none",
        stroke: color, "stroke-width": r - inner }, svg);
    } else {
      const a1 = angle + share * 2 * Math.PI, big = share > 0.5 ? 1 : 0;
      const pt = (rad, a) => `${(cx + rad * Math.cos(a)).toFixed(2)},${(cy + rad * Math.sin(a)).toFixed(2)}`;
      const d = `M${pt(r, angle)}A${r},${r} 0 ${big} 1 ${pt(r, a1)}L${pt(inner, a1)}` +
        `A${inner},${inner} 0 ${big} 0 ${pt(inner, angle)}Z`;
      mark = el("svg:path", { class: "mark", d, fill: color }, svg);
      angle = a1;
    }
    el("svg:title", {}, mark, `${label}: ${fmt(v)} (${Math.round(share * 100)}%)`);
    el("svg:rect", { x: 290, y: 30 + i * 22, width: 12, height: 12, fill: color }, svg);
    el("svg:text", { x: 308, y: 40 + i * 22, style: "font-size:12px" }, svg,
      `${label}  ${fmt(v)} (${Math.round(share * 100)}%)`);
  });
}

function table(box, p) {
  const t = el("table", { class: "data" }, box);
  const head = el("tr", {}, el("thead", {}, t));
  const numeric = p.columns.map((_, c) => p.rows.every(r => typeof r[c] === "number"));
  p.columns.forEach((c, i) => el("th", { class: numeric[i] ? "num" : "" }, head, c));
  const tb = el("tbody", {}, t);
  p.rows.forEach(r => {
    const tr = el("tr", { class: "mark" }, tb);
    r.forEach((v, i) => el("td", { class: numeric[i] ? "num" : "" }, tr,
      numeric[i] ? fmt(v) : String(v)));
  });
}

const DRAW = { line: lineChart, area_share: (b, p) => shareChart(b, p, false),
  bar_share: (b, p) => shareChart(b, p, true), bar: (b, p) => barChart(b, p, false),
  hbar: (b, p) => barChart(b, p, true), pie: pieChart, table };

function drawPanel(section, p) {
  const box = section.querySelector(".body");
  box.replaceChildren();
  let state = p.status;
  if (p.status === "ok") {
    try {
      DRAW[p.chart](box, p);
    } catch (err) {
      state = "error";
      box.replaceChildren();
      el("p", { class: "error" }, box, `could not draw: ${err}`);
    }
  } else if (p.status === "empty") {
    el("p", { class: "nodata" }, box, "No data");
  } else {
    el("p", { class: "error" }, box, p.error || "error");
  }
  section.dataset.state = state;
  section.dataset.marks = box.querySelectorAll(".mark").length;
}

function sectionFor(p, boards) {
  let section = document.getElementById(`panel-${p.id}`);
  if (section) return section;
  section = el("section", { class: "panel", id: `panel-${p.id}`, "data-panel": p.id,
    "data-state": "loading" }, boards[p.dashboard].querySelector(".grid"));
  el("h3", {}, section, p.title);
  el("p", { class: "desc" }, section, p.description);
  el("div", { class: "body" }, section);
  return section;
}

function boardsFor(payload) {
  const main = document.getElementById("dashboards"), boards = {};
  for (const d of payload.dashboards) {
    let div = document.getElementById(`board-${d.id}`);
    if (!div) {
      div = el("div", { class: "board", id: `board-${d.id}` }, main);
      el("h2", {}, div, d.title);
      el("p", {}, div, d.time_from ? `${d.description} Range: ${d.time_from.replace("now-", "last ")}.`
        : d.description);
      el("div", { class: "grid" }, div);
    }
    boards[d.id] = div;
  }
  return boards;
}

function showError(message) {
  const banner = document.getElementById("banner");
  banner.hidden = !message;
  banner.textContent = message || "";
  if (message) body.dataset.errorsSeen = Number(body.dataset.errorsSeen) + 1;
  body.dataset.status = message ? "error" : "ok";
}

async function load() {
  clearTimeout(timer);
  try {
    const res = await fetch(body.dataset.dataUrl, { cache: "no-store" });
    let payload;
    try { payload = await res.json(); } catch (e) { throw new Error(`HTTP ${res.status}`); }
    if (!payload.panels) throw new Error(payload.detail || `HTTP ${res.status}`);
    const boards = boardsFor(payload);
    for (const p of payload.panels) drawPanel(sectionFor(p, boards), p);
    const es = payload.elasticsearch || {};
    showError(es.ok === false ? `Elasticsearch: ${es.error}` : null);
    document.getElementById("updated").textContent =
      `updated ${new Date(payload.generated_at).toLocaleTimeString()}`;
  } catch (err) {
    showError(`The dashboard server did not answer (${err.message}); retrying.`);
  }
  body.dataset.loads = Number(body.dataset.loads) + 1;
  const every = Number(document.getElementById("refresh").value);
  if (every > 0) timer = setTimeout(load, every * 1000);
}

(function start() {
  const wanted = new URLSearchParams(location.search).get("refresh");
  const select = document.getElementById("refresh");
  if (wanted !== null) {
    if (![...select.options].some(o => o.value === wanted)) el("option", { value: wanted }, select, `${wanted} s`);
    select.value = wanted;
  }
  select.addEventListener("change", load);
  load();
})();
