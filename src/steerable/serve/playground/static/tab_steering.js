// The Steering tab: base and steered completions side by side, one slider per steering artifact.
// Every request is the API's own /v1/completions: the page holds no model logic.
(function () {
  "use strict";
  const P = () => window.Playground;

  const { el, field } = window.Playground; // playground.js runs first (deferred scripts keep their order)

  function render(panel, config) {
    const sliders0 = config.sliders || {};
    const arts = (config.steering || []).map((a) => {
      const b = Object.assign({ range: null }, a, sliders0[a.name] || {});
      if (!b.range && b.strength !== null) b.range = [-3 * Math.abs(b.strength) || -3, 3 * Math.abs(b.strength) || 3];
      return b;
    });
    const example = (config.problems && config.problems[0]) || "Q: 37+48-19=\n";
    const prompt = el("textarea", { rows: "3" });
    prompt.value = example;
    const seed = el("input", { type: "number", value: "0", min: "0", step: "1" });
    const maxTokens = el("input", { type: "number", value: "48", min: "1", max: String(config.limits.max_tokens), step: "1" });
    const temperature = el("input", { type: "number", value: "0", min: "0", max: "2", step: "0.1" });
    const pick = el("select", {});
    const sliders = el("div", { class: "pg-row" });
    const inputs = {};  // artifact name -> its range input (or checkbox for an ablated direction)
    let controllerOn = null;

    for (const [i, a] of arts.entries()) {
      pick.append(el("option", { value: a.name, text: `${a.name} (${a.kind})` }));
      const id = `steering-strength-${i}`;
      if (a.range) {
        const [lo, hi] = a.range;
        const input = el("input", { type: "range", min: String(lo), max: String(hi),
          step: String((hi - lo) / 60 || 0.1), value: String(a.strength), "data-artifact": a.name });
        const shown = el("output", { for: id, id: `${id}-value`, text: Number(a.strength).toFixed(2) });
        input.id = id;
        input.addEventListener("input", () => { shown.textContent = Number(input.value).toFixed(2); });
        input.addEventListener("change", () => { pick.value = a.name; schedule(); });
        sliders.append(el("div", { class: "pg-field pg-slider" },
          el("label", { for: id, text: `${a.name} (${a.kind}) strength` }), input, shown));
        inputs[a.name] = input;
      } else {  // an ablated direction: on or off
        const box = el("input", { type: "checkbox", "data-artifact": a.name });
        box.checked = true;
        box.id = id;
        box.addEventListener("change", () => { pick.value = a.name; schedule(); });
        sliders.append(el("div", { class: "pg-field" }, box, el("label", { for: id, text: `${a.name} (${a.kind}) ablated` })));
        inputs[a.name] = box;
      }
      if (a.kind === "controller" && controllerOn === null) {
        controllerOn = el("input", { type: "checkbox", id: "steering-controller-on" });
        controllerOn.checked = true;
        controllerOn.addEventListener("change", () => { pick.value = a.name; schedule(); });
        sliders.append(el("div", { class: "pg-field" }, controllerOn,
          el("label", { for: "steering-controller-on", text: `controller ${a.name} on` })));
      }
    }
    const run = el("button", { type: "button", id: "steering-run", text: "Run" });
    const base = el("pre", { id: "steering-base", "aria-live": "polite", class: "pg-out" });
    const steered = el("pre", { id: "steering-steered", "aria-live": "polite", class: "pg-out" });
    const status = el("p", { id: "steering-status", "aria-live": "polite" });
    const weights = el("div", { id: "steering-weights", class: "pg-plot", role: "img",
      "aria-label": "the controller's per-layer weights for this prompt" });
    weights.hidden = true;

    panel.append(
      field("steering-prompt", "Prompt", prompt),
      el("div", { class: "pg-row" },
        field("steering-seed", "Seed", seed),
        field("steering-max-tokens", "Max tokens", maxTokens),
        field("steering-temperature", "Temperature", temperature)),
      arts.length ? field("steering-artifact", "Steer with", pick)
        : el("p", { text: "This server has no steering artifacts: start it with --steer NAME=PATH." }),
      sliders,
      run,
      status,
      el("div", { class: "pg-columns" },
        el("section", { class: "pg-card", "aria-labelledby": "steering-base-h" },
          el("h3", { id: "steering-base-h", text: "Base" }), base),
        el("section", { class: "pg-card", "aria-labelledby": "steering-steered-h" },
          el("h3", { id: "steering-steered-h", text: "Steered" }), steered)),
      weights,
    );

    const baseCache = new Map();  // prompt + seed + sampling -> base text: the base side never re-runs for a slider
    let timer = null;
    let inflight = null;  // the steered request a newer one replaces is cancelled (the server drops its rows)

    function common() {
      return { prompt: prompt.value, seed: Number(seed.value), max_tokens: Number(maxTokens.value),
        temperature: Number(temperature.value) };
    }

    function steering() {
      const name = pick.value;
      const a = arts.find((x) => x.name === name);
      if (!a) return null;
      if (a.kind === "controller" && controllerOn && !controllerOn.checked) return null;
      const input = inputs[name];
      if (!a.range) return input.checked ? { name } : null;
      return { name, strength: Number(input.value) };
    }

    function drawWeights(c) {
      if (!c || !P().plotly) { weights.hidden = true; return; }
      weights.hidden = false;
      const y = c.weights.map((w) => w * c.scale * c.alpha);
      P().plotly.react(weights, [
        { type: "bar", x: c.layers, y: c.weights, name: "w (layer weight)" },
        { type: "bar", x: c.layers, y, name: `scale x w x alpha (scale ${c.scale.toFixed(3)})` },
      ], { title: { text: "Controller: per-layer weights for this prompt" }, barmode: "group",
        xaxis: { title: { text: "layer" }, dtick: 1 }, yaxis: { title: { text: "weight" } }, height: 300,
        margin: { t: 40, r: 10, b: 40, l: 50 } }, { displayModeBar: false });
    }

    async function runSteered() {
      if (inflight) inflight.abort();
      const mine = inflight = new AbortController();
      const body = common();
      const s = steering();
      if (s) body.steering = s;
      steered.setAttribute("aria-busy", "true");
      try {
        let r;
        try {
          r = await P().api("/v1/completions", body, { signal: mine.signal });
        } catch (e) {
          if (e.name === "AbortError") return;  // a newer slider position replaced it
          throw e;
        }
        if (mine !== inflight) return;
        steered.textContent = r.choices[0].text;
        drawWeights(r.steerable && r.steerable.controller);
        status.textContent = s ? `steered with ${s.name}${s.strength !== undefined ? " at " + s.strength.toFixed(2) : ""}`
          : "not steered (artifact off)";
      } finally {
        if (mine === inflight) steered.removeAttribute("aria-busy");
      }
    }

    async function runBase() {
      const body = common();
      const key = JSON.stringify(body);
      if (!baseCache.has(key)) baseCache.set(key, (await P().api("/v1/completions", body)).choices[0].text);
      base.textContent = baseCache.get(key);
    }

    async function runBoth() {
      P().clearError(panel);
      try {
        await runBase();
        await runSteered();
      } catch (e) {
        P().showError(panel, e.message);
      }
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        P().clearError(panel);
        try {
          if (!base.textContent) await runBase();
          await runSteered();
        } catch (e) {
          P().showError(panel, e.message);
        }
      }, 250);
    }

    run.addEventListener("click", runBoth);
  }

  function register() {
    window.Playground.registerTab({ id: "steering", label: "Steering", family: "steering", render });
  }
  if (window.Playground) register();
  else document.addEventListener("DOMContentLoaded", register);
})();
