// anima's web page: a client of anima's JSON API (see anima/server/web.py). The API key
// lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer`.

import { markdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const KEY = "anima.key";
const HISTORY = 12; // earlier messages sent back with each new one
const chat = { conversation: null, history: [], controller: null };

// --- small helpers -------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name.includes("-")) node.setAttribute(name, value); // aria-*, data-*
    else node[name] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function shown(iso) {
  if (!iso) return "";
  if (/^\d{4}(-\d{2}(-\d{2})?)?$/.test(iso)) return iso; // a day, month or year
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// --- the API ---------------------------------------------------------------------------

class ApiError extends Error {}

async function api(path, { json, ...options } = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  }
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error.message || message;
  } catch {}
  if (response.status === 401) showLogin("Your API key was not accepted; log in again.");
  const error = new ApiError(message);
  error.status = response.status;
  throw error;
}

const getJSON = async (path) => (await api(path)).json();

// Server-sent events of a streaming chat completion, as parsed JSON chunks.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

// Run an action from a button: errors become one line in the status bar.
function act(fn) {
  return async (event) => {
    const button = event?.currentTarget;
    if (button) button.disabled = true;
    try {
      await fn(event);
    } catch (err) {
      say(err.message, true);
    } finally {
      if (button && button.isConnected) button.disabled = false;
    }
  };
}

// --- log in and out ----------------------------------------------------------------------

function showLogin(message = "") {
  sessionStorage.removeItem(KEY);
  chat.controller?.abort();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

async function logIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  const response = await fetch("/v1/models", { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) {
    $("login-error").textContent = response.status === 401 ? "That key was not accepted." : `The server answered ${response.status}.`;
    return;
  }
  sessionStorage.setItem(KEY, key);
  await enter();
}

async function enter() {
  const models = await getJSON("/v1/models");
  $("login").hidden = true;
  $("app").hidden = false;
  const select = $("persona");
  select.replaceChildren(...models.data.map((m) => el("option", { value: m.id, textContent: m.id, title: m.description || "" })));
  select.value = models.data.some((m) => m.id === "assistant") ? "assistant" : models.data[0]?.id;
  showTab("chat");
  await Promise.all([loadConversations(), countInbox()]);
}

// --- tabs -----------------------------------------------------------------------------------

const LOADERS = { chat: loadConversations, memories: loadMemories, inbox: loadInbox, audit: loadAudit, settings: loadSettings };

function showTab(name) {
  for (const button of document.querySelectorAll("nav [data-tab]")) {
    if (button.dataset.tab === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${name}`;
  say("");
  LOADERS[name]().catch((err) => say(err.message, true));
  if (name === "chat") $("message").focus();
}

// --- chat -------------------------------------------------------------------------------------

function addMessage(role, text) {
  const body = el("div", { className: "body" });
  if (role === "assistant") body.innerHTML = markdown(text);
  else body.textContent = text;
  const li = el("li", { className: `message ${role}` }, el("span", { className: "visually-hidden", textContent: role === "user" ? "You said:" : "anima:" }), body);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function note(li, text, isError = false) {
  li.append(el("p", { className: isError ? "note error" : "note", textContent: text }));
}

// The memories and past messages a reply was given, each memory with "Forget this".
function showUsed(li, used) {
  if (!used.length) return;
  const memories = used.filter((u) => u.kind === "memory").length;
  const label = [memories && `${memories} ${memories === 1 ? "memory" : "memories"}`, used.length - memories && `${used.length - memories} past message${used.length - memories === 1 ? "" : "s"}`].filter(Boolean).join(" and ");
  const items = used.map((u) => {
    const item = el("li", {}, el("span", { className: "meta", textContent: u.kind === "memory" ? `memory #${u.id}` + (u.when ? ` · ${shown(u.when)}` : "") : `past message · ${shown(u.when)}` }), " ", el("span", { className: "text", textContent: u.text }));
    if (u.kind === "memory") {
      item.append(" ", el("button", { type: "button", className: "small", textContent: "Forget this", "aria-label": `Forget: ${u.text}`, onclick: act(async () => {
        await api(`/api/memories/${u.id}`, { method: "DELETE" });
        item.classList.add("forgotten");
        item.querySelector("button").replaceWith(el("span", { className: "meta", textContent: "forgotten" }));
        say(`Forgotten: ${u.text}`);
      }) }));
    }
    return item;
  });
  li.append(el("details", { className: "used" }, el("summary", { textContent: `Used ${label}` }), el("ul", {}, ...items)));
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  const question = { role: "user", content: text };
  addMessage("user", text);
  const li = addMessage("assistant", "");
  const body = li.querySelector(".body");
  li.setAttribute("aria-busy", "true");
  const controller = (chat.controller = new AbortController());
  setBusy(true);
  let answer = "";
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      signal: controller.signal,
      json: { model: $("persona").value, stream: true, messages: [...chat.history.slice(-HISTORY), question], anima: chat.conversation ? { conversation: chat.conversation } : undefined },
    });
    for await (const chunk of events(response)) {
      if (chunk.error) throw new ApiError(chunk.error.message);
      if (chunk.anima) {
        chat.conversation = chunk.anima.conversation;
        showUsed(li, chunk.anima.memories || []);
      }
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        answer += piece;
        body.innerHTML = markdown(answer);
        li.scrollIntoView({ block: "end" });
      }
    }
  } catch (err) {
    if (err.name === "AbortError") note(li, "Stopped.");
    else note(li, err.message, true);
  } finally {
    li.removeAttribute("aria-busy");
    setBusy(false);
    chat.controller = null;
    if (answer) chat.history.push(question, { role: "assistant", content: answer });
    // the list may grow above the reply: bring the reply back into view
    loadConversations().then(() => li.scrollIntoView({ block: "end" })).catch(() => {});
  }
}

function newChat() {
  chat.controller?.abort();
  chat.conversation = null;
  chat.history = [];
  $("messages").replaceChildren();
  markConversation();
  $("message").focus();
}

async function openConversation(id) {
  const turns = await getJSON(`/api/conversations/${id}`);
  newChat();
  chat.conversation = id;
  for (const turn of turns) {
    addMessage("user", turn.user_text);
    const li = addMessage("assistant", turn.reply);
    if (turn.status !== "ok") note(li, turn.status === "stopped" ? "Stopped." : `(${turn.status})`);
    if (turn.reply) chat.history.push({ role: "user", content: turn.user_text }, { role: "assistant", content: turn.reply });
  }
  const persona = turns.at(-1)?.persona;
  if ([...$("persona").options].some((o) => o.value === persona)) $("persona").value = persona;
  markConversation();
}

function markConversation() {
  for (const button of $("conversation-list").querySelectorAll("button")) {
    if (Number(button.dataset.id) === chat.conversation) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

async function loadConversations() {
  const conversations = await getJSON("/api/conversations?limit=50");
  $("conversation-list").replaceChildren(
    ...conversations.map((c) =>
      el("li", {}, el("button", { type: "button", className: "conversation", "data-id": c.id, onclick: act(() => openConversation(c.id)) },
        el("span", { textContent: c.title || "(untitled)" }), el("small", { textContent: `${c.persona} · ${shown(c.created_at)}` }))),
    ),
  );
  if (!conversations.length) $("conversation-list").append(el("li", { className: "hint", textContent: "None yet." }));
  markConversation();
}

// --- memories ---------------------------------------------------------------------------------

function memoryCard(m) {
  const text = el("p", { className: "text", textContent: m.text });
  const meta = el("p", { className: "meta", textContent: [m.kind, m.ref_date && `about ${m.ref_date}`, `learned ${shown(m.created_at)}`, m.valid_to && `superseded ${shown(m.valid_to)}`].filter(Boolean).join(" · ") });
  const why = el("div", { className: "why", hidden: true, id: `why-${m.id}` });
  const card = el("li", { className: m.valid_to ? "card superseded" : "card" }, text, meta);

  const whyButton = el("button", { type: "button", textContent: "Why do you know this?", "aria-expanded": "false", "aria-controls": why.id, onclick: act(async () => {
    if (why.hidden) {
      const { sources } = await getJSON(`/api/memories/${m.id}/why`);
      why.replaceChildren(sources.length
        ? el("ul", {}, ...sources.map((e) => el("li", {}, el("span", { className: "meta", textContent: `${e.speaker || e.role} · ${shown(e.ts)}` }), " ", e.text)))
        : el("p", { className: "hint", textContent: "No source messages: added by hand or imported." }));
    }
    why.hidden = !why.hidden;
    whyButton.setAttribute("aria-expanded", String(!why.hidden));
  }) });

  const edit = el("button", { type: "button", textContent: "Edit", onclick: () => {
    const box = el("textarea", { id: `edit-${m.id}`, value: m.text, rows: 3 });
    const kind = el("select", { id: `edit-kind-${m.id}` }, ...[...$("memory-kind").options].filter((o) => o.value).map((o) => el("option", { textContent: o.value })));
    kind.value = m.kind;
    const form = el("form", { className: "edit", onsubmit: act(async (event) => {
      event.preventDefault();
      const saved = await (await api(`/api/memories/${m.id}`, { method: "PATCH", json: { text: box.value, kind: kind.value } })).json();
      card.replaceWith(memoryCard(saved));
      say("Saved.");
    }) },
      el("label", { htmlFor: box.id, textContent: "Text" }), box,
      el("label", { htmlFor: kind.id, textContent: "Kind" }), kind,
      el("div", { className: "actions" }, el("button", { type: "submit", textContent: "Save" }), el("button", { type: "button", textContent: "Cancel", onclick: () => card.replaceWith(memoryCard(m)) })));
    card.replaceChildren(form);
    box.focus();
  } });

  const forget = el("button", { type: "button", className: "danger", textContent: "Forget", "aria-label": `Forget: ${m.text}`, onclick: act(async () => {
    await api(`/api/memories/${m.id}`, { method: "DELETE" });
    card.remove();
    say(`Forgotten: ${m.text}`);
  }) });
  card.append(el("div", { className: "actions" }, whyButton, edit, forget), why);
  return card;
}

async function loadMemories() {
  const q = $("memory-q").value.trim();
  const params = new URLSearchParams({ all: $("memory-all").checked });
  if ($("memory-kind").value) params.set("kind", $("memory-kind").value);
  const memories = await getJSON(`/api/memories?${params}`);
  const list = $("memory-list");
  if (q) {
    // search covers memories and past messages; memories show in full, with their buttons
    const byId = new Map(memories.map((m) => [m.id, m]));
    const hits = await getJSON(`/api/memories/search?${new URLSearchParams({ q, k: 20 })}`);
    list.replaceChildren(...hits.map((h) => (h.kind === "memory" && byId.has(h.id)
      ? memoryCard(byId.get(h.id))
      : el("li", { className: "card" }, el("p", { className: "text", textContent: h.text }), el("p", { className: "meta", textContent: `${h.kind === "memory" ? "memory" : "past message"} · ${h.speaker || ""} ${shown(h.when)}` })))));
    say(`${hits.length} found for "${q}" (memories and past messages).`);
    return;
  }
  const newest = $("memory-order").value === "new";
  memories.sort((a, b) => (newest ? -1 : 1) * (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id - b.id));
  list.replaceChildren(...memories.map(memoryCard));
  if (!memories.length) list.append(el("li", { className: "hint", textContent: "No memories yet: anima learns them from what you tell it." }));
}

async function exportMemories() {
  const blob = await (await api("/api/memories/export")).blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: "anima-memories.json" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  say("Exported to anima-memories.json.");
}

// --- inbox --------------------------------------------------------------------------------------

const SNOOZES = ["in 1 hour", "in 3 hours", "tomorrow at 9"];

function inboxCard(item) {
  const card = el("li", { className: "card" });
  const snooze = el("select", { id: `snooze-${item.id}` }, ...SNOOZES.map((s) => el("option", { textContent: s })));
  const mark = (action, json) => act(async () => {
    await api(`/api/inbox/${item.id}/${action}`, { method: "POST", json });
    card.remove();
    say(`${action === "done" ? "Done" : action === "dismiss" ? "Dismissed" : "Snoozed"}: ${item.title}`);
    await countInbox();
  });
  card.append(...[
    el("p", { className: "meta", textContent: `${item.kind} · ${shown(item.created)}` }),
    el("p", { className: "title", textContent: item.title }),
    item.body ? el("p", { className: "body", textContent: item.body }) : null,
    item.reason ? el("p", { className: "reason", textContent: `Why: ${item.reason}` }) : null,
    el("div", { className: "actions" },
      el("button", { type: "button", textContent: "Done", "aria-label": `Done: ${item.title}`, onclick: mark("done") }),
      el("label", { htmlFor: snooze.id, className: "visually-hidden", textContent: `Snooze ${item.title} until` }), snooze,
      el("button", { type: "button", textContent: "Snooze", "aria-label": `Snooze: ${item.title}`, onclick: mark("snooze", { until: snooze.value }) }),
      el("button", { type: "button", textContent: "Dismiss", "aria-label": `Dismiss: ${item.title}`, onclick: mark("dismiss") })),
  ].filter(Boolean));
  return card;
}

async function countInbox() {
  try {
    const items = await getJSON("/api/inbox");
    $("inbox-count").textContent = items.length ? String(items.length) : "";
    $("inbox-count").setAttribute("aria-label", `${items.length} new`);
  } catch {}
}

async function loadInbox() {
  let items;
  try {
    items = await getJSON("/api/inbox");
  } catch (err) {
    if (err.status !== 404) throw err;
    $("inbox-list").replaceChildren(el("li", { className: "hint", textContent: "No inbox on this server yet." }));
    return;
  }
  $("inbox-list").replaceChildren(...items.map(inboxCard));
  if (!items.length) $("inbox-list").append(el("li", { className: "hint", textContent: "Nothing new." }));
  const [reminders, briefing] = await Promise.all([getJSON("/api/reminders"), getJSON("/api/briefing")]);
  $("reminder-list").replaceChildren(...reminders.map((r) => el("li", {}, r.text, " ", el("span", { className: "meta", textContent: `${r.kind} · ${r.due ? shown(r.due) : "no time"}${r.every ? ` · ${r.every}` : ""}` }))));
  if (!reminders.length) $("reminder-list").append(el("li", { className: "hint", textContent: "No reminders." }));
  $("briefing").replaceChildren(
    el("p", { className: "title", textContent: briefing.title }),
    briefing.lines.length
      ? el("ul", { className: "plain" }, ...briefing.lines.map((l) => el("li", {}, el("span", { className: "meta", textContent: l.section }), " ", l.text, el("span", { className: "reason", textContent: ` (why: ${l.reason})` }))))
      : el("p", { className: "hint", textContent: "Nothing planned." }),
  );
  await countInbox();
}

async function addReminder(event) {
  event.preventDefault();
  const reminder = await (await api("/api/reminders", { method: "POST", json: { text: $("reminder-text").value, at: $("reminder-at").value } })).json();
  $("reminder-text").value = $("reminder-at").value = "";
  say(`Reminder set: ${reminder.text}, ${shown(reminder.due)}`);
  await loadInbox();
}

// --- audit and settings -----------------------------------------------------------------------

async function loadAudit() {
  const reports = await getJSON("/api/audit");
  $("audit-list").replaceChildren(...reports.map((r) => el("li", {}, el("button", { type: "button", className: "link", textContent: r.name, onclick: act(async () => {
    $("audit-frame").srcdoc = await (await api(`/api/audit/${r.name.split("/").map(encodeURIComponent).join("/")}`)).text();
    $("audit-frame").hidden = false;
    $("audit-frame").title = `Audit report ${r.name}`;
  }) }), " ", el("span", { className: "meta", textContent: shown(r.modified) }))));
  if (!reports.length) $("audit-list").append(el("li", { className: "hint", textContent: "No reports yet: run `anima audit`." }));
}

async function loadSettings() {
  const s = await getJSON("/api/settings");
  const rows = [
    ["Model backend", s.backend], ["Chat model", s.model], ["Embedder", s.embedder],
    ["Privacy", s.privacy.remote ? "remote models allowed" : "local only"], ["Redaction before remote models", s.privacy.redact ? "on" : "off"],
    ["Quiet hours", s.proactive.quiet_hours || "none"],
  ];
  $("settings").replaceChildren(...rows.flatMap(([name, value]) => [el("dt", { textContent: name }), el("dd", { textContent: value })]));
}

// --- wiring ---------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", (e) => logIn(e).catch((err) => ($("login-error").textContent = err.message)));
$("logout").addEventListener("click", () => showLogin());
for (const button of document.querySelectorAll("nav [data-tab]")) button.addEventListener("click", () => showTab(button.dataset.tab));
$("new-chat").addEventListener("click", newChat);
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || chat.controller) return;
  $("message").value = "";
  send(text);
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("chat-form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => chat.controller?.abort());
document.addEventListener("keydown", (event) => event.key === "Escape" && chat.controller?.abort());
$("memory-search").addEventListener("submit", (e) => (e.preventDefault(), loadMemories().catch((err) => say(err.message, true))));
for (const id of ["memory-kind", "memory-order", "memory-all"]) $(id).addEventListener("change", () => loadMemories().catch((err) => say(err.message, true)));
$("memory-export").addEventListener("click", act(exportMemories));
$("reminder-form").addEventListener("submit", act(addReminder));

// With no API keys on the server (one user on loopback) there is nothing to log in with.
(async () => {
  const open = !sessionStorage.getItem(KEY) && (await fetch("/v1/models")).ok;
  if (open || sessionStorage.getItem(KEY)) await enter().catch((err) => showLogin(err.message));
  else showLogin();
})();
