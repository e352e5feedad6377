// The operator console: every figure comes from the admin routes, with the key this tab keeps in
// sessionStorage. Data is written with textContent only; panels refresh every 2 s while the tab
// is visible, and a failed refresh is shown in its panel.
"use strict";

const KEY = "flashsale.console.key";
const SALE = "flashsale.console.sale";
const ORDER = "flashsale.console.order";
const REFRESH_MS = 2000;
const SETTLEMENT_MS = 30000; // the settlement reads every line of the sale: less often, or on demand
const TIMEOUT_MS = 10000; // a call that hangs longer fails (and the next refresh runs)
const DAY_MS = 86400000;

const $ = (id) => document.getElementById(id);
let busy = false;
let settledAt = 0; // when the settlement was last loaded (ms)

class Refused extends Error {}

function key() { return sessionStorage.getItem(KEY) || ""; }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function money(minor) {
  if (minor === null || minor === undefined) return "–";
  const sign = minor < 0 ? "−" : "";
  const abs = Math.abs(minor);
  return sign + Math.floor(abs / 100) + "." + String(abs % 100).padStart(2, "0");
}

function clock(date) { return date.toLocaleTimeString([], { hour12: false }); }

function when(iso) { return iso ? new Date(iso).toLocaleString([], { hour12: false }) : "–"; }

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + key(), Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  let reply;
  try {
    reply = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
      credentials: "omit",
      signal: abort.signal,
    });
  } catch (e) {
    throw abort.signal.aborted ? new Error("no answer within " + TIMEOUT_MS / 1000 + " s") : e;
  } finally {
    clearTimeout(timer);
  }
  if (reply.status === 401) {
    forget("The admin key was refused: enter it again.");
    throw new Refused("the admin key was refused");
  }
  const doc = await reply.json().catch(() => null);
  if (!reply.ok) {
    const why = doc && doc.code ? doc.code + ": " + (doc.detail || doc.title || "") : "";
    const error = new Error(why || "HTTP " + reply.status);
    error.status = reply.status;
    throw error;
  }
  return doc;
}

// --- the key --------------------------------------------------------------------------------

function forget(note) {
  sessionStorage.removeItem(KEY);
  $("console").hidden = true;
  $("forget").hidden = true;
  $("key-panel").hidden = false;
  $("key-note").textContent = note || "";
  $("key").value = "";
  $("key").focus();
}

function unlock() {
  $("key-panel").hidden = true;
  $("console").hidden = false;
  $("forget").hidden = false;
  $("key-note").textContent = "";
  refreshAll();
}

// --- panels ---------------------------------------------------------------------------------

// Runs one panel's refresh: "Updated hh:mm:ss" on success, the error (and how old the figures
// shown are) on failure.
async function panel(name, load) {
  const updated = $(name + "-updated");
  const error = $(name + "-error");
  try {
    const shown = await load();
    if (shown === false) return;
    updated.textContent = "Updated " + clock(new Date());
    updated.classList.remove("stale");
    error.hidden = true;
    error.textContent = "";
  } catch (e) {
    if (e instanceof Refused) return;
    error.hidden = false;
    error.textContent = "Refresh failed: " + (e.message || e);
    updated.classList.add("stale");
  }
}

function cells(row, values) {
  for (const [value, numeric] of values) {
    row.append(el("td", value, numeric ? "num" : ""));
  }
  return row;
}

function stockRow(sku, supplier, s, total) {
  const row = document.createElement("tr");
  row.dataset.sku = sku;
  row.dataset.supplier = supplier;
  if (total) row.className = "total";
  return cells(row, [
    [sku], [total ? "all" : supplier], [s.loaded, true], [s.adjusted, true],
    [s.available, true], [s.reserved, true], [s.sold, true],
  ]);
}

async function loadSale() {
  const sale = sessionStorage.getItem(SALE);
  if (!sale) return false;
  const doc = await api("/v1/admin/sales/" + encodeURIComponent(sale));
  $("sale-view").hidden = false;
  $("sale-status").textContent = doc.status;
  $("sale-holds").textContent = doc.open_holds;
  const room = doc.waiting_room;
  $("queue-length").textContent = room ? room.waiting : "no waiting room";
  $("admit-rate").textContent = room
    ? room.admit_rate_per_s + "/s (measured " + room.measured_admit_rate_per_s + "/s)" : "–";
  const lag = doc.reconciler || {};
  $("sale-lag").textContent = (lag.unread ?? 0) + " unread, " + (lag.pending ?? 0) + " pending";
  const body = $("stock").tBodies[0];
  const rows = [];
  for (const s of doc.skus) {
    rows.push(stockRow(s.sku, "all", s, true));
    for (const p of s.suppliers) rows.push(stockRow(s.sku, p.supplier, p, false));
  }
  body.replaceChildren(...rows);
}

async function loadSales() {
  const doc = await api("/v1/admin/sales");
  const options = doc.sales.map((s) => {
    const option = el("option");
    option.value = s.sale_id;
    option.label = s.name + " (" + s.status + (s.loaded ? "" : ", not loaded") + ")";
    return option;
  });
  $("sale-list").replaceChildren(...options);
}

function decisionBody(option, day) {
  if (option.decision === "wait") return { decision: "wait", promised_date: day };
  if (option.decision === "cancel") return { decision: "cancel" };
  return { decision: "secondary", supplier_id: option.supplier_id, cost_minor: option.cost_minor };
}

function optionLabel(option, day) {
  if (option.decision === "wait") return "Wait until " + day;
  if (option.decision === "cancel") return "Cancel (" + option.payment + ")";
  return "Ship from " + option.supplier_id + " (cost " + money(option.cost_minor) +
    ", margin " + money(option.margin_change_minor) + ")";
}

// A decision or a retry: the answer goes to the panel's note (the card itself leaves the list
// at the next refresh once the saga has it).
async function act(button, path, body, after) {
  button.disabled = true;
  const note = $(button.closest("section").id.replace("-panel", "-note"));
  try {
    await api(path, { method: "POST", body });
    note.textContent = after;
  } catch (e) {
    if (!(e instanceof Refused)) note.textContent = "Refused: " + (e.message || e);
    button.disabled = false;
    return;
  }
  refreshAll();
}

// Dates are the server's (UTC) days, YYYY-MM-DD: they compare as text.
function utcDay(ms) { return new Date(ms).toISOString().slice(0, 10); }

// The wait option's date field: the date offered when the backorder opened, or today + the wait
// days if that one has passed (the decision route refuses a day before today).
function waitField(b, option, waitDays) {
  const today = utcDay(Date.now());
  const later = utcDay(Date.now() + waitDays * DAY_MS);
  const input = el("input");
  input.type = "date";
  input.min = today;
  input.value = option.promised_date > later ? option.promised_date : later;
  input.setAttribute("aria-label", "Promised date for backorder " + b.id);
  return input;
}

function backorderCard(b, waitDays) {
  const card = el("li");
  card.dataset.backorder = b.id;
  card.dataset.order = b.order_id;
  card.append(el("strong", "Backorder " + b.id + ": " + b.qty + " × " + b.sku));
  card.append(el("div", "Order " + b.order_id + ", since " + when(b.created_at), "meta"));
  const actions = el("div", null, "actions");
  for (const option of b.options) {
    const field = option.decision === "wait" ? waitField(b, option, waitDays) : null;
    const day = () => (field ? field.value : "");
    const button = el("button", optionLabel(option, day()));
    button.type = "button";
    button.dataset.decision = option.decision;
    button.addEventListener("click", () => act(
      button, "/v1/admin/backorders/" + b.id + "/decision", decisionBody(option, day()),
      "Backorder " + b.id + " (order " + b.order_id + "): " + optionLabel(option, day()) +
        ". The saga carries it out.",
    ));
    if (field) {
      field.addEventListener("input", () => { button.textContent = optionLabel(option, day()); });
      const wait = el("span", null, "wait");
      wait.append(field, button);
      actions.append(wait);
    } else {
      actions.append(button);
    }
  }
  card.append(actions);
  return card;
}

// A short fingerprint of a text (FNV-1a), for card keys.
function fingerprint(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16);
}

// A list panel's cards, kept while the same keys are listed: a button clicked stays disabled
// until the saga has taken the decision or the retry.
function keepCards(list, items, idOf, make) {
  const old = new Map([...list.children].map((c) => [c.dataset.key, c]));
  const cards = items.map((item) => {
    const id = String(idOf(item));
    const card = old.get(id) || make(item);
    card.dataset.key = id;
    return card;
  });
  list.replaceChildren(...cards);
}

async function loadBackorders() {
  const doc = await api("/v1/admin/backorders?status=open");
  // A backorder opened again keeps its id with new options: a new card, not the old buttons.
  const keyOf = (b) => [b.id, b.status, b.decided_at || "",
    fingerprint(JSON.stringify(b.options))].join(":");
  keepCards($("backorders"), doc.backorders, keyOf, (b) => backorderCard(b, doc.wait_days ?? 0));
  $("backorders-empty").hidden = doc.backorders.length > 0;
}

function deadCard(d) {
  const card = el("li");
  card.dataset.order = d.order_id;
  card.append(el("strong", "Order " + d.order_id + ": " + d.step));
  card.append(el("div", d.status + ", sale " + d.sale_id + ", " + d.attempts +
    " tries, gave up " + when(d.at), "meta"));
  card.append(el("div", d.last_error || "no error recorded", "meta"));
  const actions = el("div", null, "actions");
  const retry = el("button", "Retry");
  retry.type = "button";
  retry.addEventListener("click", () => act(
    retry, "/v1/admin/orders/" + encodeURIComponent(d.order_id) + "/retry", {},
    "Order " + d.order_id + ": step " + d.step + " is due again.",
  ));
  const look = el("button", "Look up", "secondary");
  look.type = "button";
  look.addEventListener("click", () => showOrder(d.order_id));
  actions.append(retry, look);
  card.append(actions);
  return card;
}

async function loadDead() {
  const doc = await api("/v1/admin/orders?dead=true");
  keepCards($("dead"), doc.orders, (d) => d.order_id + ":" + d.step + ":" + d.at, deadCard);
  $("dead-empty").hidden = doc.orders.length > 0;
}

function timeline(doc) {
  const events = doc.transitions.map((t) => ({
    at: t.at,
    text: (t.from === t.to ? t.to : (t.from || "new") + " → " + t.to) + (t.cause ? ": " + t.cause : ""),
  }));
  for (const s of doc.saga.steps) {
    events.push({ at: s.at, text: "step " + s.step + " " + s.status + " (" + s.attempts +
      " tries, round " + s.round + ")" + (s.last_error ? ": " + s.last_error : "") });
  }
  events.sort((a, b) => (a.at || "").localeCompare(b.at || ""));
  return events.map((e) => {
    const item = el("li");
    item.append(el("span", when(e.at) + " ", "at"), el("span", e.text));
    return item;
  });
}

async function loadOrder() {
  const order = sessionStorage.getItem(ORDER);
  if (!order) return false;
  const doc = await api("/v1/admin/orders/" + encodeURIComponent(order));
  $("order-view").hidden = false;
  $("order-status").textContent = doc.status;
  $("order-sale").textContent = doc.sale_id;
  $("order-customer").textContent = doc.customer_id;
  $("order-total").textContent = money(doc.total_minor);
  $("order-captured").textContent = money(doc.payment.captured_minor);
  $("order-refunded").textContent = money(doc.payment.refunded_minor);
  const saga = doc.saga;
  $("order-saga").textContent = saga.dead_step ? "dead at " + saga.dead_step
    : saga.next_step ? "next: " + saga.next_step : "done";
  $("order-lines").tBodies[0].replaceChildren(...doc.lines.map((l) => cells(
    document.createElement("tr"),
    [[l.sku], [l.qty, true], [money(l.price_minor), true], [l.status],
      [l.supplier_id || l.hold_supplier], [money(l.margin_minor), true]],
  )));
  $("timeline").replaceChildren(...timeline(doc));
}

const FIGURES = [
  ["Orders", (s) => s.orders.total],
  ["Units sold", (s) => s.units.sold],
  ["Cancelled", (s) => s.units.cancelled],
  ["Returned", (s) => s.units.returned],
  ["Restocked", (s) => s.units.restocked],
  ["Captured", (s) => money(s.captured_minor)],
  ["Refunded", (s) => money(s.refunded_minor)],
  ["Supplier cost", (s) => money(s.supplier_cost_minor)],
  ["Planned margin", (s) => money(s.planned_margin_minor)],
  ["Margin", (s) => money(s.margin_minor)],
  ["Credits", (s) => money(s.credits_minor)],
  ["Net", (s) => money(s.net_minor)],
];

async function loadSettlement(force) {
  const sale = sessionStorage.getItem(SALE);
  if (!sale) return false;
  if (!force && Date.now() - settledAt < SETTLEMENT_MS) return false;
  settledAt = Date.now();
  let doc;
  try {
    doc = await api("/v1/admin/sales/" + encodeURIComponent(sale) + "/settlement");
  } catch (e) {
    if (e.status !== 404) throw e;
    $("settlement-view").hidden = true;
    $("settlement-note").hidden = false;
    $("settlement-note").textContent = "Settlement not available for sale " + sale + ".";
    return;
  }
  $("settlement-note").hidden = true;
  $("settlement-view").hidden = false;
  $("settlement-figures").replaceChildren(...FIGURES.map(([name, get]) => {
    const box = el("div");
    let value;
    try { value = get(doc); } catch (e) { value = "–"; }
    box.append(el("dt", name), el("dd", value ?? "–"));
    return box;
  }));
  $("credits").tBodies[0].replaceChildren(...(doc.credits || []).map((c) => cells(
    document.createElement("tr"),
    [[c.order_id], [c.sku], [money(c.amount_minor), true], [c.cause], [when(c.at)]],
  )));
}

async function refreshAll() {
  if (busy || !key() || document.visibilityState !== "visible") return;
  busy = true;
  try {
    await Promise.all([
      panel("sale", async () => { await loadSales(); return loadSale(); }),
      panel("backorders", loadBackorders),
      panel("dead", loadDead),
      panel("order", loadOrder),
      panel("settlement", () => loadSettlement(false)),
    ]);
  } finally {
    busy = false;
  }
}

function showOrder(order) {
  $("order-id").value = order;
  sessionStorage.setItem(ORDER, order);
  panel("order", loadOrder);
}

function start() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    $("key").value = "";
    unlock();
  });
  $("forget").addEventListener("click", () => forget("Key forgotten."));
  $("sale-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(SALE, $("sale-id").value.trim());
    panel("sale", loadSale);
    panel("settlement", () => loadSettlement(true));
  });
  $("settlement-refresh").addEventListener("click", () => {
    panel("settlement", () => loadSettlement(true));
  });
  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showOrder($("order-id").value.trim());
  });
  document.addEventListener("visibilitychange", refreshAll);
  setInterval(refreshAll, REFRESH_MS);
  $("sale-id").value = sessionStorage.getItem(SALE) || "";
  $("order-id").value = sessionStorage.getItem(ORDER) || "";
  if (key()) unlock(); else forget("");
}

start();
