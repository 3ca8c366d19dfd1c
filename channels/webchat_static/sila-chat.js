/* Sila web chat widget (no build step, no dependencies).
 *
 * Embed with one tag:  <script src="https://HOST/webchat/sila-chat.js" defer></script>
 * Optional attributes: data-lang="ar|en", data-title="…", data-open="true".
 * The widget loads /webchat/sila-chat.css and talks to ws(s)://HOST/webchat/ws (JSON frames:
 * hello → welcome, message, typing, error). Page API: window.SilaChat = {open(), close(), send(text)}.
 * Message text is untrusted: it is only ever inserted as text nodes (URLs become safe links).
 */
(() => {
  "use strict";
  if (window.SilaChat) return; // included twice: keep the first

  const script = document.currentScript || document.querySelector('script[src*="sila-chat.js"]');
  const ORIGIN = new URL(script ? script.src : "/webchat/sila-chat.js", location.href).origin;
  const WS_URL = ORIGIN.replace(/^http/, "ws") + "/webchat/ws";
  const opt = (name) => (script && script.dataset[name]) || "";
  const STORE_KEY = "sila.session";
  const TYPING_MS = 10000;
  const BACKOFF_MIN = 500;
  const BACKOFF_MAX = 10000;
  const PLACEHOLDER = { en: "Type a message… · اكتب رسالتك…", ar: "اكتب رسالتك… · Type a message…" };
  const TEXT = {
    en: { title: "Sila · Patient assistant", launcher: "Chat with us", close: "Close chat",
          send: "Send", input: "Your message", log: "Conversation", typing: "Sila is typing…",
          reconnecting: "Reconnecting…", you: "You:", bot: "Sila:", options: "Choose an option" },
    ar: { title: "صلة · مساعد المرضى", launcher: "تحدث معنا", close: "إغلاق المحادثة",
          send: "إرسال", input: "رسالتك", log: "المحادثة", typing: "صلة تكتب…",
          reconnecting: "جارٍ إعادة الاتصال…", you: "أنت:", bot: "صلة:", options: "اختر أحد الخيارات" },
  };
  const RTL_CHAR = /[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]/;
  const URL_RE = /\bhttps?:\/\/[^\s<>"'\u0600-\u06ff]*[^\s<>"'\u0600-\u06ff.,;:!?)\]}]/gi;

  const normLang = (l) => (String(l || "").toLowerCase().startsWith("ar") ? "ar" : "en");
  const state = {
    lang: normLang(opt("lang") || navigator.language),
    isOpen: false,
    ws: null,
    ready: false,          // welcome received on the current socket
    backoff: BACKOFF_MIN,
    timers: { retry: 0, typing: 0, status: 0 },
    pending: new Map(),    // id -> {frame, time}: sent (or queued) and not yet echoed by the server
    nodes: new Map(),      // message id -> bubble element
  };
  const T = () => TEXT[state.lang];

  const store = {
    get() { try { return localStorage.getItem(STORE_KEY); } catch { return null; } },
    set(value) { try { localStorage.setItem(STORE_KEY, value); } catch { /* storage blocked */ } },
  };

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID(); // secure contexts only
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /* Tiny DOM builder: strings become text nodes, never markup. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else if (value != null && value !== false) node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function appendLinkified(node, text) {
    let last = 0;
    for (const match of text.matchAll(URL_RE)) {
      node.append(text.slice(last, match.index),
        el("a", { href: match[0], target: "_blank", rel: "noopener noreferrer nofollow" }, match[0]));
      last = match.index + match[0].length;
    }
    node.append(text.slice(last));
  }

  function formatTime(iso) {
    if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(iso || "")) iso += "Z"; // no offset given: the server means UTC
    const d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" });
  }

  /* ---------- DOM ---------- */
  const ICON_CHAT = '<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true" focusable="false"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"/></svg>';
  const ICON_SEND = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false"><path fill="currentColor" d="M3 20.5v-7l12-1.5-12-1.5v-7L22 12z"/></svg>';

  const root = el("div", { id: "sila-chat", class: "sila-root", style: "display:none" });
  const launcher = el("button", { type: "button", class: "sila-launcher", "aria-controls": "sila-panel",
    "aria-expanded": "false", onclick: () => (state.isOpen ? close() : open()) });
  launcher.innerHTML = ICON_CHAT; // constant markup, not message text
  const title = el("h2", { id: "sila-title", class: "sila-title" });
  const closeBtn = el("button", { type: "button", class: "sila-close", onclick: () => close() }, "×");
  const status = el("div", { class: "sila-status", role: "status", "aria-live": "polite" });
  const log = el("div", { class: "sila-log", role: "log", "aria-live": "polite", tabindex: "0" });
  const typing = el("div", { class: "sila-typing", role: "status", hidden: true },
    el("span", { class: "sila-dot" }), el("span", { class: "sila-dot" }), el("span", { class: "sila-dot" }),
    el("span", { class: "sila-sr" }));
  const inputLabel = el("label", { for: "sila-input", class: "sila-sr" });
  const input = el("textarea", { id: "sila-input", class: "sila-input", rows: "1",
    autocomplete: "off", maxlength: "2000" });
  const sendBtn = el("button", { type: "submit", class: "sila-send" });
  sendBtn.innerHTML = ICON_SEND;
  const form = el("form", { class: "sila-form" }, inputLabel, input, sendBtn);
  const panel = el("section", { id: "sila-panel", class: "sila-panel", role: "dialog",
    "aria-labelledby": "sila-title", hidden: true },
    el("header", { class: "sila-header" }, el("span", { class: "sila-avatar", "aria-hidden": "true" }, "ص"),
      title, closeBtn),
    status, log, typing, form);
  root.append(panel, launcher);

  function setLang(lang) {
    state.lang = normLang(lang);
    const t = T();
    panel.dir = state.lang === "ar" ? "rtl" : "ltr";
    panel.lang = state.lang;
    title.textContent = opt("title") || t.title;
    launcher.setAttribute("aria-label", t.launcher);
    launcher.title = t.launcher;
    closeBtn.setAttribute("aria-label", t.close);
    sendBtn.setAttribute("aria-label", t.send);
    log.setAttribute("aria-label", t.log);
    inputLabel.textContent = `${TEXT.en.input} · ${TEXT.ar.input}`;
    input.placeholder = PLACEHOLDER[state.lang];
    inputDir();
    typing.lastChild.textContent = t.typing;
    if (status.dataset.kind === "reconnecting") status.textContent = t.reconnecting;
  }

  function setStatus(text, kind = "") {
    clearTimeout(state.timers.status);
    status.textContent = text;
    status.dataset.kind = kind;
  }

  function flashError(message) {
    setStatus(String(message || ""), "error");
    state.timers.status = setTimeout(() => setStatus(state.ready ? "" : T().reconnecting,
      state.ready ? "" : "reconnecting"), 6000);
  }

  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function showTyping(on) {
    clearTimeout(state.timers.typing);
    typing.hidden = !on;
    if (on) { state.timers.typing = setTimeout(() => showTyping(false), TYPING_MS); scrollDown(); }
  }

  /* Buttons are offered on the latest message only. */
  function clearButtons() { log.querySelectorAll(".sila-buttons").forEach((row) => row.remove()); }

  function buttonsRow(buttons) {
    const row = el("div", { class: "sila-buttons", role: "group", "aria-label": T().options });
    for (const b of buttons) {
      const label = String(b.title ?? b.payload ?? "");
      row.append(el("button", { type: "button", class: "sila-btn", dir: "auto", onclick: () => {
        row.querySelectorAll("button").forEach((x) => (x.disabled = true));
        row.remove();
        send(String(b.payload ?? label), label);
        input.focus();
      } }, label));
    }
    return row;
  }

  function renderMessage(m) {
    const existing = m.id && state.nodes.get(String(m.id));
    if (existing) { // the server's echo of our optimistic bubble (or a repeat): update, don't add
      if (m.direction === "in" && !state.pending.has(String(m.id))) existing.classList.remove("sila-pending");
      return existing;
    }
    clearButtons();
    const out = m.direction === "out";
    const t = T();
    const body = el("div", { class: "sila-text" });
    appendLinkified(body, String(m.display || m.text || ""));
    const time = el("time", { class: "sila-time" }, formatTime(m.time));
    if (m.time) time.dateTime = m.time;
    const bubble = el("div", { class: `sila-msg ${out ? "sila-out" : "sila-in"}`, dir: "auto" },
      el("span", { class: "sila-sr", dir: panel.dir }, out ? t.bot : t.you), body, time);
    if (m.id) { bubble.dataset.id = m.id; state.nodes.set(String(m.id), bubble); }
    if (out && Array.isArray(m.buttons) && m.buttons.length) bubble.append(buttonsRow(m.buttons));
    log.append(bubble);
    scrollDown();
    return bubble;
  }

  /* ---------- connection ---------- */
  function transmit(frame) {
    if (state.ready && state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
  }

  function connect() {
    if (state.ws) return;
    clearTimeout(state.timers.retry);
    let ws;
    try { ws = new WebSocket(WS_URL); } catch { scheduleReconnect(); return; }
    state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", session: store.get(), language: state.lang }));
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (state.ws === ws && frame && typeof frame === "object") handle(frame);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.ready = false;
      showTyping(false);
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(state.timers.retry);
    setStatus(T().reconnecting, "reconnecting");
    const delay = Math.min(BACKOFF_MAX, state.backoff * (0.8 + Math.random() * 0.4));
    state.backoff = Math.min(BACKOFF_MAX, state.backoff * 2);
    state.timers.retry = setTimeout(connect, delay);
  }

  function handle(frame) {
    if (frame.type === "welcome") onWelcome(frame);
    else if (frame.type === "message") onMessage(frame);
    else if (frame.type === "typing") showTyping(true);
    else if (frame.type === "idle") showTyping(false); // the bot has finished answering
    else if (frame.type === "error") flashError(frame.message);
  }

  function onWelcome(frame) {
    if (frame.session) store.set(String(frame.session));
    setLang(frame.language || state.lang);
    state.nodes.clear();
    log.replaceChildren(); // history is the whole truth: re-render, so reconnects never duplicate
    for (const m of Array.isArray(frame.history) ? frame.history : []) {
      state.pending.delete(String(m.id));
      renderMessage(m);
    }
    // Messages the server has not acknowledged yet: show them again and (re)send; ids make it idempotent.
    for (const { frame: f, time } of state.pending.values()) {
      renderMessage({ id: f.id, direction: "in", text: f.display || f.text, time }).classList.add("sila-pending");
    }
    state.ready = true;
    state.backoff = BACKOFF_MIN;
    setStatus("");
    for (const { frame: f } of state.pending.values()) transmit(f);
  }

  function onMessage(m) {
    if (m.direction === "out") {
      showTyping(false);
      if (m.language) setLang(m.language);
      if (!state.isOpen) launcher.classList.add("sila-unread");
    } else {
      state.pending.delete(String(m.id));
    }
    renderMessage(m);
  }

  /* ---------- user actions ---------- */
  function send(text, display) {
    text = String(text ?? "").trim();
    if (!text) return;
    const frame = { type: "message", id: uuid(), text };
    if (display) frame.display = String(display);
    const time = new Date().toISOString();
    state.pending.set(frame.id, { frame, time });
    renderMessage({ id: frame.id, direction: "in", text: display || text, time }).classList.add("sila-pending");
    if (!state.ws) { state.backoff = BACKOFF_MIN; connect(); } // queued: sent after the next welcome
    transmit(frame);
  }

  /* Like dir="auto", but an empty box follows the panel's direction (placeholder included). */
  function inputDir() {
    const first = input.value.match(/\p{L}/u);
    input.dir = first ? (RTL_CHAR.test(first[0]) ? "rtl" : "ltr") : panel.dir;
  }

  function autosize() {
    inputDir();
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 120)}px`;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(input.value);
    input.value = "";
    autosize();
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });
  input.addEventListener("input", autosize);
  panel.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });

  function open({ focus = true } = {}) {
    state.isOpen = true;
    panel.hidden = false;
    root.classList.add("sila-is-open");
    launcher.setAttribute("aria-expanded", "true");
    launcher.classList.remove("sila-unread");
    connect();
    scrollDown();
    if (focus) input.focus();
  }

  function close() {
    const hadFocus = panel.contains(document.activeElement);
    state.isOpen = false;
    panel.hidden = true;
    root.classList.remove("sila-is-open");
    launcher.setAttribute("aria-expanded", "false");
    if (hadFocus) launcher.focus();
  }

  function mount() {
    if (document.dir === "rtl" || document.documentElement.dir === "rtl") root.classList.add("sila-left");
    const css = el("link", { rel: "stylesheet", href: `${ORIGIN}/webchat/sila-chat.css` });
    css.onload = css.onerror = () => root.style.removeProperty("display");
    document.head.append(css);
    document.body.append(root);
    setLang(state.lang);
    if (location.hash === "#chat" || opt("open") === "true") open({ focus: false });
  }

  window.addEventListener("hashchange", () => { if (location.hash === "#chat") open(); });
  window.addEventListener("online", () => {
    if (state.isOpen && !state.ws) { state.backoff = BACKOFF_MIN; connect(); }
  });

  window.SilaChat = {
    open: () => open(),
    close: () => close(),
    send: (text) => { if (!state.isOpen) open({ focus: false }); send(text); },
  };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
