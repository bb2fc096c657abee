// Islet's console: polls the admin API every two seconds with the token it was given, and draws
// what it finds. No framework, no build step. Text from the node goes in with textContent only.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90;
const COLORS = ["#3867d6", "#20bf6b", "#eb3b5a", "#f7b731", "#8854d0", "#0fb9b1", "#fa8231", "#4b6584"];

const state = { token: null, previous: null, history: [], timer: null, usageAt: 0 };

function $(id) {
  return document.getElementById(id);
}

function tokenFromPage() {
  // `#token=…` (kept out of the address bar and of any request), else the tab's session.
  const hash = new URLSearchParams(location.hash.slice(1));
  const given = hash.get("token");
  if (given) {
    sessionStorage.setItem("islet-token", given);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("islet-token");
}

async function api(path) {
  const response = await fetch(path, { headers: { authorization: "Bearer " + state.token } });
  if (response.status === 401) {
    sessionStorage.removeItem("islet-token");
    throw new Error("the token was refused");
  }
  if (!response.ok) {
    throw new Error(path + ": " + response.status);
  }
  return response.json();
}

function cell(row, text, numeric, bad) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "n";
  if (bad) td.className += " bad";
  row.appendChild(td);
}

// The quantile q of the observations between two snapshots of a histogram, as the upper bound
// of the bucket it falls in (ms); null when nothing was observed.
function quantile(bounds, before, after, q) {
  const counts = after.map((n, i) => n - (before ? before[i] : 0));
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i];
    if (seen >= q * total) return bounds[i] * 1000;
  }
  return Infinity;
}

function requestsOf(f) {
  return Object.values(f.outcomes).reduce((a, b) => a + b, 0);
}

function drawChart() {
  const svg = $("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const names = [...new Set(state.history.flatMap((point) => Object.keys(point.rates)))].sort();
  const max = Math.max(1, ...state.history.flatMap((point) => Object.values(point.rates)));
  // Spread over the width until the history is full, then scrolling.
  const span = Math.max(state.history.length - 1, 1);
  const x = (i) => 10 + (i / span) * 580;
  const y = (v) => 170 - (v / max) * 150;
  names.forEach((name, k) => {
    const color = COLORS[k % COLORS.length];
    const points = state.history.map((point, i) => [x(i), y(point.rates[name] || 0)]);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.map((p) => p.join(",")).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    line.dataset.function = name;
    svg.appendChild(line);
    for (const [px, py] of points) {
      const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      dot.setAttribute("cx", String(px));
      dot.setAttribute("cy", String(py));
      dot.setAttribute("r", "2.5");
      dot.setAttribute("fill", color);
      svg.appendChild(dot);
    }
  });
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "12");
  label.setAttribute("font-size", "10");
  label.textContent = "max " + max.toFixed(1) + " req/s";
  svg.appendChild(label);
  svg.dataset.points = String(state.history.length);
  const legend = $("legend");
  legend.textContent = "";
  names.forEach((name, k) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[k % COLORS.length];
    span.appendChild(swatch);
    span.appendChild(document.createTextNode(name));
    legend.appendChild(span);
  });
}

async function refresh() {
  const [functions, stats] = await Promise.all([api("/v1/functions"), api("/v1/stats")]);
  const now = performance.now();
  const byName = new Map(stats.functions.map((f) => [f.function, f]));
  const before = state.previous;
  const seconds = before ? (now - before.at) / 1000 : 0;
  const rates = {};
  let total = 0;
  for (const f of stats.functions) {
    total += requestsOf(f);
    const earlier = before && before.byName.get(f.function);
    rates[f.function] = seconds > 0 ? (requestsOf(f) - (earlier ? requestsOf(earlier) : 0)) / seconds : 0;
  }
  if (before) {
    state.history.push({ rates });
    if (state.history.length > HISTORY) state.history.shift();
  }
  $("chart").dataset.total = String(total);
  // Deployed functions, and any other the node served (from a directory or manifest).
  const rows = new Map(functions.functions.map((f) => [f.name, f]));
  for (const name of byName.keys()) if (!rows.has(name)) rows.set(name, { name, active: "(static)", versions: 0, routes: [] });
  const body = $("functions").tBodies[0];
  body.textContent = "";
  for (const name of [...rows.keys()].sort()) {
    const f = rows.get(name);
    const s = byName.get(name);
    const earlier = before && before.byName.get(name);
    const row = document.createElement("tr");
    row.dataset.function = name;
    cell(row, name);
    cell(row, f.active);
    cell(row, String(f.versions), true);
    cell(row, (f.routes || []).join(", "));
    cell(row, rates[name] !== undefined ? rates[name].toFixed(1) : "-", true);
    const b = s ? s.http_duration.buckets : null;
    const e = earlier ? earlier.http_duration.buckets : null;
    const p50 = b ? quantile(stats.bounds_s, e, b, 0.5) : null;
    const p99 = b ? quantile(stats.bounds_s, e, b, 0.99) : null;
    cell(row, p50 === null ? "-" : String(p50), true);
    cell(row, p99 === null ? "-" : String(p99), true);
    const errors = s ? s.outcomes["5xx"] + s.outcomes.failed : 0;
    const stops = s ? s.outcomes.cpu_limit + s.outcomes.memory_limit + s.outcomes.wall_limit : 0;
    cell(row, String(errors), true, errors > 0);
    cell(row, String(stops), true, stops > 0);
    cell(row, s ? String(s.cold) : "0", true);
    cell(row, s ? String(s.warm) : "0", true);
    body.appendChild(row);
  }
  state.previous = { at: now, byName };
  drawChart();
  // Usage moves by the minute: read it every 30 s, not every poll.
  if (!state.usageAt || now - state.usageAt > 30000) {
    state.usageAt = now;
    await refreshUsage();
  }
  $("status").textContent = "connected; updated " + new Date().toLocaleTimeString();
}

async function refreshUsage() {
  const since = $("window").value;
  const pricing = $("pricing").value;
  const usage = await api("/v1/usage?since=" + since + "&pricing=" + pricing);
  const body = $("usage").tBodies[0];
  body.textContent = "";
  for (const f of usage.functions) {
    const row = document.createElement("tr");
    row.dataset.function = f.function;
    cell(row, f.function);
    cell(row, String(f.requests), true);
    cell(row, String(f.errors), true, f.errors > 0);
    cell(row, f.cpu_ms.toFixed(1), true);
    cell(row, f.gb_s.toFixed(4), true);
    cell(row, (f.bytes_out / 1e6).toFixed(3), true);
    cell(row, f.cost ? f.cost.total.toFixed(6) : "-", true);
    body.appendChild(row);
  }
}

function start() {
  state.token = tokenFromPage();
  if (!state.token) {
    $("login").hidden = false;
    return;
  }
  $("login").hidden = true;
  const tick = () =>
    refresh().catch((error) => {
      $("status").textContent = String(error.message || error);
      if (!sessionStorage.getItem("islet-token")) {
        clearInterval(state.timer);
        $("login").hidden = false;
      }
    });
  tick();
  state.timer = setInterval(tick, POLL_MS);
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("islet-token", $("token").value);
  start();
});
$("window").addEventListener("change", () => refreshUsage().catch(() => {}));
$("pricing").addEventListener("change", () => refreshUsage().catch(() => {}));
start();
