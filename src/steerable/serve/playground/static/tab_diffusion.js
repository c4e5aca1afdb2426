// The Diffusion tab (builtin:digits): a steered run drawn as it streams from POST /v1/images/generations.
// Rows are particles, columns are the steps the strategy took; each image is the x0-prediction the step's own
// denoiser call made (the server adds no model call to show it), the last column the final samples. A
// resampling column between steps says which particle each row continues; the candidates list every final
// particle with its reward and the judge's verdict; Plotly draws the rewards at each weighing and FK's ESS.
"use strict";

(function () {
  const ROUTE = "/v1/images/generations";
  const CSS = `
.df-views { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 1rem; margin-top: 0.75rem; }
.df-strip { display: flex; gap: 4px; overflow-x: auto; padding-bottom: 0.4rem; }
.df-col { display: flex; flex-direction: column; gap: 2px; align-items: center; flex: none; min-width: 34px; }
.df-head { height: 1.1rem; font-size: 0.7rem; color: var(--muted); white-space: nowrap; }
.df-cell { height: 46px; display: flex; flex-direction: column; align-items: center; justify-content: flex-start; }
.df-cell img { width: 32px; height: 32px; image-rendering: pixelated; border: 1px solid var(--line); }
.df-rows .df-cell { justify-content: center; font-size: 0.7rem; color: var(--muted); }
.df-score { font-size: 0.6rem; color: var(--muted); line-height: 1; }
.df-rowlabel { font-size: 0.7rem; color: var(--muted); }
.df-sel .df-cell { font-size: 0.7rem; color: var(--muted); justify-content: center; width: 2.2rem; }
.df-sel .df-cell.resampled { color: #b3261e; font-weight: 700; }
.df-cands { display: flex; flex-wrap: wrap; gap: 0.6rem; margin: 0.5rem 0; }
.df-cand { display: flex; flex-direction: column; align-items: center; font-size: 0.75rem; }
.df-cand img { width: 64px; height: 64px; image-rendering: pixelated; border: 2px solid var(--line); }
.df-cand.chosen img { border-color: var(--accent); }
.df-ok { color: #1b7a2c; font-weight: 600; }
.df-bad { color: #b3261e; font-weight: 600; }
.df-chart { height: 220px; width: 100%; }
`;

  const { el, field } = window.Playground; // playground.js runs first (deferred scripts keep their order)

  function fmt(x, digits) {
    return x === null || x === undefined ? "n/a" : Number(x).toFixed(digits === undefined ? 2 : digits);
  }

  // One run's view: the particle strip, the candidates and the chart, filled from the stream's events.
  function makeView(parent, key, title) {
    const card = el("section", { class: "pg-card", id: "diffusion-view-" + key, "aria-label": title });
    card.append(el("h3", {}, title));
    const status = el("p", { class: "pg-stats", id: "diffusion-status-" + key }, "waiting for the first event…");
    const legend = el("p", { class: "pg-stats" }, "Rows: particles. Columns: the denoising step (\u21bb: " +
      "resampling, each arrow names the particle the row continues, red where it is another). The number under " +
      "an image is its reward at a weighing.");
    const strip = el("div", { class: "df-strip", id: "diffusion-particles-" + key, role: "group",
      "aria-label": title + ": particles (rows) at each step (columns)" });
    const resampling = el("p", { class: "pg-stats", id: "diffusion-resampling-" + key });
    const cands = el("div", { class: "df-cands", id: "diffusion-candidates-" + key, role: "list",
      "aria-label": title + ": final candidates" });
    const answer = el("p", { class: "pg-stats", id: "diffusion-answer-" + key });
    const chart = el("div", { class: "df-chart", id: "diffusion-chart-" + key, role: "img",
      "aria-label": title + ": reward of each particle at each weighing, and the effective sample size" });
    card.append(status, legend, strip, resampling, el("h3", {}, "Final candidates"), cands, answer, chart);
    parent.append(card);

    const view = { card, status, strip, resampling, cands, answer, chart, steps: 0, resamples: 0, moved: 0,
      rows: 0, lastCol: null, lastState: null, lastIndex: null, scores: [], ess: null, schedule: null };

    view.onEvent = (e) => {
      if (e.type === "init") {
        view.status.textContent = e.rows + " particles drawn from noise";
        if (!view.strip.children.length) {
          const labels = el("div", { class: "df-col df-rows", "aria-hidden": "true" });
          labels.append(el("div", { class: "df-head" }, "step"));
          for (let i = 0; i < e.rows; i++) labels.append(el("div", { class: "df-cell" }, "p" + i));
          view.strip.append(labels);
        }
        view.rows = Math.max(view.rows, e.rows);
      } else if (e.type === "step") {
        view.steps += 1;
        const step = Math.max(...e.index);
        const col = el("div", { class: "df-col df-step", "data-step": String(step), "data-state": String(e.state) });
        col.append(el("div", { class: "df-head" }, String(step)));
        (e.previews || []).forEach((src, row) => {
          const cell = el("div", { class: "df-cell" });
          const what = e.preview_of[row] === "sample" ? "final sample" : "x0-prediction";
          cell.append(el("img", { src, alt: "particle " + row + ", step " + e.index[row],
            title: "particle " + row + ", step " + e.index[row] + " (" + what + ")" }));
          col.append(cell);
        });
        view.strip.append(col);
        view.lastCol = col;
        view.lastState = e.state;
        view.lastIndex = step;
        view.status.textContent = "step " + step + ": " + e.rows + " particles";
      } else if (e.type === "score") {
        if (view.lastCol && e.state === view.lastState) {
          const cells = view.lastCol.querySelectorAll(".df-cell");
          e.rows.forEach((row, i) => {
            if (row >= 0 && cells[row]) cells[row].append(el("span", { class: "df-score" }, fmt(e.scores[i], 1)));
          });
        }
        view.scores.push({ step: view.lastIndex, scores: e.scores });
      } else if (e.type === "select") {
        const col = el("div", { class: "df-col df-sel", "data-step": String(view.lastIndex) });
        col.append(el("div", { class: "df-head", title: "resampling after step " + view.lastIndex }, "\u21bb"));
        let moved = 0;
        e.parents.forEach((p, row) => {
          const changed = p !== row;
          if (changed) moved += 1;
          const cell = el("div", { class: "df-cell" + (changed ? " resampled" : ""),
            title: "particle " + row + " continues particle " + p,
            "aria-label": "particle " + row + " continues particle " + p }, "\u2190" + p);
          col.append(cell);
        });
        view.strip.append(col);
        view.resamples += 1;
        view.moved += moved;
        if (moved) {
          view.card.dataset.resampled = "true";
        }
        view.resampling.textContent = "selections: " + view.resamples + " (FK: resampling; DTS: a rollout " +
          "leaving a tree node), rows that took another particle's place: " + view.moved;
      } else if (e.type === "candidates") {
        view.ess = e.info && e.info.ess ? e.info.ess : null;
        view.schedule = e.info && e.info.schedule ? e.info.schedule : null;
        e.candidates.forEach((c, i) => {
          const item = el("div", { class: "df-cand", role: "listitem" });
          item.append(el("img", { src: c.preview, alt: "candidate " + i + ", judge sees " + c.answer }));
          item.append(el("span", {}, "reward " + fmt(c.reward)));
          const verdict = el("span", { class: c.success ? "df-ok" : "df-bad" },
            "judge: " + c.answer + (c.success ? " \u2713" : " \u2717"));
          item.append(verdict);
          view.cands.append(item);
        });
      }
    };

    view.finish = (res) => {
      const s = res.steerable;
      const im = s.images[0];
      // the answer is the candidate whose picture the response carries (same 8x8 PNG)
      const png = "data:image/png;base64," + res.data[0].b64_json;
      const chosen = Array.from(view.cands.children).find((node) => node.querySelector("img").src === png);
      if (chosen) {
        chosen.classList.add("chosen");
        chosen.append(el("strong", {}, "answer"));
      }
      view.answer.innerHTML = "";
      const verdict = el("span", { class: im.success ? "df-ok" : "df-bad" },
        im.success ? "the judge agrees" : "the judge sees " + im.answer);
      view.answer.append("Answer: reward " + fmt(im.reward) + ", ", verdict,
        " \u00b7 " + s.cost.nfe + " NFE, " + s.cost.reward_calls + " reward calls, " + fmt(s.cost.seconds, 2) + " s");
      view.card.dataset.nfe = String(s.cost.nfe);
      view.status.textContent = "done: " + view.steps + " steps drawn, " + s.method + " at budget " + s.budget +
        ", seed " + s.seed;
      drawChart(view);
    };
    return view;
  }

  function drawChart(view) {
    const Plotly = window.Playground.plotly;
    if (!Plotly || !view.scores.length) return;
    const xs = [];
    const ys = [];
    for (const s of view.scores) {
      for (const y of s.scores) {
        xs.push(s.step);
        ys.push(y);
      }
    }
    const traces = [{ x: xs, y: ys, mode: "markers", name: "reward of a particle", marker: { size: 6 } }];
    if (view.ess && view.schedule && view.ess.length === view.schedule.length) {
      traces.push({ x: view.schedule, y: view.ess, mode: "lines+markers", name: "ESS", yaxis: "y2" });
    }
    const layout = {
      margin: { l: 50, r: 50, t: 10, b: 35 }, showlegend: true, legend: { orientation: "h", y: -0.25 },
      xaxis: { title: { text: "step" } }, yaxis: { title: { text: "log p(target | x0)" } },
      yaxis2: { title: { text: "ESS" }, overlaying: "y", side: "right", range: [0, view.rows * 1.05] },
    };
    Plotly.newPlot(view.chart, traces, layout, { displayModeBar: false, responsive: true });
  }

  function render(panel, config) {
    const info = config.diffusion || {};
    const methods = info.methods || (config.methods || []).map((name) => ({ name, summary: "" }));
    const dflt = info.default || { method: "fk", budget: 4 };
    const style = el("style");
    style.textContent = CSS;
    document.head.append(style);

    const intro = el("p", { class: "pg-muted" },
      "Steer the digits denoiser towards a target digit. Each image is a particle's x0-prediction at a " +
      "denoising step, as the step's own model call made it (showing it costs no NFE); one particle costs " +
      (info.nfe_per_particle || 50) + " NFE.");
    const target = el("select", { id: "diffusion-target" });
    for (const t of info.targets || ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]) {
      target.append(el("option", { value: t }, t));
    }
    target.value = "3";
    const method = el("select", { id: "diffusion-method" });
    for (const m of methods) {
      method.append(el("option", { value: m.name }, m.summary ? m.name + ": " + m.summary : m.name));
    }
    method.value = dflt.method;
    const budget = el("input", { id: "diffusion-budget", type: "number", min: "1", step: "1",
      max: String(info.max_budget || (config.limits || {}).max_budget || 64), value: String(dflt.budget) });
    const seed = el("input", { id: "diffusion-seed", type: "number", min: "0", step: "1", value: "0" });
    const run = el("button", { id: "diffusion-run", type: "button" }, "Run");
    const compare = el("button", { id: "diffusion-compare", type: "button" }, "Best-of-N vs FK");
    const row = el("div", { class: "pg-row" });
    row.append(field("diffusion-target", "Target digit", target), field("diffusion-method", "Method", method),
      field("diffusion-budget", "Budget (particles)", budget), field("diffusion-seed", "Seed", seed), run, compare);
    const note = el("p", { class: "pg-stats", id: "diffusion-limits" },
      "Budget up to " + budget.max + " here (the server's --max-budget and --max-request-nfe); the API " +
      "refuses more with its own message.");
    const results = el("div", { id: "diffusion-results", class: "df-views", "aria-live": "polite" });
    panel.append(intro, row, note, results);

    function body(name) {
      const b = { prompt: target.value, n: 1, scaling: { method: name, budget: Number(budget.value) } };
      if (seed.value !== "") b.seed = Number(seed.value);
      return b;
    }

    async function go(names) {
      window.Playground.clearError(panel);
      run.disabled = compare.disabled = true;
      results.innerHTML = "";
      results.dataset.state = "running";
      try {
        // every view first, so each card (and its chart) has its final width before it is drawn
        const views = names.map((name) => makeView(results, names.length === 1 ? "run" : name,
          name + " \u00b7 budget " + budget.value + " \u00b7 digit " + target.value));
        for (const [i, name] of names.entries()) {
          const res = await window.Playground.stream(ROUTE, body(name), views[i].onEvent);
          views[i].finish(res);
        }
        results.dataset.state = "done";
      } catch (e) {
        results.dataset.state = "error";
        window.Playground.showError(panel, e.message);
      } finally {
        run.disabled = compare.disabled = false;
      }
    }

    run.addEventListener("click", () => go([method.value]));
    compare.addEventListener("click", () => go(["bon", "fk"]));
  }

  window.Playground.registerTab({ id: "diffusion", label: "Diffusion", family: "diffusion", render });
})();
