// taskq dashboard: live updates from the event stream, actions through the API.
// No library: the pages are rendered on the server; this only refreshes their parts.
"use strict";

const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function debounce(fn, waitMs) {
  let timer = null;
  return () => {
    if (timer === null) timer = setTimeout(() => { timer = null; fn(); }, waitMs);
  };
}

function showLiveState(text) {
  const banner = document.getElementById("live-state");
  if (!banner) return;
  banner.textContent = text;
  banner.hidden = !text;
}

// Follows GET /api/v1/events; the browser reconnects by itself with Last-Event-ID.
function follow(params, onEvent) {
  const query = new URLSearchParams(params).toString();
  const source = new EventSource("/api/v1/events" + (query ? "?" + query : ""));
  source.addEventListener("task", (message) => onEvent(JSON.parse(message.data)));
  source.addEventListener("open", () => showLiveState(""));
  source.addEventListener("error", () => {
    showLiveState(source.readyState === EventSource.CLOSED
      ? "Live updates stopped. Reload the page to resume."
      : "Reconnecting to live updates…");
  });
  window.addEventListener("pagehide", () => source.close());
  return source;
}

// Fetches a fragment of this page again and swaps it in; a 401 means signed out.
async function refreshFragment(element, url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (response.status === 401) { window.location.assign("/dashboard/login"); return false; }
  if (!response.ok) return false;
  element.innerHTML = await response.text();
  return true;
}

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (response.status === 401) { window.location.assign("/dashboard/login"); return null; }
  return response.ok ? response.json() : null;
}

async function callApi(method, url, body) {
  const headers = { "X-CSRF-Token": csrfToken, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, credentials: "same-origin", headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let detail = "";
  try { detail = (await response.json()).detail; } catch { detail = response.statusText; }
  if (typeof detail !== "string") detail = JSON.stringify(detail);
  return { ok: response.ok, status: response.status, detail };
}

// ---- Tasks page: the first page is fetched again on any change; a later page only
// updates the rows it shows (new tasks belong on the first page).
function tasksPage() {
  const rows = document.getElementById("task-rows");
  if (!rows) return;
  const rowsUrl = "/dashboard/tasks/rows" + window.location.search;
  const refresh = debounce(() => refreshFragment(rows, rowsUrl), 300);
  follow({}, (event) => {
    if (rows.dataset.live === "page") { refresh(); return; }
    const row = rows.querySelector(`tr[data-task-id="${event.task_id}"]`);
    const badge = row?.querySelector('[data-field="status"]');
    if (!badge) return;
    badge.textContent = event.task.status;
    badge.className = "badge status-" + event.task.status.toLowerCase();
    row.querySelector('[data-field="priority"]').textContent = event.task.priority;
    row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash");
  });
}

// ---- Task page: its detail is fetched again on each of its events and after an action.
function taskPage() {
  const detail = document.getElementById("task-detail");
  if (!detail) return;
  const message = document.getElementById("message");
  const refresh = () => refreshFragment(detail, detail.dataset.detailUrl);
  follow({ task_id: detail.dataset.taskId }, debounce(refresh, 100));

  const report = (result, done) => {
    message.textContent = result.ok ? done : `Refused (${result.status}): ${result.detail}`;
    message.className = "message " + (result.ok ? "good" : "bad");
  };
  detail.addEventListener("click", async (click) => {
    const button = click.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    const result = await callApi(button.dataset.method, button.dataset.url);
    report(result, button.dataset.action === "cancel" ? "Cancel sent." : "Queued again.");
    await refresh();
  });
  detail.addEventListener("submit", async (submit) => {
    const form = submit.target.closest('form[data-action="priority"]');
    if (!form) return;
    submit.preventDefault();
    const priority = new FormData(form).get("priority");
    const result = await callApi("PATCH", form.dataset.url, { priority });
    report(result, `Priority set to ${priority}.`);
    await refresh();
  });
}

// ---- Workers page: refreshed every few seconds (heartbeats are not events).
function workersPage() {
  const rows = document.getElementById("worker-rows");
  if (!rows) return;
  setInterval(() => refreshFragment(rows, rows.dataset.rowsUrl), 3000);
}

// ---- Overview: numbers and charts, fetched again when events arrive (at most once a
// second) and every 10 s for what events do not tell (queue depths, workers).
const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function drawAxes(svg, top, label) {
  svg.replaceChildren();
  svg.append(svgElement("line", { x1: 30, y1: 130, x2: 600, y2: 130, stroke: "#dde2e8" }));
  const max = svgElement("text", { x: 0, y: 12 }); max.textContent = label(top);
  const start = svgElement("text", { x: 30, y: 146 }); start.textContent = "60 min ago";
  const end = svgElement("text", { x: 570, y: 146 }); end.textContent = "now";
  svg.append(max, start, end);
}

function drawThroughput(svg, minutes) {
  const top = Math.max(1, ...minutes.map((m) => m.completed + m.failed));
  drawAxes(svg, top, (v) => `${v}/min`);
  const width = 570 / minutes.length;
  minutes.forEach((minute, i) => {
    const x = 30 + i * width;
    const completed = (minute.completed / top) * 115;
    const failed = (minute.failed / top) * 115;
    svg.append(svgElement("rect", { x, y: 130 - completed, width: width - 1, height: completed, class: "bar-completed" }));
    svg.append(svgElement("rect", { x, y: 130 - completed - failed, width: width - 1, height: failed, class: "bar-failed" }));
  });
  const total = minutes.reduce((sum, m) => sum + m.completed + m.failed, 0);
  svg.setAttribute("aria-label", `Finished per minute; ${total} in the last hour`);
}

function drawDurations(svg, minutes) {
  const values = minutes.flatMap((m) => [m.duration_p50_seconds, m.duration_p95_seconds]).filter((v) => v !== null);
  const top = Math.max(0.001, ...values);
  drawAxes(svg, top, (v) => `${v.toFixed(v < 1 ? 3 : 1)} s`);
  const width = 570 / minutes.length;
  for (const [field, css] of [["duration_p50_seconds", "line-p50"], ["duration_p95_seconds", "line-p95"]]) {
    const points = minutes
      .map((m, i) => (m[field] === null ? null : `${30 + i * width + width / 2},${130 - (m[field] / top) * 115}`))
      .filter((p) => p !== null);
    if (points.length) svg.append(svgElement("polyline", { points: points.join(" "), class: css }));
  }
}

function setStat(name, value) {
  const cell = document.querySelector(`[data-stat="${name}"]`);
  if (cell) cell.textContent = value === null || value === undefined ? "–" : String(value);
}

async function loadOverview() {
  const [stats, timeline] = await Promise.all([
    getJson("/api/v1/stats"), getJson("/api/v1/stats/timeline?minutes=60"),
  ]);
  if (stats) {
    for (const [status, count] of Object.entries(stats.by_status)) setStat("status." + status, count);
    for (const name of ["queue_ready", "queue_unacknowledged", "dead_letters", "workers_online"]) setStat(name, stats[name]);
  }
  if (timeline) {
    drawThroughput(document.getElementById("chart-throughput"), timeline.minutes);
    drawDurations(document.getElementById("chart-duration"), timeline.minutes);
  }
}

function overviewPage() {
  if (!document.getElementById("chart-throughput")) return;
  loadOverview();
  follow({}, debounce(loadOverview, 1000));
  setInterval(loadOverview, 10000);
}

const pages = { tasks: tasksPage, task: taskPage, workers: workersPage, overview: overviewPage };
pages[document.body.dataset.page]?.();
