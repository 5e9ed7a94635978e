// sheaf dashboard: the runs table, one run's live charts, several runs on one chart.
// Everything shown comes from run stores and is data: it enters the document only as text
// (textContent, text nodes), never as markup. uPlot (vendored) draws the charts.
"use strict";
(function () {
  const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#e67700", "#5c940d", "#364fc7", "#a61e4d"];
  const state = {
    refresh: 1000, timer: null, route: "", runs: [], sort: { key: "created", dir: -1 }, filter: "",
    selected: new Set(), compareMetric: "central.accuracy", run: null, clientSort: { key: "accuracy", dir: 1 },
  };
  const charts = {};
  window.sheaf = { charts: charts, state: state, updates: 0 };  // read by the browser tests

  // DOM ------------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
      else if (key === "style") for (const [k, v] of Object.entries(value)) node.style.setProperty(k, v);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const fmt = (v, d = 4) => (isNum(v) ? v.toFixed(d) : "–");
  const fmtEps = (v) => (isNum(v) ? v.toPrecision(3) : "–");
  function fmtTime(s) {
    if (!isNum(s)) return "–";
    if (s < 90) return s.toFixed(1) + " s";
    if (s < 5400) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }
  function setLive(ok) {
    const live = document.getElementById("live");
    live.className = ok ? "on" : "off";
    live.textContent = ok ? "live" : "cannot reach the dashboard";
  }
  function badge(status) { return el("span", { class: "badge " + status, data: { status: status } }, status); }
  function card(key, value, id) { return el("div", { class: "card", id: id }, el("div", { class: "k" }, key), el("div", { class: "v" }, value)); }

  // Sortable tables ------------------------------------------------------------------
  function table(columns, rows, sort, onSort, rowClass) {
    const head = el("tr", {}, columns.map((c) => {
      const cls = ["sortable", sort.key === c.key ? (sort.dir > 0 ? "sorted-asc" : "sorted-desc") : ""].join(" ");
      return el("th", { class: cls, data: { key: c.key }, on: { click: () => onSort(c.key) } }, c.label);
    }));
    const sorted = rows.slice().sort((a, b) => {
      const col = columns.find((c) => c.key === sort.key) || columns[0];
      const x = col.value(a), y = col.value(b);
      const missing = (v) => v === null || v === undefined || (typeof v === "number" && !isFinite(v));
      if (missing(x) && missing(y)) return 0;
      if (missing(x)) return 1;
      if (missing(y)) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
    });
    const body = sorted.map((r) => el("tr", { class: rowClass ? rowClass(r) : null },
      columns.map((c) => el("td", { class: c.cls || (c.num ? "num" : null) }, c.cell ? c.cell(r) : c.value(r)))));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
  }
  function toggleSort(sort, key) { if (sort.key === key) sort.dir = -sort.dir; else { sort.key = key; sort.dir = 1; } }

  // Charts ---------------------------------------------------------------------------
  function chartBox(id, title) {
    return el("div", { class: "chart", id: "chart-" + id }, el("h3", {}, title), el("div", { class: "plot" }));
  }
  function makeChart(id, box, series, data, opts) {
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    const target = box.querySelector(".plot");
    const width = Math.max(300, target.clientWidth || 440);
    const options = Object.assign({
      width: width, height: 220,
      scales: { x: { time: false } },
      axes: [{ label: opts && opts.xLabel ? opts.xLabel : "round" }, { size: 56 }],
      series: [{ label: opts && opts.xLabel ? opts.xLabel : "round" }].concat(series),
      legend: { live: true },
    }, opts && opts.extra ? opts.extra : {});
    charts[id] = new uPlot(options, data, target);
    box.dataset.points = String(data[0].length);
    return charts[id];
  }
  function line(label, i, extra) {
    return Object.assign({ label: label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: false } }, extra || {});
  }
  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) {
      const box = document.getElementById("chart-" + id);
      if (box) chart.setSize({ width: Math.max(300, box.querySelector(".plot").clientWidth), height: 220 });
    }
  });

  // The runs table -------------------------------------------------------------------
  const RUN_COLUMNS = [
    { key: "name", label: "run", value: (r) => r.name, cls: "name", cell: (r) => el("a", { href: "#/run/" + encodeURIComponent(r.name) }, r.name) },
    { key: "dataset", label: "dataset", value: (r) => r.dataset },
    { key: "strategy", label: "strategy", value: (r) => r.strategy },
    { key: "clients", label: "clients", num: true, value: (r) => r.settings.clients },
    { key: "partition", label: "partition", value: (r) => r.settings.partition },
    { key: "privacy", label: "privacy", value: (r) => r.settings.privacy },
    { key: "rounds", label: "rounds", num: true, value: (r) => r.rounds_done, cell: (r) => r.rounds_done + "/" + r.rounds_planned },
    { key: "status", label: "status", value: (r) => r.status, cell: (r) => (r.error ? el("span", { title: r.error }, "unreadable") : badge(r.status)) },
    { key: "central_accuracy", label: "central acc", num: true, value: (r) => r.central_accuracy, cell: (r) => fmt(r.central_accuracy) },
    { key: "worst10", label: "worst 10%", num: true, value: (r) => r.worst10, cell: (r) => fmt(r.worst10) },
    { key: "epsilon", label: "ε", num: true, value: (r) => r.epsilon, cell: (r) => fmtEps(r.epsilon) },
    { key: "wall_seconds", label: "wall", num: true, value: (r) => r.wall_seconds, cell: (r) => fmtTime(r.wall_seconds) },
    { key: "created", label: "started", value: (r) => r.created, cell: (r) => new Date(r.created * 1000).toLocaleString() },
  ];
  const COMPARE = {
    "central.accuracy": ["central accuracy", (r) => (r.central || {}).accuracy ?? (r.monitor || {}).accuracy],
    "central.loss": ["central loss", (r) => (r.central || {}).loss ?? (r.monitor || {}).loss],
    "federated.accuracy.p10": ["clients' worst 10% accuracy", (r) => ((r.federated || {}).accuracy || {}).p10],
    "federated.accuracy.mean": ["clients' mean accuracy", (r) => ((r.federated || {}).accuracy || {}).mean],
    "privacy.epsilon": ["ε spent", (r) => (r.privacy || {}).epsilon],
    "fit.train_loss": ["clients' training loss", (r) => (r.fit || {}).train_loss],
  };

  function renderRunsTable() {
    const holder = document.getElementById("runs");
    if (!holder) return;
    const needle = state.filter.toLowerCase();
    const shown = state.runs.filter((r) => !needle || [r.name, r.dataset, r.strategy, r.status, r.settings.privacy, r.settings.partition]
      .some((v) => String(v || "").toLowerCase().includes(needle)));
    const columns = [{ key: "pick", label: "compare", value: (r) => (state.selected.has(r.name) ? 0 : 1), cell: (r) => el("input", {
      type: "checkbox", "aria-label": "compare " + r.name, data: { run: r.name },
      on: { change: (e) => { if (e.target.checked) state.selected.add(r.name); else state.selected.delete(r.name); renderCompare(); } },
    }) }].concat(RUN_COLUMNS);
    const tableNode = table(columns, shown, state.sort, (key) => { toggleSort(state.sort, key); renderRunsTable(); });
    tableNode.id = "runs-table";
    tableNode.querySelectorAll("input[type=checkbox]").forEach((box) => { box.checked = state.selected.has(box.dataset.run); });
    document.getElementById("runs-count").textContent = state.runs.length + " run(s) in this folder, " + shown.length + " shown; tick runs to compare them.";
    holder.replaceChildren(tableNode);
  }

  function renderRuns() {
    document.getElementById("crumb").textContent = "runs";
    const filter = el("input", { type: "search", id: "filter", placeholder: "filter runs (name, dataset, strategy, status…)", value: state.filter,
      on: { input: (e) => { state.filter = e.target.value; renderRunsTable(); } } });
    const metric = el("select", { id: "compare-metric", on: { change: (e) => { state.compareMetric = e.target.value; renderCompare(); } } },
      Object.entries(COMPARE).map(([k, [label]]) => { const o = el("option", { value: k }, label); if (k === state.compareMetric) o.selected = true; return o; }));
    document.getElementById("main").replaceChildren(
      el("h1", {}, "Runs"),
      el("p", { class: "muted", id: "runs-count" }),
      el("div", { class: "toolbar" }, filter),
      el("div", { class: "scroll", id: "runs" }),
      el("h2", {}, "Compare"),
      el("div", { class: "toolbar" }, "metric ", metric),
      el("div", { id: "compare" }),
    );
    renderRunsTable();
    renderCompare();
  }

  const compareCache = {};
  async function renderCompare() {
    const holder = document.getElementById("compare");
    if (!holder) return;
    const names = [...state.selected];
    if (!names.length) { holder.replaceChildren(el("p", { class: "muted" }, "No runs ticked.")); if (charts.compare) { charts.compare.destroy(); delete charts.compare; } return; }
    for (const name of names) {
      const known = compareCache[name];
      const summary = state.runs.find((r) => r.name === name);
      if (!known || (summary && summary.rounds_done !== known.rounds.length) || (summary && summary.status === "running")) {
        try { compareCache[name] = await getJSON("api/run?name=" + encodeURIComponent(name)); } catch (e) { /* gone */ }
      }
    }
    const [label, pick] = COMPARE[state.compareMetric];
    const tables = names.filter((n) => compareCache[n]).map((n) => {
      const rows = compareCache[n].rounds;
      return [rows.map((r) => r.round), rows.map((r) => (isNum(pick(r)) ? pick(r) : null))];
    });
    if (!tables.length) return;
    const data = uPlot.join(tables);
    const box = chartBox("compare", label + " by round");
    holder.replaceChildren(box);
    makeChart("compare", box, names.filter((n) => compareCache[n]).map((n, i) => line(n, i)), data);
  }

  // One run --------------------------------------------------------------------------
  function series(rounds, pick) { return rounds.map((r) => { const v = pick(r); return isNum(v) ? v : null; }); }
  function fed(r, metric, stat) { return ((r.federated || {})[metric] || {})[stat]; }

  function ownMetrics(rounds) {
    const builtIn = new Set(["loss", "accuracy", "train_loss", "update_norm", "update_norm_median", "personalized_accuracy", "personalized_loss"]);
    const names = new Set();
    for (const r of rounds) {
      for (const section of ["central", "monitor", "fit"]) for (const k of Object.keys(r[section] || {})) if (!builtIn.has(k)) names.add(section + ":" + k);
      for (const k of Object.keys(r.federated || {})) if (!builtIn.has(k)) names.add("federated:" + k);
    }
    return [...names].sort();
  }

  function drawRunCharts(run) {
    const rounds = run.rounds;
    const x = rounds.map((r) => r.round);
    const grid = document.getElementById("charts");
    grid.replaceChildren();
    const add = (id, title) => { const box = chartBox(id, title); grid.appendChild(box); return box; };
    const monitored = rounds.some((r) => Object.keys(r.monitor || {}).length);
    const accSeries = [line("central", 0)];
    const accData = [x, series(rounds, (r) => (r.central || {}).accuracy)];
    if (monitored) { accSeries.push(line("central (monitor, " + run.monitor_rows + " rows)", 6, { dash: [6, 4] })); accData.push(series(rounds, (r) => (r.monitor || {}).accuracy)); }
    const hasFed = rounds.some((r) => (r.federated || {}).accuracy);
    const extra = {};
    if (hasFed) {
      accSeries.push(line("clients' mean", 1), line("clients' worst 10%", 4), line("clients' min", 5, { width: 1 }), line("clients' max", 5, { width: 1 }));
      accData.push(series(rounds, (r) => fed(r, "accuracy", "mean")), series(rounds, (r) => fed(r, "accuracy", "p10")),
        series(rounds, (r) => fed(r, "accuracy", "min")), series(rounds, (r) => fed(r, "accuracy", "max")));
      const maxIdx = accSeries.length, minIdx = accSeries.length - 1;
      extra.bands = [{ series: [maxIdx, minIdx], fill: "rgba(16,152,173,0.12)" }];
    }
    makeChart("accuracy", add("accuracy", "accuracy"), accSeries, accData, { extra: extra });

    const lossSeries = [line("central", 0)], lossData = [x, series(rounds, (r) => (r.central || {}).loss)];
    if (monitored) { lossSeries.push(line("central (monitor)", 6, { dash: [6, 4] })); lossData.push(series(rounds, (r) => (r.monitor || {}).loss)); }
    lossSeries.push(line("clients' training loss", 2)); lossData.push(series(rounds, (r) => (r.fit || {}).train_loss));
    makeChart("loss", add("loss", "loss"), lossSeries, lossData);

    if (hasFed) makeChart("jain", add("jain", "Jain's index of clients' accuracy (1: all equal)"), [line("Jain's index", 3)], [x, series(rounds, (r) => fed(r, "accuracy", "jain"))]);
    if (run.private) {
      const eps = series(rounds, (r) => (r.privacy || {}).epsilon);
      makeChart("epsilon", add("epsilon", "privacy spent: ε by round"), [line("ε", 3)], [x, eps]);
      const pairs = rounds.map((r) => [(r.privacy || {}).epsilon, (r.central || {}).accuracy ?? (r.monitor || {}).accuracy])
        .filter(([e, a]) => isNum(e) && isNum(a)).sort((p, q) => p[0] - q[0]);
      makeChart("acc_vs_eps", add("acc_vs_eps", "central accuracy against ε"), [line("central accuracy", 0, { points: { show: true, size: 4 } })],
        [pairs.map((p) => p[0]), pairs.map((p) => p[1])], { xLabel: "ε" });
    }
    makeChart("seconds", add("seconds", "seconds per round"), [line("seconds", 7)], [x, series(rounds, (r) => r.seconds)]);
    if (rounds.some((r) => Object.keys(r.traffic || {}).length)) {
      const kib = (key) => series(rounds, (r) => (isNum((r.traffic || {})[key]) ? r.traffic[key] / 1024 : null));
      makeChart("bytes", add("bytes", "KiB per round (training: sent to clients, sent by clients)"),
        [line("sent to clients", 1), line("sent by clients", 2)], [x, kib("download_bytes"), kib("upload_bytes")]);
    }
    makeChart("dropouts", add("dropouts", "dropouts per round (training)"), [line("failed", 4, { paths: uPlot.paths.bars({ size: [0.6, 40] }), fill: "rgba(201,42,42,0.35)" })],
      [x, series(rounds, (r) => r.failed)], { extra: { scales: { x: { time: false }, y: { range: (u, lo, hi) => [0, Math.max(1, hi)] } } } });
    for (const [i, key] of ownMetrics(rounds).entries()) {
      const [section, name] = [key.slice(0, key.indexOf(":")), key.slice(key.indexOf(":") + 1)];
      const id = "own-" + i;
      const addOwn = (cid, title) => { const box = add(cid, title); box.dataset.metric = key; return box; };
      if (section === "federated") {
        makeChart(id, addOwn(id, "clients' " + name), [line("mean", 1), line("worst 10%", 4)],
          [x, series(rounds, (r) => fed(r, name, "mean")), series(rounds, (r) => fed(r, name, "p10"))]);
      } else {
        makeChart(id, addOwn(id, section + " " + name), [line(name, i + 2)], [x, series(rounds, (r) => (r[section] || {})[name])]);
      }
    }
  }

  function clientTable(run) {
    const holder = document.getElementById("clients");
    const clients = run.clients || [];
    if (!clients.length) { holder.replaceChildren(el("p", { class: "muted" }, "No clients recorded yet.")); return; }
    const metricNames = [...new Set(clients.flatMap((c) => Object.keys(c.metrics || {})))].sort((a, b) => (a === "accuracy" ? -1 : b === "accuracy" ? 1 : a < b ? -1 : 1));
    const labelCell = (c) => {
      const counts = c.labels || {};
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      if (!total) return "–";
      const bar = el("div", { class: "labels", title: Object.entries(counts).map(([k, v]) => k + ": " + v).join(", ") },
        Object.entries(counts).map(([k, v], i) => el("span", { style: { width: (100 * v / total) + "%", background: COLORS[i % COLORS.length] } })));
      const text = Object.entries(counts).filter(([, v]) => v > 0).map(([k, v]) => k + ": " + v).join(" · ");
      return el("div", {}, bar, el("div", { class: "muted" }, text));
    };
    const columns = [
      { key: "id", label: "id", num: true, value: (c) => c.id },
      { key: "name", label: "client", value: (c) => c.name, cls: "name" },
      { key: "train", label: "train rows", num: true, value: (c) => c.train },
      { key: "test", label: "test rows", num: true, value: (c) => c.test },
      { key: "labels", label: "labels (train + test)", value: (c) => Object.values(c.labels || {}).filter((v) => v > 0).length, cell: labelCell },
      { key: "trained_on", label: "trained on (last round)", num: true, value: (c) => c.trained_on },
    ].concat(metricNames.map((m) => ({ key: m, label: m, num: true, value: (c) => (c.metrics || {})[m], cell: (c) => fmt((c.metrics || {})[m]) })));
    if (!columns.some((c) => c.key === state.clientSort.key)) state.clientSort = { key: "id", dir: 1 };
    const accs = clients.map((c) => (c.metrics || {}).accuracy).filter(isNum).sort((a, b) => a - b);
    const cut = accs.length ? accs[Math.max(0, Math.ceil(0.1 * accs.length) - 1)] : null;
    const node = table(columns, clients, state.clientSort, (key) => { toggleSort(state.clientSort, key); clientTable(run); },
      (c) => (isNum(cut) && isNum((c.metrics || {}).accuracy) && c.metrics.accuracy <= cut ? "worst" : null));
    node.id = "clients-table";
    const note = run.clients_round ? "Last federated evaluation: round " + run.clients_round + "; the worst 10% by accuracy are shaded."
      : (run.private ? "A differentially private run evaluates nothing on the clients (their raw test figures would leave them outside the mechanism)." : "No federated evaluation yet.");
    holder.replaceChildren(el("p", { class: "muted" }, note), el("div", { class: "scroll" }, node));
  }

  function dropoutTables(run) {
    const holder = document.getElementById("dropouts");
    if (!run.dropout_count) { holder.replaceChildren(el("p", { class: "muted" }, "No dropouts.")); return; }
    const reasons = table([
      { key: "count", label: "dropouts", num: true, value: (d) => d.count },
      { key: "phase", label: "phase", value: (d) => d.phase },
      { key: "reason", label: "reason", value: (d) => d.reason, cls: "reason" },
    ], run.dropout_reasons, { key: "count", dir: -1 }, () => {});
    reasons.id = "dropout-reasons";
    const recent = table([
      { key: "round", label: "round", num: true, value: (d) => d.round },
      { key: "name", label: "client", value: (d) => d.name + " (" + d.client + ")" },
      { key: "phase", label: "phase", value: (d) => d.phase },
      { key: "reason", label: "reason", value: (d) => d.reason, cls: "reason" },
    ], run.dropouts.slice().reverse(), { key: "round", dir: -1 }, () => {});
    recent.id = "dropouts-table";
    holder.replaceChildren(el("p", { class: "muted" }, run.dropout_count + " dropout(s) in all; by reason:"), reasons,
      el("p", { class: "muted" }, "latest:"), el("div", { class: "scroll" }, recent));
  }

  function runHeader(run) {
    const s = run.summary;
    const last = run.rounds[run.rounds.length - 1] || {};
    const fedAcc = ((last.federated || {}).accuracy) || {};
    const lastFed = [...run.rounds].reverse().find((r) => (r.federated || {}).accuracy) || {};
    const fa = (lastFed.federated || {}).accuracy || fedAcc;
    const cards = [
      card("rounds", s.rounds_done + " / " + s.rounds_planned, "card-rounds"),
      card("central accuracy" + (isNum(s.central_accuracy) ? "" : " (monitor)"), fmt(isNum(s.central_accuracy) ? s.central_accuracy : (last.monitor || {}).accuracy), "card-central"),
    ];
    if (!run.private) cards.push(card("clients' worst 10%", fmt(fa.p10), "card-worst"), card("Jain's index", fmt(fa.jain, 3), "card-jain"));
    if (run.private) cards.push(card("ε spent (δ " + ((last.privacy || {}).delta ?? "–") + ")", fmtEps(s.epsilon), "card-epsilon"));
    cards.push(card("wall time", fmtTime(s.wall_seconds), "card-wall"));
    const settings = s.settings || {};
    const parts = [s.dataset, s.strategy, settings.clients + " clients (" + settings.partition + ")", "backend " + settings.backend, "privacy " + settings.privacy, "seed " + settings.seed];
    const head = document.getElementById("run-head");
    head.replaceChildren(...[
      el("h1", {}, run.name, " ", badge(s.status)),
      el("p", { class: "muted" }, parts.join(" · ")),
      run.warning ? el("div", { class: "warning", id: "warning" }, run.warning) : null,
      el("div", { class: "cards" }, cards),
    ].filter(Boolean));
  }

  function renderRunSkeleton(name) {
    document.getElementById("crumb").textContent = "run";
    const copy = el("button", { id: "copy-config", on: { click: () => navigator.clipboard && navigator.clipboard.writeText(document.getElementById("config").textContent) } }, "copy");
    document.getElementById("main").replaceChildren(
      el("div", { id: "run-head" }, el("h1", {}, name)),
      el("div", { class: "grid", id: "charts" }),
      el("h2", {}, "Clients"), el("div", { id: "clients" }),
      el("h2", {}, "Dropouts"), el("div", { id: "dropouts" }),
      el("h2", {}, "Config ", copy), el("p", { class: "muted" }, "Paste into a file and run it again with 'sheaf simulate FILE'."),
      el("pre", { class: "config", id: "config" }),
    );
  }

  function mergeRun(update) {
    const run = state.run;
    if (!run || run.name !== update.name) { state.run = Object.assign({ clients: [] }, update); return true; }
    const known = new Set(run.rounds.map((r) => r.round));
    const fresh = update.rounds.filter((r) => !known.has(r.round));
    Object.assign(run, update, { rounds: run.rounds.concat(fresh), clients: update.clients || run.clients });
    return fresh.length > 0 || !!update.clients;
  }

  async function pollRun(name) {
    const have = state.run && state.run.name === name ? state.run : null;
    const since = have && have.rounds.length ? have.rounds[have.rounds.length - 1].round : 0;
    const clientsRound = have ? have.clients_round : -1;
    const update = await getJSON("api/run?name=" + encodeURIComponent(name) + "&since=" + since + "&clients_round=" + clientsRound);
    const first = !have;
    const changed = mergeRun(update);
    const run = state.run;
    runHeader(run);
    if (first || changed) { drawRunCharts(run); window.sheaf.updates += 1; }
    if (first || update.clients) clientTable(run);
    dropoutTables(run);
    const config = document.getElementById("config");
    if (config.textContent !== run.config_toml) config.textContent = run.config_toml;
    document.getElementById("main").dataset.round = String(since === 0 && !run.rounds.length ? 0 : run.rounds[run.rounds.length - 1].round);
  }

  let lastRuns = "";
  async function pollRuns() {
    const runs = await getJSON("api/runs");
    const text = JSON.stringify(runs);
    if (text === lastRuns && document.getElementById("runs-table")) return;
    lastRuns = text;
    state.runs = runs;
    if (!document.getElementById("runs")) renderRuns(); else { renderRunsTable(); if (state.selected.size) renderCompare(); }
    window.sheaf.updates += 1;
  }

  // Routing and the refresh loop -------------------------------------------------------
  function route() { const h = location.hash || "#/"; return h.startsWith("#/run/") ? decodeURIComponent(h.slice(6)) : null; }
  async function tick() {
    const name = route();
    try {
      if (name !== null) await pollRun(name); else await pollRuns();
      setLive(true);
    } catch (error) {
      setLive(false);
      if (name !== null && !state.run) document.getElementById("main").replaceChildren(el("p", { class: "warning" }, String(error.message || error)));
    }
  }
  function schedule() { clearTimeout(state.timer); state.timer = setTimeout(async () => { await tick(); schedule(); }, state.refresh); }
  async function show() {
    const name = route();
    for (const id of Object.keys(charts)) { charts[id].destroy(); delete charts[id]; }
    state.run = null;
    lastRuns = "";
    if (name !== null) renderRunSkeleton(name); else document.getElementById("main").replaceChildren();
    await tick();
    schedule();
  }
  window.addEventListener("hashchange", show);
  getJSON("api/settings").then((s) => { state.refresh = Math.max(200, 1000 * s.refresh); }).catch(() => {}).finally(show);
})();
