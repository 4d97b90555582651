// mlsignals live signal board: plain JS, no build step, no library.
// Data: board/api/* (JSON), readyz (health), signals/stream (Server-Sent Events read with fetch,
// because EventSource cannot send the X-API-Key header; the key never goes into a URL).
"use strict";

const KEY_STORE = "mlsignals.apiKey";
const BAR_MS = 5 * 60 * 1000; // the chart draws 5-minute candles from the 1-minute ones
const board = {
  symbols: [], latest: {}, cards: {}, lastEventId: null, sseSignals: 0, connected: false,
  history: {}, scorecard: null, window: "day", started: false, chartTimers: {},
};
window.board = board; // for the browser test and for curious users

const $ = (sel, root = document) => root.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class AuthError extends Error {}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { "X-API-Key": key } : {};
}

async function api(path) {
  const res = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (res.status === 401) { askKey(); throw new AuthError("API key needed"); }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function askKey() {
  const dialog = $("#key-dialog");
  if (!dialog.open) dialog.showModal();
}

function message(text) {
  const el = $("#message");
  el.hidden = !text;
  el.textContent = text || "";
}

// ---- formatting -------------------------------------------------------------------------
function price(x) {
  if (x === null || x === undefined) return "—";
  if (x >= 1000) return x.toFixed(1);
  if (x >= 10) return x.toFixed(2);
  if (x >= 1) return x.toFixed(4);
  return x.toPrecision(4);
}

function duration(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function pct(x, digits = 1) {
  return x === null || x === undefined ? "—" : `${(x * 100).toFixed(digits)}%`;
}

// ---- cards ------------------------------------------------------------------------------
function makeCard(sym) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.symbol = sym;
  $(".symbol", node).textContent = sym;
  $("#cards").appendChild(node);
  board.cards[sym] = node;
  renderCard(sym);
}

function renderCard(sym) {
  const el = board.cards[sym];
  const sig = board.latest[sym];
  if (!el) return;
  if (!sig) {
    $(".direction", el).textContent = "waiting";
    $(".direction", el).className = "direction";
    return;
  }
  el.dataset.signalId = sig.id;
  el.dataset.barTime = sig.bar_time;
  el.dataset.direction = sig.direction;
  const dir = $(".direction", el);
  dir.textContent = sig.direction;
  dir.className = `direction ${sig.direction}`;
  $(".confidence", el).textContent = `conf ${pct(sig.confidence, 0)} · strength ${pct(sig.strength, 0)}`;
  $(".entry", el).textContent = price(sig.entry);
  $(".sl", el).textContent = price(sig.stop_loss);
  $(".tp", el).textContent = price(sig.take_profit);
  $(".horizon", el).textContent = sig.horizon;
  $(".model", el).textContent = `model ${sig.model_version}`;
  const reasons = $(".reasons", el);
  reasons.replaceChildren();
  // a NEUTRAL's reasons say why not; a LONG/SHORT's say why (shown too, they are short)
  for (const r of sig.reasons || []) {
    const li = document.createElement("li");
    li.textContent = r;
    reasons.appendChild(li);
  }
  // what the model does know, whatever the direction: P(move beyond the FLAT band) and the
  // expected absolute move per horizon (Signal.forecast, calibrated)
  $(".forecast", el).textContent = (sig.forecast || [])
    .map((f) => `${f.horizon} P(move) ${pct(f.p_move, 0)}` +
      (f.expected_abs_move === null || f.expected_abs_move === undefined ? "" : ` ±${pct(f.expected_abs_move, 2)}`))
    .join(" · ");
  updateClock(sym);
}

function updateClock(sym) {
  const el = board.cards[sym];
  const sig = board.latest[sym];
  if (!el || !sig) return;
  const now = Date.now();
  $(".age", el).textContent = duration(now - Date.parse(sig.created_at));
  const left = Date.parse(sig.expires_at) - now;
  $(".expiry", el).textContent = left > 0 ? `in ${duration(left)}` : "expired";
}

function onSignal(sig) {
  board.sseSignals += 1;
  const cur = board.latest[sig.symbol];
  if (!(sig.symbol in board.cards)) return;
  if (!cur || Date.parse(sig.bar_time) >= Date.parse(cur.bar_time)) {
    board.latest[sig.symbol] = sig;
    renderCard(sig.symbol);
    const el = board.cards[sig.symbol];
    el.classList.add("flash");
    setTimeout(() => el.classList.remove("flash"), 1200);
  }
  scheduleChart(sig.symbol, 4000); // the new signal's marker, once the log has it
}

// ---- the stream -------------------------------------------------------------------------
function setStream(ok, text) {
  board.connected = ok;
  pill("#h-stream", ok ? "ok" : "bad", text || (ok ? "live" : "stream reconnecting"));
}

function handleFrame(frame) {
  let event = "message", data = "", id = null;
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const name = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (name === "event") event = value;
    else if (name === "data") data += value;
    else if (name === "id") id = value;
  }
  if (event === "signal" && data) {
    board.lastEventId = id;
    onSignal(JSON.parse(data));
  } else if (event === "heartbeat") {
    setStream(true, `live · ${new Date().toLocaleTimeString()}`);
  } else if (event === "gap" || event === "overflow") {
    message(event === "gap" ? "Some signals were trimmed from the stream while disconnected; reloaded the latest."
                            : "This page fell too far behind the stream; reloaded the latest.");
    board.lastEventId = null; // start from the current head after the reload
    loadOverview().catch(() => {});
  }
}

async function stream() {
  let backoff = 1000;
  for (;;) {
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (board.lastEventId) headers["Last-Event-ID"] = board.lastEventId;
      const res = await fetch("signals/stream", { headers, cache: "no-store" });
      if (res.status === 401) { setStream(false, "stream needs the API key"); askKey(); return; }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      setStream(true);
      backoff = 1000;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          handleFrame(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (err) {
      console.warn("signal stream:", err);
    }
    setStream(false);
    await sleep(backoff); // then resume after the last id: nothing lost, nothing twice
    backoff = Math.min(backoff * 2, 30000);
  }
}

// ---- health -----------------------------------------------------------------------------
function pill(sel, cls, text) {
  const el = $(sel);
  el.className = `pill ${cls}`;
  el.textContent = text;
}

async function loadHealth() {
  try {
    const res = await fetch("readyz", { cache: "no-store" });
    const h = await res.json();
    pill("#h-ready", h.ready ? "ok" : "bad", h.ready ? "ready" : "not ready");
    const m = h.model || {};
    pill("#h-model", m.model_version ? (m.last_reload_error ? "warn" : "ok") : "bad",
      m.model_version ? `${m.model_version} · ${m.device}${m.compiled ? " · compiled" : ""}` : `model: ${m.error || "?"}`);
    pill("#h-redis", h.redis ? "ok" : "bad", h.redis ? "Redis ok" : "Redis down");
    const d = h.delivery || {};
    pill("#h-db", h.database ? "ok" : "bad",
      h.database ? `database ok · outbox ${d.outbox_pending ?? "?"}` : "database down");
    const s = h.scheduler || {};
    const last = s.last_completed ? new Date(s.last_completed) : null;
    pill("#h-sched", s.error ? "bad" : (s.loop_alive || !s.enabled ? "ok" : "warn"),
      s.error ? "scheduler down" : `last tick ${last ? last.toLocaleTimeString() : "none yet"}`);
  } catch (err) {
    pill("#h-ready", "bad", "service unreachable");
  }
}

// ---- charts -----------------------------------------------------------------------------
const SVG_NS = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function scheduleChart(sym, delay) {
  clearTimeout(board.chartTimers[sym]);
  board.chartTimers[sym] = setTimeout(() => loadChart(sym).catch(() => {}), delay);
}

async function loadChart(sym) {
  const [c, s] = await Promise.all([
    api(`board/api/candles/${sym}?minutes=240`), api(`board/api/signals/${sym}?hours=4`),
  ]);
  board.history[sym] = s.signals;
  drawChart(sym, c.candles, s.signals);
}

function drawChart(sym, rows, signals) {
  const el = board.cards[sym];
  const svg = $(".chart", el);
  svg.replaceChildren();
  const note = $(".chart-note", el);
  if (!rows.length) { note.textContent = "no candles"; return; }
  const bars = new Map(); // 5-minute OHLC from 1-minute rows [t, o, h, l, c, v]
  for (const [t, o, h, l, c] of rows) {
    const k = Math.floor(t / BAR_MS) * BAR_MS;
    const b = bars.get(k);
    if (!b) bars.set(k, { t: k, o, h, l, c });
    else { b.h = Math.max(b.h, h); b.l = Math.min(b.l, l); b.c = c; }
  }
  const list = [...bars.values()];
  const W = 400, H = 150, PAD = 4, RIGHT = 58;
  const t0 = list[0].t, t1 = list[list.length - 1].t + BAR_MS;
  let lo = Math.min(...list.map((b) => b.l)), hi = Math.max(...list.map((b) => b.h));
  const latest = board.latest[sym];
  const levels = latest && latest.direction !== "NEUTRAL" ? [latest.stop_loss, latest.take_profit] : [];
  for (const v of levels) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi - lo || hi * 0.001 || 1;
  const x = (t) => PAD + ((t - t0) / (t1 - t0)) * (W - PAD - RIGHT);
  const y = (p) => PAD + (1 - (p - lo) / span) * (H - 2 * PAD - 10);
  const bw = Math.max(1, ((W - PAD - RIGHT) / list.length) * 0.65);
  for (const b of list) {
    const up = b.c >= b.o;
    const color = up ? "var(--long)" : "var(--short)";
    const cx = x(b.t + BAR_MS / 2);
    svgEl("line", { x1: cx, x2: cx, y1: y(b.h), y2: y(b.l), stroke: color, "stroke-width": 1 }, svg);
    const top = y(Math.max(b.o, b.c));
    svgEl("rect", { x: cx - bw / 2, y: top, width: bw, height: Math.max(1, y(Math.min(b.o, b.c)) - top), fill: color }, svg);
  }
  const last = list[list.length - 1].c;
  svgEl("text", { x: W - RIGHT + 3, y: y(last) + 4, fill: "var(--text)", "font-size": 10 }, svg).textContent = price(last);
  for (const [v, name] of levels.map((v, i) => [v, i ? "TP" : "SL"])) {
    svgEl("line", { x1: PAD, x2: W - RIGHT, y1: y(v), y2: y(v), stroke: name === "TP" ? "var(--long)" : "var(--short)",
      "stroke-dasharray": "4 3", "stroke-width": 1 }, svg);
    svgEl("text", { x: W - RIGHT + 3, y: y(v) + 4, fill: "var(--muted)", "font-size": 9 }, svg).textContent = name;
  }
  let hits = 0, misses = 0, pending = 0, neutral = 0;
  for (const s of signals) {
    const t = Date.parse(s.bar_time);
    if (t < t0 || t > t1) continue;
    const cx = x(t);
    if (s.direction === "NEUTRAL") { // a faint tick along the bottom: the model looked, stood aside
      neutral += 1;
      svgEl("line", { x1: cx, x2: cx, y1: H - 7, y2: H - 2, stroke: "var(--neutral)", "stroke-width": 1, opacity: 0.5 }, svg);
      continue;
    }
    const o = s.outcome;
    if (!o) pending += 1; else if (o.hit) hits += 1; else misses += 1;
    const fill = !o ? "none" : o.hit ? "var(--long)" : "var(--short)";
    const stroke = s.direction === "LONG" ? "var(--long)" : "var(--short)";
    const cy = y(s.entry);
    const d = s.direction === "LONG" ? `M${cx},${cy - 6} l5,9 l-10,0 z` : `M${cx},${cy + 6} l5,-9 l-10,0 z`;
    const mark = svgEl("path", { d, fill, stroke, "stroke-width": 1.5, class: `mark ${s.direction}` }, svg);
    const title = svgEl("title", {}, mark);
    title.textContent = `${s.direction} ${new Date(t).toLocaleTimeString()} conf ${pct(s.confidence, 0)}` +
      (o ? ` · ${o.hit ? "hit" : "miss"} ${pct(o.net_return, 2)} net` : " · open");
  }
  note.textContent = `4h: ${hits} hit · ${misses} miss · ${pending} open · ${neutral} neutral`;
}

// ---- scorecard --------------------------------------------------------------------------
async function loadScorecard() {
  try {
    board.scorecard = await api("board/api/scorecard");
    renderScorecard();
  } catch (err) {
    if (!(err instanceof AuthError)) $("#sc-note").textContent = `scorecard unavailable (${err.message})`;
  }
}

function renderScorecard() {
  const sc = board.scorecard;
  if (!sc) return;
  const w = sc.windows[board.window];
  const body = $("#sc-table tbody");
  body.replaceChildren();
  const row = (cells, parent) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    parent.appendChild(tr);
  };
  const sign = (v) => (v === null ? "" : v > 0 ? "pos" : "neg");
  for (const c of w.cells) {
    row([[c.symbol], [c.horizon], [c.n], [pct(c.hit_rate)], [pct(c.mean_net_return, 3), sign(c.mean_net_return)]], body);
  }
  const foot = $("#sc-table tfoot");
  foot.replaceChildren();
  const t = w.total;
  row([["all"], [""], [t.n], [pct(t.hit_rate)], [pct(t.mean_net_return, 3), sign(t.mean_net_return)]], foot);
  $("#sc-note").textContent = `${w.published} published, ${w.pending} awaiting their horizon; ` +
    `round-trip cost ${pct(sc.round_trip_cost, 2)}; updated ${new Date(sc.generated_at).toLocaleTimeString()}`;
  drawCalibration(w.calibration);
}

function drawCalibration(bins) {
  const svg = $("#calibration");
  svg.replaceChildren();
  const S = 220, P = 22;
  const xy = (v) => P + v * (S - 2 * P);
  const yy = (v) => S - P - v * (S - 2 * P);
  svgEl("rect", { x: P, y: P, width: S - 2 * P, height: S - 2 * P, fill: "none", stroke: "var(--line)" }, svg);
  svgEl("line", { x1: xy(0), y1: yy(0), x2: xy(1), y2: yy(1), stroke: "var(--muted)", "stroke-dasharray": "3 3" }, svg);
  for (const v of [0, 0.5, 1]) {
    svgEl("text", { x: xy(v) - 6, y: S - 6, fill: "var(--muted)", "font-size": 9 }, svg).textContent = v;
    svgEl("text", { x: 2, y: yy(v) + 3, fill: "var(--muted)", "font-size": 9 }, svg).textContent = v;
  }
  const pts = bins.filter((b) => b.n > 0);
  const maxN = Math.max(1, ...pts.map((b) => b.n));
  if (pts.length > 1) {
    svgEl("polyline", { points: pts.map((b) => `${xy(b.predicted)},${yy(b.realised)}`).join(" "),
      fill: "none", stroke: "#4d8fd6", "stroke-width": 1.5 }, svg);
  }
  for (const b of pts) {
    const c = svgEl("circle", { cx: xy(b.predicted), cy: yy(b.realised), r: 2 + 4 * Math.sqrt(b.n / maxN), fill: "#4d8fd6" }, svg);
    svgEl("title", {}, c).textContent = `predicted ${pct(b.predicted)} · realised ${pct(b.realised)} · n=${b.n}`;
  }
  if (!pts.length) {
    svgEl("text", { x: S / 2 - 45, y: S / 2, fill: "var(--muted)", "font-size": 11 }, svg).textContent = "no outcomes yet";
  }
}

// ---- start ------------------------------------------------------------------------------
async function loadOverview() {
  const ov = await api("board/api/overview");
  board.symbols = ov.symbols;
  for (const sym of ov.symbols) {
    if (!(sym in board.cards)) makeCard(sym);
    const sig = ov.latest[sym];
    const cur = board.latest[sym];
    if (sig && (!cur || Date.parse(sig.bar_time) >= Date.parse(cur.bar_time))) {
      board.latest[sym] = sig;
      renderCard(sym);
    }
  }
  if (!board.lastEventId) board.lastEventId = ov.stream_head; // stream from here on
  return ov;
}

async function start() {
  if (board.started) return;
  try {
    await loadOverview();
  } catch (err) {
    if (!(err instanceof AuthError)) message(`Cannot load the board: ${err.message}`);
    return;
  }
  board.started = true;
  message("");
  stream();
  for (const sym of board.symbols) scheduleChart(sym, 50);
  loadScorecard();
  setInterval(() => board.symbols.forEach(updateClock), 1000);
  setInterval(() => board.symbols.forEach((s) => scheduleChart(s, Math.random() * 5000)), 60000);
  setInterval(loadScorecard, 60000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#key-form").addEventListener("submit", () => {
    const input = $("#key-input");
    sessionStorage.setItem(KEY_STORE, input.value);
    input.value = "";
    start();
  });
  $("#key-button").addEventListener("click", askKey);
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => {
      board.window = b.dataset.window;
      document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
      renderScorecard();
    });
  }
  loadHealth();
  setInterval(loadHealth, 10000);
  start();
});
