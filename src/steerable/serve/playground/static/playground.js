// The playground's shell: the header, the tabs and window.Playground, the API the tab files use.
// No framework and no build step: the page calls the server's own endpoints, so the API's limits hold for it.
"use strict";

(function () {
  const KEY = "steerable-api-key";
  const tabs = []; // registered with Playground.registerTab, in script order
  const shown = []; // the tabs this server's families show
  let rendered = false;

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    const key = sessionStorage.getItem(KEY);
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  // The API's one-line message from an error response (its OpenAI-style body), or the status line.
  async function errorOf(resp) {
    let text = "";
    try {
      text = await resp.text();
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) return body.error.message;
    } catch (e) {
      // not JSON: fall through to the status line
    }
    return (resp.status + " " + resp.statusText).trim() + (text ? ": " + text.slice(0, 200) : "");
  }

  async function send(path, init) {
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e; // the caller cancelled it (options.signal): not a server error
      throw new Error("cannot reach the server (" + e.message + ")");
    }
    if (!resp.ok) {
      const err = new Error(await errorOf(resp));
      err.status = resp.status;
      throw err;
    }
    return resp;
  }

  // GET when body is undefined, else POST it as JSON; resolves to the JSON answer, rejects with the API's message.
  // options.signal (an AbortController's) cancels it: the promise rejects with an error named "AbortError".
  async function api(path, body, options) {
    const init = body === undefined
      ? { method: "GET", headers: headers(false) }
      : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
    if (options && options.signal) init.signal = options.signal;
    const resp = await send(path, init);
    return resp.json();
  }

  // POST body with stream: true and read the server-sent events as they arrive: onEvent(event) for each
  // steerable.event, onData(object) for every other JSON object (a plain completion's chunks), the last of
  // those (the endpoint's usual answer) resolves the promise, an error object rejects it with the API's message.
  // options.signal cancels it, as for api (the server drops a run whose client left).
  async function stream(path, body, onEvent, onData, options) {
    const payload = Object.assign({}, body, { stream: true });
    const init = { method: "POST", headers: headers(true), body: JSON.stringify(payload) };
    if (options && options.signal) init.signal = options.signal;
    init.headers["Accept"] = "text/event-stream";
    const resp = await send(path, init);
    const type = resp.headers.get("content-type") || "";
    if (!type.includes("text/event-stream")) return resp.json(); // answered at once, without a stream
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let last = null;
    let done = false;
    const handle = (block) => {
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (!data.length) return;
      const text = data.join("\n");
      if (text === "[DONE]") {
        done = true;
        return;
      }
      let obj;
      try {
        obj = JSON.parse(text);
      } catch (e) {
        throw new Error("the server sent an event that is not JSON: " + text.slice(0, 200));
      }
      if (obj && obj.error) {
        const err = new Error(obj.error.message || "the run failed");
        err.status = 200;
        throw err;
      }
      if (obj && obj.object === "steerable.event") {
        if (onEvent) onEvent(obj.event);
      } else {
        last = obj;
        if (onData) onData(obj);
      }
    };
    try {
      while (!done) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        let cut;
        while (!done && (cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          handle(block);
        }
      }
      if (!done && buffer.trim()) handle(buffer);
    } catch (e) {
      reader.cancel().catch(() => {});
      throw e;
    }
    if (last === null) throw new Error("the stream ended before the answer");
    return last;
  }

  // The panel's alert box (made on first use, as the panel's first child).
  function alertBox(panel) {
    let box = panel.querySelector(":scope > .pg-error");
    if (!box) {
      box = document.createElement("div");
      box.className = "pg-error";
      box.setAttribute("role", "alert");
      box.hidden = true;
      if (panel.id) box.id = panel.id + "-error";
      panel.prepend(box);
    }
    return box;
  }

  // The API's message in the panel's alert box (the page's own box when panel is null).
  function showError(panel, message) {
    const text = String(message && message.message ? message.message : message);
    const box = panel ? alertBox(panel) : document.getElementById("page-error");
    box.textContent = text;
    box.hidden = false;
  }

  function clearError(panel) {
    const box = panel ? alertBox(panel) : document.getElementById("page-error");
    box.textContent = "";
    box.hidden = true;
  }

  function registerTab(tab) {
    if (!tab || !tab.id || !tab.family || typeof tab.render !== "function") {
      throw new Error("Playground.registerTab needs {id, label, family, render(panel, config)}");
    }
    tabs.push(tab);
  }

  function pageError(message, status) {
    const box = document.getElementById("page-error");
    box.textContent = message;
    if (status === 401) {
      box.textContent += ". Enter the server's API key above and press Connect.";
      document.getElementById("api-key").focus();
    }
    box.hidden = false;
  }

  function select(index, focus) {
    shown.forEach((tab, i) => {
      const on = i === index;
      const button = document.getElementById("tab-" + tab.id);
      const panel = document.getElementById("panel-" + tab.id);
      button.setAttribute("aria-selected", on ? "true" : "false");
      button.tabIndex = on ? 0 : -1;
      panel.hidden = !on;
      if (on) {
        if (focus) button.focus();
        if (history.replaceState) history.replaceState(null, "", "#" + tab.id);
        if (typeof tab.onShow === "function") tab.onShow(panel);
        panel.dispatchEvent(new CustomEvent("playground:show"));
      }
    });
  }

  // Arrow keys move between tabs (and select them), Home and End go to the first and the last.
  function onTabKey(event) {
    const i = shown.findIndex((t) => "tab-" + t.id === event.currentTarget.id);
    const n = shown.length;
    const to = { ArrowRight: (i + 1) % n, ArrowLeft: (i - 1 + n) % n, Home: 0, End: n - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    select(to, true);
  }

  function render(config) {
    const bar = document.getElementById("tabs");
    const main = document.getElementById("panels");
    const families = config.families || [];
    for (const family of families) {
      for (const tab of tabs) if (tab.family === family && !shown.includes(tab)) shown.push(tab);
    }
    document.getElementById("page-status").remove();
    if (!shown.length) {
      const p = document.createElement("p");
      p.id = "page-status";
      p.textContent = "This server's families (" + families.join(", ") + ") have no tab in this page yet.";
      main.append(p);
      return;
    }
    shown.forEach((tab, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.id = "tab-" + tab.id;
      button.className = "pg-tab";
      button.setAttribute("role", "tab");
      button.setAttribute("aria-controls", "panel-" + tab.id);
      button.textContent = tab.label || tab.id;
      button.addEventListener("click", () => select(i, false));
      button.addEventListener("keydown", onTabKey);
      bar.append(button);
      const panel = document.createElement("section");
      panel.id = "panel-" + tab.id;
      panel.className = "pg-panel";
      panel.setAttribute("role", "tabpanel");
      panel.setAttribute("aria-labelledby", button.id);
      panel.tabIndex = 0;
      panel.hidden = true;
      main.append(panel);
      alertBox(panel);
      try {
        tab.render(panel, config);
      } catch (e) {
        showError(panel, "this tab failed to draw: " + e.message);
      }
    });
    const wanted = shown.findIndex((t) => "#" + t.id === location.hash);
    select(wanted >= 0 ? wanted : 0, false);
  }

  let attempts = 0; // only the latest connect may write the page: an earlier one answering late is stale

  async function connect() {
    const attempt = ++attempts;
    const box = document.getElementById("page-error");
    box.hidden = true;
    box.textContent = "";
    try {
      const config = await api("/v1/playground");
      if (attempt !== attempts) return;
      Playground.config = config;
      document.getElementById("model-name").textContent = config.model;
      if (!rendered) {
        rendered = true;
        render(config);
      }
    } catch (e) {
      if (attempt !== attempts) return;
      const status = document.getElementById("page-status");
      if (status) status.textContent = "Not connected.";
      pageError(e.message, e.status);
    }
  }

  // the tabs' DOM builders: el("p", {class: "x"}, "text", child, ...) (a "text" attribute sets the text;
  // undefined and null children are skipped) and field(id, label, input), a labelled input
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const kid of kids) if (kid !== undefined && kid !== null) node.append(kid);
    return node;
  }

  function field(id, label, input) {
    input.id = id;
    return el("div", { class: "pg-field" }, el("label", { for: id, text: label }), input);
  }

  window.Playground = {
    api,
    stream,
    showError,
    clearError,
    registerTab,
    el,
    field,
    config: null,
    get plotly() {
      return window.Plotly;
    },
  };

  document.addEventListener("DOMContentLoaded", () => {
    const input = document.getElementById("api-key");
    input.value = sessionStorage.getItem(KEY) || "";
    document.getElementById("api-key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (key) sessionStorage.setItem(KEY, key);
      else sessionStorage.removeItem(KEY);
      connect();
    });
    connect();
  });
})();
