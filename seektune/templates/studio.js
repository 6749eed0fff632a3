// The page of `seektune studio` (seektune/studio/app.py): plain JS, no build step, no network beyond this
// server. Every text from runs, recipes, logs and data is set with textContent, never as HTML; the loss chart
// is SVG built with createElementNS from numbers.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "seektune.studioToken";
  const SECTIONS = ["model", "data", "method", "train", "eval"];
  const ACTIVE = ["queued", "running"];
  const state = {runs: [], schema: null, run: null, stream: null, points: [], validateSeq: 0, timer: null,
                 chat: [], resolved: null, pollTimer: null};

  // ------------------------------------------------------------ talking to the server

  function token() { return $("token").value.trim(); }

  const api = window.seektunePageApi($("token"), $("token-field"),
                                    "This studio needs its key: type it in the Key field above and press Enter.");

  function banner(text, kind = "error") {
    const el = $("banner");
    el.textContent = text;
    el.className = "banner " + kind;
    el.hidden = !text;
  }

  function el(tag, text, attrs = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function fmt(value) {
    if (typeof value !== "number") return value === null || value === undefined ? "–" : String(value);
    return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(3);
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  // ------------------------------------------------------------ views

  function show(view) {
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
  }

  async function route() {
    stopStream();
    clearInterval(state.pollTimer);
    const hash = decodeURIComponent(location.hash.slice(1)) || "runs";
    banner("");
    try {
      if (hash.startsWith("run/")) { show("run"); await openRun(hash.slice(4)); }
      else if (hash === "new") { show("new"); await openNew(); }
      else if (hash === "compare") { show("compare"); await openCompare(); }
      else { show("runs"); await loadRuns(); state.pollTimer = setInterval(loadRuns, 2000); }
    } catch (error) { banner(error.message); }
  }

  // ------------------------------------------------------------ runs

  function keyMetric(run) {
    const m = run.metrics || {};
    const name = Object.keys(m)[0];
    return name ? {name, tuned: m[name].tuned, base: m[name].base} : null;
  }

  async function loadRuns() {
    const data = await api("api/runs");
    state.runs = data.runs;
    renderRuns();
  }

  function renderRuns() {
    const filter = $("runs-filter").value.trim().toLowerCase();
    const sort = $("runs-sort").value;
    let runs = state.runs.filter((r) => !filter || [r.name, r.status, r.method, r.objective]
      .some((v) => String(v).toLowerCase().includes(filter)));
    const by = {name: (a, b) => a.name.localeCompare(b.name), status: (a, b) => a.status.localeCompare(b.status),
                metric: (a, b) => ((keyMetric(b) || {}).tuned ?? -1) - ((keyMetric(a) || {}).tuned ?? -1),
                age: (a, b) => (a.age_s ?? 1e12) - (b.age_s ?? 1e12)};
    runs = runs.slice().sort(by[sort]);
    const body = $("runs-body");
    body.replaceChildren();
    for (const run of runs) {
      const row = el("tr", null, {"data-testid": "run-row", "data-name": run.name, "data-status": run.status});
      const name = el("td");
      name.append(el("a", run.name, {href: "#run/" + encodeURIComponent(run.name)}));
      row.append(name, el("td", run.status, {class: "status " + run.status}), el("td", run.objective),
                 el("td", run.method));
      const metric = keyMetric(run);
      row.append(el("td", metric ? `${metric.name} ${fmt(metric.tuned)} vs ${fmt(metric.base)}` : "–"),
                 el("td", age(run.age_s)));
      body.append(row);
    }
    $("runs-empty").hidden = state.runs.length > 0;
  }

  // ------------------------------------------------------------ new run: form, YAML, validation

  async function openNew() {
    if (!state.schema) {
      state.schema = await api("api/schema");
      const examples = await api("api/examples");
      for (const id of examples.examples) $("example").append(el("option", id, {value: id}));
    }
    if (!$("recipe").value.trim()) {
      $("recipe").value = "model: smollm2-135m-instruct\ndata:\n  paths: []\n";
    }
    await validate();
  }

  function resolveRef(node) {
    let current = node;
    for (let i = 0; i < 5 && current; i++) {
      if (current.$ref) { current = state.schema.$defs[current.$ref.split("/").pop()]; continue; }
      const options = (current.anyOf || []).filter((o) => o.type !== "null");
      if (options.length === 1 && (options[0].$ref || options[0].properties)) { current = options[0]; continue; }
      break;
    }
    return current;
  }

  function scalarKind(prop) {
    const options = prop.anyOf ? prop.anyOf.filter((o) => o.type !== "null") : [prop];
    if (options.length !== 1) return null;
    const option = options[0];
    if (option.enum) return {kind: "enum", values: option.enum};
    if (option.const !== undefined) return {kind: "enum", values: [option.const]};
    if (["string", "integer", "number", "boolean"].includes(option.type)) return {kind: option.type};
    return null;
  }

  function renderForm() {
    const form = $("form");
    const resolved = state.resolved || {};
    form.replaceChildren();
    for (const section of SECTIONS) {
      const spec = resolveRef(state.schema.properties[section]);
      if (!spec || !spec.properties) continue;
      const box = el("details", null, {"data-section": section});
      if (section === "train" || section === "model") box.open = true;
      box.append(el("summary", section));
      for (const [key, prop] of Object.entries(spec.properties)) {
        const kind = scalarKind(prop);
        if (!kind) continue;
        const dotted = section + "." + key;
        const value = (resolved[section] || {})[key];
        const label = el("label", null, {class: "field", title: prop.description || ""});
        label.append(el("span", key));
        let input;
        if (kind.kind === "enum") {
          input = el("select");
          for (const v of kind.values) input.append(el("option", v, {value: v}));
          input.value = value ?? "";
        } else if (kind.kind === "boolean") {
          input = el("input", null, {type: "checkbox"});
          input.checked = Boolean(value);
        } else {
          input = el("input", null, {type: kind.kind === "string" ? "text" : "number", spellcheck: "false"});
          if (kind.kind === "number") input.step = "any";
          input.value = value ?? "";
        }
        input.dataset.key = dotted;
        input.dataset.testid = "field-" + dotted;
        input.setAttribute("data-testid", "field-" + dotted);
        input.addEventListener("change", () => setKey(dotted, input.type === "checkbox" ? String(input.checked)
                                                                                        : input.value));
        label.append(input);
        if (prop.description) label.append(el("small", prop.description, {class: "help"}));
        box.append(label);
      }
      form.append(box);
    }
  }

  async function setKey(key, value) {
    const data = await api("api/recipes/set", {method: "POST", body: {recipe: $("recipe").value, set: {[key]: value}}});
    $("recipe").value = data.recipe;
    await validate();
  }

  function runName() { return $("run-name").value.trim() || "run"; }

  async function validate() {
    const seq = ++state.validateSeq;
    $("command").textContent = `seektune run ${runName()}.yaml   (saved as <runs>/.studio/recipes/${runName()}.yaml)`;
    try {
      const data = await api("api/recipes/validate", {method: "POST",
                                                     body: {name: runName(), recipe: $("recipe").value}});
      if (seq !== state.validateSeq) return;
      state.resolved = data.resolved;
      $("recipe-error").hidden = true;
      $("recipe-ok").hidden = false;
      $("launch").disabled = false;
      renderForm();
    } catch (error) {
      if (seq !== state.validateSeq) return;
      $("recipe-error").textContent = error.message;
      $("recipe-error").hidden = false;
      $("recipe-ok").hidden = true;
      $("launch").disabled = true;
      if (!$("form").children.length) renderForm();  // the fields, with the last valid values (or defaults)
    }
  }

  function validateSoon() {
    clearTimeout(state.timer);
    state.timer = setTimeout(validate, 300);
  }

  async function loadExample() {
    const id = $("example").value;
    if (!id) { $("recipe").value = "model: smollm2-135m-instruct\ndata:\n  paths: []\n"; return validate(); }
    const data = await api("api/examples/" + id.split("/").map(encodeURIComponent).join("/"));
    $("recipe").value = data.recipe;
    await validate();
  }

  async function previewPath() {
    const path = $("data-path").value.trim();
    if (!path) return;
    try {
      renderPreview(await api("api/data/preview", {method: "POST", body: {path, recipe: $("recipe").value}}));
    } catch (error) { banner(error.message); }
  }

  async function uploadFile() {
    const file = $("upload").files[0];
    if (!file) return;
    try {
      const content = await file.text();
      const saved = await api("api/uploads", {method: "POST", body: {filename: file.name, content}});
      const preview = await api("api/data/preview", {method: "POST",
                                                     body: {path: saved.path, recipe: $("recipe").value}});
      renderPreview(preview);
    } catch (error) { banner(error.message); }
  }

  function renderPreview(preview) {
    $("preview").hidden = false;
    $("preview").dataset.path = preview.path;
    const formats = Object.entries(preview.formats).map(([k, v]) => `${k} (${v})`).join(", ") || "none";
    $("preview-summary").textContent = `${preview.read} rows read, ${preview.kept} usable, ${preview.rejected} ` +
      `rejected; format detected: ${formats}.`;
    const body = $("preview-rejects-body");
    body.replaceChildren();
    for (const reject of preview.rejects) {
      const row = el("tr", null, {"data-testid": "reject"});
      row.append(el("td", reject.origin), el("td", reject.reason), el("td", reject.detail));
      body.append(row);
    }
    document.querySelector("[data-testid=preview-rejects]").hidden = preview.rejects.length === 0;
    $("preview-rows").textContent = preview.rows.map((r) => JSON.stringify(r.messages || r, null, 1)).join("\n\n");
  }

  async function launch() {
    try {
      const job = await api("api/jobs", {method: "POST", body: {name: runName(), stage: "run",
                                                                recipe: $("recipe").value}});
      location.hash = "#run/" + encodeURIComponent(job.run);
    } catch (error) { banner(error.message); }
  }

  // ------------------------------------------------------------ a run

  async function openRun(name) {
    state.run = name;
    state.followed = null;
    switchTab("overview");
    state.chat = [];
    $("chat-log").replaceChildren();
    $("log").textContent = "";
    state.points = [];
    await refreshRun();
  }

  async function refreshRun() {
    const name = state.run;
    const run = await api("api/runs/" + encodeURIComponent(name));
    if (name !== state.run) return;
    $("run-title").textContent = run.name;
    setStatus(run.status);
    const job = run.job;
    $("run-command").textContent = job ? job.command.join(" ") : "";
    $("cancel").hidden = !(job && ACTIVE.includes(job.status));
    $("cancel").dataset.job = job ? job.id : "";
    const progress = run.progress || {};
    if (!state.stream) {
      state.points = progress.points || [];
      drawProgress(progress.step, progress.max_steps);
      drawLoss();
    }
    renderMetrics(run);
    renderFacts(run);
    renderJobs(run.jobs);
    $("run-recipe").textContent = run.recipe;
    renderExports(run);
    $("report-missing").hidden = run.has_report;
    const report = $("report");
    report.hidden = !run.has_report;
    const src = "api/runs/" + encodeURIComponent(name) + "/report";
    if (run.has_report && report.getAttribute("src") !== src) report.setAttribute("src", src);
    // a running job streams; a finished one replays its log once through the same stream (which then ends)
    if (job && !state.stream && state.followed !== job.id) followJob(job.id);
  }

  function setStatus(status) {
    $("run-status").textContent = status;
    $("run-status").className = "status " + status.replace(/\s/g, "-");
  }

  function renderMetrics(run) {
    const box = $("metrics");
    box.replaceChildren();
    const entries = Object.entries(run.metrics || {});
    if (!entries.length) return;
    const table = el("table", null, {class: "metrics"});
    const head = el("tr");
    head.append(el("th", "metric"), el("th", "base"), el("th", "tuned"));
    table.append(head);
    for (const [name, v] of entries) {
      const row = el("tr", null, {"data-testid": "metric-" + name});
      row.append(el("td", name), el("td", fmt(v.base)), el("td", fmt(v.tuned)));
      table.append(row);
    }
    box.append(table);
  }

  function renderFacts(run) {
    const box = $("facts");
    box.replaceChildren();
    const facts = [];
    if (run.card && run.card.rows !== undefined) facts.push(`data: ${JSON.stringify(run.card.rows)}`);
    if (run.checkpoints.length) facts.push(`checkpoints: ${run.checkpoints.join(", ")}`);
    box.append(el("span", facts.join(" · ")));
    if (run.has_card) {
      box.append(document.createTextNode(" "));
      box.append(el("a", "data card", {href: `api/runs/${encodeURIComponent(run.name)}/card`, target: "_blank",
                                       rel: "noopener", "data-testid": "card-link"}));
    }
  }

  function renderJobs(jobs) {
    const body = $("jobs-body");
    body.replaceChildren();
    $("log").hidden = !jobs.length;
    if (!jobs.length) {
      const row = el("tr");
      row.append(el("td", "None from this studio: the run was made on the command line.", {class: "muted"}));
      body.append(row);
    }
    for (const job of jobs) {
      const row = el("tr", null, {"data-testid": "job", "data-status": job.status});
      row.append(el("td", "#" + job.id), el("td", job.stage), el("td", job.status),
                 el("td", job.note || ""), el("td", job.command.join(" "), {class: "mono small"}));
      body.append(row);
    }
  }

  function renderExports(run) {
    const exports = $("exports");
    exports.replaceChildren();
    for (const [kind, info] of Object.entries(run.exports)) {
      const line = el("div", null, {class: "export-line"});
      const button = el("button", info.done ? `export ${kind} again` : `export ${kind}`,
                        {type: "button", "data-testid": "export-" + kind});
      button.disabled = run.status !== "evaluated" && run.status !== "trained";
      button.addEventListener("click", () => startJob({stage: "export", to: kind}));
      line.append(button);
      if (info.done) {
        line.append(el("span", info.parity ? "parity: " + JSON.stringify(info.parity) : "exported",
                       {class: "small muted", "data-testid": "parity-" + kind}));
      }
      exports.append(line);
    }
    const feedback = $("feedback");
    feedback.replaceChildren();
    if (!run.has_feedback) {
      feedback.append(el("p", `None yet. Serve the run (seektune serve ${run.name}) and ask users to rate answers.`,
                         {class: "muted"}));
    } else {
      feedback.append(el("p", "Recorded: " + JSON.stringify(run.feedback)));
      for (const to of ["sft", "dpo"]) {
        const button = el("button", "export feedback as " + to, {type: "button"});
        button.addEventListener("click", () => startJob({stage: "feedback", to}));
        feedback.append(button);
      }
      const update = el("button", "update the model with it (seektune update)", {type: "button"});
      update.addEventListener("click", () => startJob({stage: "update"}));
      feedback.append(update);
    }
    const review = $("review");
    review.replaceChildren();
    review.append(el("p", run.review ? "Pairs: " + Object.entries(run.review).map(([k, v]) => `${v} ${k}`).join(", ")
                        + `. Review them with: seektune review <runs>/${run.name}`
                        : "This run has no synthesised pairs (seektune synth RECIPE makes them).",
                     {class: run.review ? "" : "muted"}));
  }

  async function startJob(extra) {
    try {
      await api("api/jobs", {method: "POST", body: {name: state.run, ...extra}});
      await refreshRun();
    } catch (error) { banner(error.message); }
  }

  function drawProgress(step, maxSteps) {
    const bar = $("progress");
    if (maxSteps) { bar.max = maxSteps; bar.value = step || 0; }
    $("progress-text").textContent = maxSteps ? `step ${step || 0} of ${maxSteps}` : "";
  }

  function drawLoss() {
    const svg = $("loss-chart");
    const NS = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    let points = state.points.filter((p) => typeof p.loss === "number");
    const every = Math.ceil(points.length / 300);  // a long run: every n-th point, and the last one
    if (every > 1) points = points.filter((p, i) => i % every === 0 || i === points.length - 1);
    $("loss-text").textContent = points.length ? `loss ${fmt(points[0].loss)} at step ${points[0].step} → ` +
      `${fmt(points[points.length - 1].loss)} at step ${points[points.length - 1].step} (${points.length} points)` : "";
    if (!points.length) return;
    const xs = points.map((p) => p.step), ys = points.map((p) => p.loss);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-6);
    const X = (x) => 40 + 550 * (x - x0) / (x1 - x0), Y = (y) => 190 - 170 * (y - y0) / (y1 - y0);
    const axis = document.createElementNS(NS, "path");
    axis.setAttribute("d", "M40 10 V190 H590");
    axis.setAttribute("class", "axis");
    svg.append(axis);
    for (const [y, text] of [[y1, fmt(y1)], [y0, fmt(y0)]]) {
      const label = document.createElementNS(NS, "text");
      label.setAttribute("x", "2");
      label.setAttribute("y", String(Y(y) + 4));
      label.textContent = text;
      svg.append(label);
    }
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", points.map((p) => `${X(p.step).toFixed(1)},${Y(p.loss).toFixed(1)}`).join(" "));
    line.setAttribute("class", "loss");
    svg.append(line);
    for (const p of points) {
      const dot = document.createElementNS(NS, "circle");
      dot.setAttribute("cx", X(p.step).toFixed(1));
      dot.setAttribute("cy", Y(p.loss).toFixed(1));
      dot.setAttribute("r", "2.5");
      dot.setAttribute("data-testid", "loss-point");
      svg.append(dot);
    }
  }

  // server-sent events read with fetch (EventSource cannot send the Authorization header)
  async function followJob(jobId) {
    stopStream();
    const controller = new AbortController();
    state.stream = controller;
    state.followed = jobId;
    state.points = [];
    $("log").textContent = "";
    const headers = token() ? {"Authorization": "Bearer " + token()} : {};
    try {
      const response = await fetch(`api/jobs/${jobId}/events`, {headers, signal: controller.signal});
      if (!response.ok) throw new Error(`events: ${response.status}`);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      while (true) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const kind = (block.match(/^event: (.*)$/m) || [])[1];
          const data = (block.match(/^data: (.*)$/m) || [])[1];
          if (kind && data) onEvent(kind, JSON.parse(data));
        }
      }
    } catch (error) {
      if (error.name !== "AbortError") banner(error.message);
    } finally {
      if (state.stream === controller) {
        state.stream = null;
        if (state.run) refreshRun().catch((e) => banner(e.message));
      }
    }
  }

  function onEvent(kind, data) {
    if (kind === "log") {
      const log = $("log");
      const lines = (log.textContent ? log.textContent.split("\n") : []).concat(data.lines).slice(-400);
      log.textContent = lines.join("\n");
      log.scrollTop = log.scrollHeight;
    } else if (kind === "progress") {
      state.points = state.points.concat(data.points);
      drawProgress(data.step, data.max_steps);
      drawLoss();
    } else if (kind === "status") {
      $("cancel").hidden = !ACTIVE.includes(data.status);
      if (!ACTIVE.includes(data.status)) setStatus(data.status === "succeeded" ? "finishing" : data.status);
      else api("api/runs/" + encodeURIComponent(state.run)).then((run) => setStatus(run.status)).catch(() => {});
    }
  }

  function stopStream() {
    if (state.stream) { state.stream.abort(); state.stream = null; }
  }

  async function cancelJob() {
    try {
      await api(`api/jobs/${$("cancel").dataset.job}/cancel`, {method: "POST", body: {}});
      banner("Cancel sent: the job stops within a few seconds.", "info");
    } catch (error) { banner(error.message); }
  }

  async function sendChat(event) {
    event.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text) return;
    $("chat-input").value = "";
    state.chat.push({role: "user", content: text});
    $("chat-log").append(el("p", text, {class: "user", "data-testid": "chat-question"}));
    const waiting = el("p", "…", {class: "assistant waiting"});
    $("chat-log").append(waiting);
    try {
      const data = await api(`api/runs/${encodeURIComponent(state.run)}/chat`, {method: "POST",
                                                                               body: {messages: state.chat}});
      state.chat.push({role: "assistant", content: data.answer});
      waiting.textContent = data.answer;
      waiting.className = "assistant";
      waiting.setAttribute("data-testid", "chat-answer");
    } catch (error) {
      waiting.remove();
      state.chat.pop();
      banner(error.message);
    }
  }

  function switchTab(name) {
    for (const button of document.querySelectorAll(".tabs button")) {
      button.classList.toggle("active", button.dataset.tab === name);
    }
    for (const body of document.querySelectorAll("[data-tab-body]")) body.hidden = body.dataset.tabBody !== name;
  }

  // ------------------------------------------------------------ compare

  async function openCompare() {
    const data = await api("api/runs");
    const picks = $("compare-picks");
    picks.replaceChildren();
    for (const run of data.runs.filter((r) => r.status === "evaluated")) {
      const label = el("label", null, {class: "pick"});
      const box = el("input", null, {type: "checkbox", value: run.name, "data-testid": "pick-" + run.name});
      label.append(box, document.createTextNode(" " + run.name));
      picks.append(label);
    }
    if (!picks.children.length) picks.append(el("p", "No evaluated runs yet.", {class: "muted"}));
  }

  async function compare() {
    const names = [...document.querySelectorAll("#compare-picks input:checked")].map((b) => b.value);
    if (!names.length) return banner("Pick at least one run.");
    try {
      const data = await api("api/compare?" + names.map((n) => "runs=" + encodeURIComponent(n)).join("&"));
      const head = el("tr");
      for (const h of data.header) head.append(el("th", h));
      $("compare-head").replaceChildren(head);
      $("compare-body").replaceChildren(...data.rows.map((cells) => {
        const row = el("tr", null, {"data-testid": "compare-row"});
        for (const c of cells) row.append(el("td", c));
        return row;
      }));
      $("compare-chart").hidden = !data.chart;
      if (data.chart) $("compare-chart").src = data.chart;
    } catch (error) { banner(error.message); }
  }

  // ------------------------------------------------------------ wiring

  async function useToken() {
    sessionStorage.setItem(TOKEN_KEY, token());
    try { await api("api/session", {method: "POST", body: {}}); } catch (error) { banner(error.message); return; }
    route();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromFragment) { sessionStorage.setItem(TOKEN_KEY, fromFragment); history.replaceState(null, "", "#runs"); }
    $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") useToken(); });
    $("runs-filter").addEventListener("input", renderRuns);
    $("runs-sort").addEventListener("change", renderRuns);
    $("recipe").addEventListener("input", validateSoon);
    $("run-name").addEventListener("input", validateSoon);
    $("example").addEventListener("change", () => loadExample().catch((e) => banner(e.message)));
    $("upload").addEventListener("change", uploadFile);
    $("preview-path").addEventListener("click", previewPath);
    $("use-upload").addEventListener("click", () => setKey("data.paths", JSON.stringify([$("preview").dataset.path])));
    $("launch").addEventListener("click", launch);
    $("cancel").addEventListener("click", cancelJob);
    $("chat-form").addEventListener("submit", sendChat);
    $("compare-go").addEventListener("click", compare);
    for (const button of document.querySelectorAll(".tabs button")) {
      button.addEventListener("click", () => switchTab(button.dataset.tab));
    }
    window.addEventListener("hashchange", route);
    if (token()) api("api/session", {method: "POST", body: {}}).catch(() => {});
    route();
  });
})();
