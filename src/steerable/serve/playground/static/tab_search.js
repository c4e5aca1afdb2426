// The Search tab: a scaling run drawn as its events arrive (x = step, y = particle row, colour = PRM score,
// a line from parent to child where a selection moved a row), then the answer, whether it is right and the cost.
// The run is the API's own streamed /v1/completions with a "scaling" field.
(function () {
  "use strict";
  const P = () => window.Playground;
  const VOTED = new Set(["sc", "sc-early", "sc-short"]);

  const { el, field } = window.Playground; // playground.js runs first (deferred scripts keep their order)

  // What the events say, kept as the picture's data: markers (one per row per step), edges (parent -> child).
  class RunView {
    constructor() {
      this.markers = [];  // {state, x, y, score, text}
      this.trails = [];  // [x0, y0, x1, y1]: a row going on in the same state
      this.edges = [];  // [x0, y0, x1, y1]: a selection sent row y0 of the parent to row y1
      this.last = new Map();  // state -> x of its latest step
      this.parents = new Map();  // state -> [{x, y}] where each of its rows came from (a select)
      this.particles = 0;  // rows of the latest step
    }

    add(e) {
      if (e.type === "init") {  // every particle starts at the prompt: step 0
        for (let i = 0; i < e.rows; i++) {
          this.markers.push({ state: e.state, x: 0, y: i, score: null, text: "(the prompt)", done: false });
        }
        this.last.set(e.state, 0);
        this.particles = e.rows;
      } else if (e.type === "step") {
        const prev = this.last.get(e.state);
        const from = this.parents.get(e.state);
        for (let i = 0; i < e.rows; i++) {
          const text = e.previews ? e.previews[i] : "";
          if (prev !== undefined) {
            this.trails.push([prev, i, e.step, i]);
          } else if (from) {
            this.edges.push([from[i].x, from[i].y, e.step, i]);
          }
          this.markers.push({ state: e.state, x: e.step, y: i, score: null, text, done: e.done[i] });
        }
        this.parents.delete(e.state);
        this.last.set(e.state, e.step);
        this.particles = e.rows;
      } else if (e.type === "score") {
        const x = this.last.get(e.state);
        e.rows.forEach((row, j) => {
          const m = this.markers.find((k) => k.state === e.state && k.x === x && k.y === row);
          if (m) m.score = e.scores[j];
        });
      } else if (e.type === "select") {
        const x = this.last.get(e.from);
        this.last.delete(e.state);  // a new state (its number may be one a dropped state had)
        if (x !== undefined) this.parents.set(e.state, e.parents.map((p) => ({ x, y: p })));
      } else if (e.type === "concat") {
        this.last.delete(e.state);
        this.parents.delete(e.state);
      }
    }

    resampled() {
      return this.edges.filter(([, y0, , y1]) => y0 !== y1).length;
    }

    traces() {
      const lines = (segs, name, color, dash) => {
        const x = [], y = [];
        for (const [x0, y0, x1, y1] of segs) x.push(x0, x1, null), y.push(y0, y1, null);
        return { type: "scatter", mode: "lines", x, y, name, hoverinfo: "skip",
          line: { color, width: 1, dash } };
      };
      const scored = this.markers.map((m) => (m.score === null ? NaN : m.score));
      return [
        lines(this.trails, "row continues", "#bbb", "dot"),
        lines(this.edges, "selected from parent", "#d62728", "solid"),
        { type: "scatter", mode: "markers", name: "particle", x: this.markers.map((m) => m.x),
          y: this.markers.map((m) => m.y),
          text: this.markers.map((m) => `${m.score === null ? "not scored" : "score " + m.score.toFixed(3)}\n${m.text}`),
          hovertemplate: "step %{x}, row %{y}<br>%{text}<extra></extra>",
          marker: { size: 11, color: scored, cmin: 0, cmax: 1, colorscale: "Viridis", showscale: true,
            colorbar: { title: { text: "PRM score" } }, line: { color: "#333", width: 1 } } },
      ];
    }
  }

  function render(panel, config) {
    const scaling = config.scaling || { methods: (config.methods || []).map((name) => ({ name, budget: 4 })), scorers: [] };
    const problems = config.problems && config.problems.length ? config.problems : ["Q: 37+48-19=\n"];
    let nextProblem = 1;
    const method = el("select", {});
    for (const m of scaling.methods) method.append(el("option", { value: m.name, text: m.summary ? `${m.name}: ${m.summary}` : m.name }));
    method.value = scaling.methods.some((m) => m.name === "pf") ? "pf" : scaling.methods[0].name;
    const maxBudget = config.limits.max_budget;
    const budget = el("input", { id: "search-budget", type: "number", min: "1", step: "1", value: String(Math.min(4, maxBudget)),
      "aria-describedby": "search-budget-help" });
    const budgetHelp = el("small", { id: "search-budget-help", text: `at most ${maxBudget} on this server` });
    const scorer = el("select", {});
    for (const s of scaling.scorers || []) scorer.append(el("option", { value: s, text: s }));
    const prompt = el("textarea", { rows: "2" });
    prompt.value = problems[0];
    const fresh = el("button", { type: "button", id: "search-new", text: "New problem" });
    const seed = el("input", { type: "number", value: "0", min: "0", step: "1" });
    const temperature = el("input", { type: "number", value: "1", min: "0", max: "2", step: "0.1" });
    const maxTokens = el("input", { type: "number", value: "64", min: "1", max: String(config.limits.max_tokens), step: "1" });
    const run = el("button", { type: "button", id: "search-run", text: "Run" });
    const status = el("p", { id: "search-status", "aria-live": "polite" });
    const plot = el("div", { id: "search-plot", class: "pg-plot", role: "img",
      "aria-label": "particles per step coloured by PRM score, lines from parent to child" });
    const legend = el("p", { class: "pg-stats", text: "Colour: the PRM score of each row at that step (grey: not "
      + "scored then, e.g. a finished row). Red lines: where a selection sent each row (a particle filter's "
      + "resampling, a beam's pruning); dotted: a row going on." });
    const votes = el("div", { id: "search-votes", class: "pg-plot", role: "img", "aria-label": "votes per answer" });
    votes.hidden = true;
    const answer = el("p", { id: "search-answer", "aria-live": "polite" });
    const correct = el("p", { id: "search-correct", "aria-live": "polite" });
    const cost = el("p", { id: "search-cost", "aria-live": "polite" });
    const chosen = el("pre", { id: "search-text", class: "pg-out" });

    panel.append(
      el("div", { class: "pg-row" },
        field("search-method", "Method", method),
        el("div", { class: "pg-field" }, el("label", { for: "search-budget", text: "Budget" }), budget, budgetHelp),
        field("search-scorer", "Scorer", scorer)),
      field("search-prompt", "Problem", prompt),
      fresh,
      el("div", { class: "pg-row" },
        field("search-seed", "Seed", seed),
        field("search-temperature", "Temperature", temperature),
        field("search-max-tokens", "Max tokens", maxTokens)),
      run, status, plot, legend, votes, answer, correct, cost, chosen,
    );

    method.addEventListener("change", () => {
      const m = scaling.methods.find((x) => x.name === method.value);
      if (m) budget.value = String(Math.min(m.budget, maxBudget));
      scorer.disabled = m ? !m.scored : false;
    });
    fresh.addEventListener("click", () => {
      prompt.value = problems[nextProblem % problems.length];
      nextProblem += 1;
    });

    let frame = 0;
    function draw(view) {
      plot.dataset.particles = String(view.particles);
      plot.dataset.resampled = String(view.resampled());
      plot.dataset.markers = String(view.markers.length);
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        P().plotly.react(plot, view.traces(), { title: { text: "Particles per step" }, height: 380, showlegend: true,
          legend: { orientation: "h", x: 0, y: -0.22 },
          xaxis: { title: { text: "step" }, dtick: 1 }, yaxis: { title: { text: "particle row" }, dtick: 1 },
          margin: { t: 40, r: 10, b: 90, l: 50 } }, { displayModeBar: false });
      });
    }

    function drawVotes(res) {
      const counts = new Map();
      for (const c of res.steerable.candidates) {
        const a = c.answer === null ? "(none)" : c.answer;
        counts.set(a, (counts.get(a) || 0) + 1);
      }
      votes.hidden = false;
      P().plotly.react(votes, [{ type: "bar", x: [...counts.keys()], y: [...counts.values()],
        marker: { color: [...counts.keys()].map((a) => (a === res.steerable.answer ? "#2ca02c" : "#888")) } }],
      { title: { text: "Self-consistency: votes per answer" }, height: 280, xaxis: { title: { text: "answer" }, type: "category" },
        yaxis: { title: { text: "votes" }, dtick: 1 }, margin: { t: 40, r: 10, b: 40, l: 50 } }, { displayModeBar: false });
    }

    run.addEventListener("click", async () => {
      P().clearError(panel);
      const view = new RunView();
      for (const n of [answer, correct, cost, chosen, status]) n.textContent = "";
      votes.hidden = true;
      plot.dataset.done = "false";
      P().plotly.purge(plot);
      const m = scaling.methods.find((x) => x.name === method.value);
      const spec = { method: method.value, budget: Number(budget.value) };
      if (m && m.scored && scorer.value) spec.scorer = scorer.value;
      const body = { prompt: prompt.value, seed: Number(seed.value), temperature: Number(temperature.value),
        max_tokens: Number(maxTokens.value), stream: true, scaling: spec };
      run.disabled = true;
      status.textContent = "running...";
      try {
        const res = await P().stream("/v1/completions", body, (event) => {
          view.add(event);
          draw(view);
        });
        const s = res.steerable;
        status.textContent = `${s.method}, budget ${s.budget}: ${view.particles} particles at the last step`;
        answer.textContent = `Answer: ${s.answer === null ? "(none)" : s.answer}`;
        if ("correct" in s) {
          correct.textContent = s.correct ? `Right (expected ${s.expected})` : `Wrong (expected ${s.expected})`;
          correct.className = s.correct ? "right" : "wrong";
        }
        const c = s.cost;
        cost.textContent = `Cost: ${c.generated_tokens} tokens generated, ${c.scorer_calls} PRM calls `
          + `(${c.scorer_tokens} tokens scored), ${c.seconds.toFixed(2)} s`;
        chosen.textContent = res.choices[0].text;
        if (VOTED.has(s.method)) drawVotes(res);
      } catch (e) {
        status.textContent = "";
        P().showError(panel, e.message);
      } finally {
        run.disabled = false;
        plot.dataset.done = "true";
      }
    });
  }

  function register() {
    window.Playground.registerTab({ id: "search", label: "Search", family: "search", render });
  }
  if (window.Playground) register();
  else document.addEventListener("DOMContentLoaded", register);
})();
