// The Control tab: one episode of a control method on the served 2-D world, drawn on its map as it runs.
// It calls POST /v1/control/episodes with stream: true, so the server's limits hold for it as for any client.
"use strict";

(function () {
  const ROUTE = "/v1/control/episodes";
  const COLORS = {
    path: "#1f5fbf", candidate: "rgba(90, 90, 90, 0.5)", chosen: "#e8590c", plan: "#7b2cbf",
    obstacle: "rgba(110, 118, 129, 0.75)", goal: "rgba(47, 158, 68, 0.35)", region: "rgba(31, 95, 191, 0.2)",
  };

  const { el, field } = window.Playground; // playground.js runs first (deferred scripts keep their order)

  function circle(x, y, r, fill, line) {
    return { type: "circle", xref: "x", yref: "y", x0: x - r, x1: x + r, y0: y - r, y1: y + r,
             fillcolor: fill, line: { color: line || fill, width: 1 }, layer: "below" };
  }

  // Paths [[x, y], ...] as one line trace with null between them (Plotly breaks the line there).
  function joined(paths) {
    const x = [];
    const y = [];
    paths.forEach((p, i) => {
      if (i) { x.push(null); y.push(null); }
      for (const [a, b] of p) { x.push(a); y.push(b); }
    });
    return { x, y };
  }

  function shapes(map, goal) {
    const [x0, x1, y0, y1] = map.arena;
    const out = [{ type: "rect", xref: "x", yref: "y", x0, x1, y0, y1, line: { color: "#5d6673", width: 2 },
                   layer: "below" }];
    for (const [x, y, r] of map.obstacles) out.push(circle(x, y, r, COLORS.obstacle));
    for (const reg of map.regions || []) out.push(circle(reg.x, reg.y, reg.r, COLORS.region, "#1f5fbf"));
    if (goal) out.push(circle(goal[0], goal[1], map.goal_radius, COLORS.goal, "#2f9e44"));
    return out;
  }

  function annotations(map, goal) {
    const out = (map.regions || []).map((reg) => ({
      x: reg.x, y: reg.y + reg.r, text: reg.name + " (by step " + reg.by + ")", showarrow: false, yshift: 10,
    }));
    if (goal) out.push({ x: goal[0], y: goal[1] + map.goal_radius, text: "goal", showarrow: false, yshift: 10 });
    return out;
  }

  function layout(map, goal) {
    const [x0, x1, y0, y1] = map.arena;
    return {
      margin: { l: 40, r: 10, t: 10, b: 40 }, height: 440, showlegend: true,
      legend: { orientation: "h", y: -0.12 },
      xaxis: { range: [x0 - 0.2, x1 + 0.2], zeroline: false, title: { text: "x" } },
      yaxis: { range: [y0 - 0.2, y1 + 0.2], zeroline: false, scaleanchor: "x", title: { text: "y" } },
      shapes: shapes(map, goal), annotations: annotations(map, goal),
    };
  }

  // The traces, in a fixed order: 0 the path so far, 1 the K candidates (faint), 2 the chosen one (bold),
  // 3 RTI's plan, 4 the start, 5 where the agent is.
  function traces(run) {
    const cand = joined(run.candidates);
    const path = joined([run.path]);
    const chosen = joined(run.chosen ? [run.chosen] : []);
    const plan = joined(run.plan ? [run.plan] : []);
    const start = run.path.length ? run.path[0] : null;
    const here = run.path.length ? run.path[run.path.length - 1] : null;
    return [
      { name: "path", x: path.x, y: path.y, mode: "lines", line: { color: COLORS.path, width: 2.5 } },
      { name: "candidates", x: cand.x, y: cand.y, mode: "lines", line: { color: COLORS.candidate, width: 1.5 } },
      { name: "chosen", x: chosen.x, y: chosen.y, mode: "lines", line: { color: COLORS.chosen, width: 3.5 } },
      { name: "plan (RTI)", x: plan.x, y: plan.y, mode: "lines", line: { color: COLORS.plan, width: 2.5, dash: "dot" } },
      { name: "start", x: start ? [start[0]] : [], y: start ? [start[1]] : [], mode: "markers",
        marker: { color: "#1d2127", size: 8, symbol: "circle-open" } },
      { name: "agent", x: here ? [here[0]] : [], y: here ? [here[1]] : [], mode: "markers",
        marker: { color: COLORS.path, size: 10 } },
    ];
  }

  function render(panel, config) {
    const info = config.control || { methods: [], map: null };
    const limits = config.limits || {};
    const methods = info.methods.length ? info.methods : (config.methods || []).map((name) => ({ name, budget: "" }));

    const form = el("form", { id: "control-form", class: "pg-row", "aria-label": "Run an episode" });
    const method = el("select", { id: "control-method" });
    for (const m of methods) method.append(el("option", { value: m.name }, m.name));
    if (methods.some((m) => m.name === "vgps")) method.value = "vgps";
    const budget = el("input", { id: "control-budget", type: "number", min: "1", step: "1", value: "4",
                                 "aria-describedby": "control-budget-help" });
    if (limits.max_budget) budget.max = String(limits.max_budget);
    const seed = el("input", { id: "control-seed", type: "number", min: "0", step: "1", value: "0" });
    const options = el("input", { id: "control-options", type: "text", placeholder: '{"beta": 1}', size: "16",
                                  spellcheck: "false" });
    const run = el("button", { id: "control-run", type: "submit" }, "Run episode");
    form.append(field("control-method", "Method", method), field("control-budget", "Budget", budget),
                field("control-seed", "Seed", seed), field("control-options", "Options (JSON)", options), run);
    const help = el("p", { id: "control-budget-help", class: "pg-stats" });
    const describe = () => {
      const m = methods.find((x) => x.name === method.value);
      const opts = m && m.options && m.options.length ? "; options: " + m.options.join(", ") : "";
      help.textContent = m ? "Budget for " + m.name + ": " + m.budget + opts + "." : "";
    };
    method.addEventListener("change", describe);
    describe();

    const columns = el("div", { class: "pg-columns" });
    const mapCard = el("div", { class: "pg-card", style: "min-width: 0" });
    mapCard.append(el("h2", {}, "Episode on the map"));
    const mapDiv = el("div", { id: "control-map", role: "img",
                               "aria-label": "The world's map: obstacles, goal, the path and the planned chunks" });
    mapCard.append(mapDiv);
    const side = el("div", { class: "pg-card", style: "min-width: 0" });
    side.append(el("h2", {}, "Result"));
    const summary = el("div", { id: "control-summary", class: "pg-out", "aria-live": "polite" }, "No episode yet.");
    const step = el("p", { id: "control-step", class: "pg-stats", "aria-live": "polite" });
    const nfeDiv = el("div", { id: "control-nfe", role: "img", "aria-label": "NFE of each control step" });
    const replay = el("input", { id: "control-replay", type: "range", min: "0", max: "0", step: "1", value: "0",
                                 disabled: "", "aria-describedby": "control-step" });
    side.append(summary, field("control-replay", "Replay: control step", replay), step,
                el("h3", {}, "NFE per control step"), nfeDiv);
    columns.append(mapCard, side);
    panel.append(form, help, columns);

    const plotly = () => Playground.plotly;
    let map = info.map;
    let goal = null;
    const state = { path: [], candidates: [], chosen: null, plan: null, nfe: [] };
    let running = false;
    const draw = () => {
      if (!map || !plotly() || panel.hidden) return; // a hidden panel has no size: drawn when shown
      Plotly.react(mapDiv, traces(state), layout(map, goal), { displayModeBar: false, responsive: true });
      if (running) return; // the NFE chart is drawn when the episode is over (it cost a third of the drawing)
      Plotly.react(nfeDiv, [{ type: "bar", x: state.nfe.map((_, i) => i + 1), y: state.nfe, name: "NFE",
                              marker: { color: COLORS.path } }],
                   { margin: { l: 40, r: 10, t: 10, b: 35 }, height: 180, xaxis: { title: { text: "control step" } },
                     yaxis: { title: { text: "NFE" }, rangemode: "tozero" } },
                   { displayModeBar: false, responsive: true });
    };
    // Events can come faster than Plotly draws: draw at most once a frame, so reading the stream never waits on it.
    let pending = false;
    const schedule = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        draw();
      });
    };
    panel.addEventListener("playground:show", draw);

    let start = null;
    let history = []; // every env_step event of the episode, for the replay slider

    // The map as it stood after control step k (1-based): the path so far and that step's chunks.
    function show(k) {
      const event = history[k - 1];
      state.path = start ? [start] : [];
      for (const e of history.slice(0, k)) state.path.push(...e.positions);
      state.nfe = history.slice(0, k).map((e) => e.nfe);
      state.candidates = (event && event.candidates) || [];
      const i = event ? event.chosen : undefined;
      state.chosen = i !== undefined && i >= 0 && state.candidates[i] ? state.candidates[i] : null;
      state.plan = (event && event.plan) || null;
      if (!event) {
        step.textContent = "";
        return;
      }
      let text = "Step " + event.step + " (t = " + event.t + "): reward " + event.reward.toFixed(2) +
        ", return " + event.return.toFixed(2) + ", NFE " + event.nfe;
      if (state.candidates.length) {
        const q = event.scores && event.scores[i] !== undefined && event.scores[i] !== null
          ? " (score " + Number(event.scores[i]).toFixed(3) + ")" : "";
        text += "; " + state.candidates.length + " candidates, chose #" + (i + 1) + q;
      }
      if (state.plan) text += "; warm-started plan drawn";
      step.textContent = text + ".";
    }

    function onEvent(event) {
      if (event.type === "reset") {
        map = event.map;
        goal = event.goal;
        start = event.pos;
        history = [];
      } else if (event.type === "env_step") {
        history.push(event);
      }
      show(history.length);
      replay.max = String(history.length);
      replay.value = String(history.length);
      schedule();
    }

    replay.addEventListener("input", () => {
      show(Number(replay.value));
      draw();
    });

    function showSummary(out) {
      const lines = [
        "success: " + (out.success ? "yes" : "no") + " (" + out.outcome + ")",
        "return: " + Number(out.return).toFixed(3),
        "steps: " + out.steps,
        "NFE: " + out.nfe + " (" + Number(out.nfe_per_step).toFixed(2) + " per env step)",
        "seconds: " + out.seconds,
      ];
      if (out.satisfied !== undefined) lines.splice(1, 0, "STL task satisfied: " + (out.satisfied ? "yes" : "no"));
      lines.push(out.method + ", budget " + out.budget + ", seed " + out.seed);
      summary.textContent = lines.join("\n");
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      Playground.clearError(panel);
      let extra = {};
      if (options.value.trim()) {
        try {
          extra = JSON.parse(options.value);
        } catch (e) {
          Playground.showError(panel, "options: not JSON (" + e.message + ")");
          return;
        }
      }
      const body = { method: method.value, budget: Number(budget.value), seed: Number(seed.value), options: extra };
      run.disabled = true;
      replay.disabled = true;
      running = true;
      summary.textContent = "Running…";
      history = [];
      start = null;
      show(0);
      let out = null;
      let failed = null;
      try {
        out = await Playground.stream(ROUTE, body, onEvent);
      } catch (e) {
        failed = e;
      }
      running = false;
      draw(); // the last step, whatever the frame timing, and the NFE chart; then the result
      if (failed) {
        summary.textContent = "No result: the run stopped.";
        Playground.showError(panel, failed.message);
      } else {
        showSummary(out);
      }
      run.disabled = false;
      replay.disabled = history.length === 0;
    });
    draw();
  }

  Playground.registerTab({ id: "control", label: "Control", family: "control", render });
})();
