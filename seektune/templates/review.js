// The review page of `seektune review RUN` (seektune/synth/review_app.py): plain JS, no build step, no network
// beyond this server. Every text from documents, the teacher and reviewers is set with textContent or as a
// Text node, never as HTML; the supporting spans of a chunk are <mark> elements built around Text nodes.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const REVIEWER_KEY = "seektune.reviewer";
  const TOKEN_KEY = "seektune.reviewToken";
  const STATUS_LABELS = {pending: "pending", accepted: "accepted", edited: "edited", rejected: "rejected"};

  const state = {
    items: [],        // the current filter's pairs (summaries), in generation order
    index: -1,        // which of them is shown
    pair: null,       // the shown pair, in full
    mode: "view",     // view | edit | reject
    then: null,       // an action waiting for the reviewer's name
    loadSeq: 0,       // the newest pair request: an older answer arriving late is dropped
    busy: false,
  };

  // ------------------------------------------------------------ talking to the server

  function token() { return $("token").value.trim(); }

  const api = window.seektunePageApi($("token"), $("token-field"),
                                    "This review page needs its token: type it in the Token field above and press "
                                    + "Enter.");

  function pairPath(id) { return "api/pairs/" + encodeURIComponent(id); }

  function filters() {
    const params = new URLSearchParams();
    for (const name of ["status", "document", "warning"]) {
      const value = $("filter-" + name).value;
      if (value) params.set(name, value);
    }
    return params;
  }

  // ------------------------------------------------------------ messages

  let bannerTimer = null;
  function banner(text, kind = "info", sticky = false) {
    const el = $("banner");
    el.textContent = text;
    el.className = "banner " + kind;
    el.hidden = false;
    clearTimeout(bannerTimer);
    if (!sticky) bannerTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }
  function clearBanner() { $("banner").hidden = true; }

  // ------------------------------------------------------------ the list, counts and filters

  function fillSelect(select, values) {
    const chosen = select.value;
    const keep = select.options[0];
    select.replaceChildren(keep);
    for (const value of values) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = value;
      select.append(option);
    }
    select.value = values.includes(chosen) ? chosen : "";
  }

  function renderCounts(counts, total) {
    for (const status of Object.keys(STATUS_LABELS)) $("count-" + status).textContent = String(counts[status] || 0);
    const done = (counts.accepted || 0) + (counts.edited || 0) + (counts.rejected || 0);
    const percent = total ? Math.round((100 * done) / total) : 0;
    for (const status of ["accepted", "edited", "rejected"]) {
      $("seg-" + status).style.width = total ? `${(100 * (counts[status] || 0)) / total}%` : "0";  // CSSOM: CSP-safe
    }
    $("progress").setAttribute("aria-valuenow", String(percent));
    $("progress-text").textContent = `${done} of ${total} reviewed (${percent}%)`;
  }

  function renderQueue() {
    const list = $("queue");
    list.replaceChildren();
    state.items.forEach((item, index) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "queue-item " + item.status;
      button.dataset.status = item.status;
      button.dataset.id = item.id;
      button.dataset.testid = "queue-item";
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.title = item.status;
      const text = document.createElement("span");
      text.className = "q";
      text.textContent = item.question;
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = item.origin + (item.warnings.length ? "  ⚠ " + item.warnings.length : "");
      button.append(dot, text, where);
      button.addEventListener("click", () => { if (state.mode === "view") show(index); });
      li.append(button);
      list.append(li);
    });
    markCurrent();
  }

  function markCurrent() {
    const buttons = $("queue").querySelectorAll("button");
    buttons.forEach((button, index) => {
      if (index === state.index) {
        button.setAttribute("aria-current", "true");
        button.scrollIntoView({block: "nearest"});
      } else {
        button.removeAttribute("aria-current");
      }
    });
  }

  async function loadList() {
    const query = filters().toString();
    const data = await api("api/pairs" + (query ? "?" + query : ""));
    state.items = data.pairs;
    fillSelect($("filter-document"), data.documents);
    fillSelect($("filter-warning"), data.warnings);
    renderCounts(data.counts, data.total);
    $("filter-count").textContent = query ? `${data.pairs.length} of ${data.total} pairs match` : "";
    renderQueue();
    return data;
  }

  // ------------------------------------------------------------ one pair

  function appendSpans(el, text, spans) {
    // Python's spans count code points; Array.from(text) does too (a JS string index counts UTF-16 units)
    const chars = Array.from(text);
    const ranges = (spans || [])
      .map(([start, end]) => [Math.max(0, Math.min(start, chars.length)), Math.max(0, Math.min(end, chars.length))])
      .filter(([start, end]) => end > start)
      .sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const range of ranges) {
      const last = merged[merged.length - 1];
      if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
      else merged.push(range.slice());
    }
    el.replaceChildren();
    let at = 0;
    for (const [start, end] of merged) {
      if (start > at) el.append(document.createTextNode(chars.slice(at, start).join("")));
      const mark = document.createElement("mark");
      mark.textContent = chars.slice(start, end).join("");
      el.append(mark);
      at = end;
    }
    if (at < chars.length) el.append(document.createTextNode(chars.slice(at).join("")));
    return merged.length;
  }

  function chip(text, className) {
    const span = document.createElement("span");
    span.className = "chip " + className;
    span.textContent = text;
    return span;
  }

  function finalQuestion(pair) { return pair.edited_question ?? pair.question; }
  function finalAnswer(pair) { return pair.edited_answer ?? pair.answer; }

  function renderPair() {
    const pair = state.pair;
    const empty = !pair;
    $("pair").hidden = empty;
    $("source").hidden = empty;
    $("empty").hidden = !empty;
    if (empty) return;
    $("pair").dataset.id = pair.id;
    $("pair").dataset.status = pair.status;
    $("pair-place").textContent = `Pair ${state.index + 1} of ${state.items.length}` +
      ($("filter-status").value || $("filter-document").value || $("filter-warning").value ? " (filtered)" : "");
    const badge = $("pair-status");
    badge.textContent = STATUS_LABELS[pair.status] || pair.status;
    badge.className = "badge " + pair.status;
    $("pair-document").textContent = pair.document;
    $("pair-origin").textContent = pair.origin;
    $("pair-kind").textContent = pair.kind;
    $("pair-warnings").replaceChildren(...pair.warnings.map((w) => chip("⚠ " + w, "warn")));

    $("question").textContent = finalQuestion(pair);
    $("answer").textContent = finalAnswer(pair);
    const edited = pair.status === "edited";
    $("original").hidden = !edited;
    $("original-question").textContent = pair.question;
    $("original-answer").textContent = pair.answer;
    const facts = pair.facts || [];
    $("facts-box").hidden = facts.length === 0;
    const answerText = finalAnswer(pair).toLowerCase();
    $("facts").replaceChildren(...facts.map((fact) => {
      const li = document.createElement("li");
      li.textContent = fact;
      if (edited && !answerText.includes(fact.toLowerCase())) {  // training_rows drops it the same way
        li.className = "dropped";
        li.title = "Not in the edited answer: left out of training.";
      }
      return li;
    }));
    $("reasoning-box").hidden = !pair.reasoning;
    $("reasoning").textContent = pair.reasoning || "";

    const decision = $("decision");
    decision.hidden = pair.status === "pending";
    if (pair.status !== "pending") {
      const when = pair.decided_at ? " on " + pair.decided_at.replace("T", " ").replace("+00:00", " UTC") : "";
      decision.textContent = `${STATUS_LABELS[pair.status]} by ${pair.reviewer || "?"}${when}` +
        (pair.status === "rejected" && pair.reason ? ` — reason: ${pair.reason}` : "");
      decision.className = "decision small " + pair.status;
    }

    $("source-label").textContent = pair.origin;
    const marks = appendSpans($("chunk"), pair.chunk, pair.support);
    $("support-note").textContent = marks ? "Highlighted: the text the gate found supporting the answer."
                                          : "No supporting span was found in this chunk.";
    const first = $("chunk").querySelector("mark");
    if (first) first.scrollIntoView({block: "nearest"});
    $("btn-prev").disabled = state.index <= 0;
    $("btn-next").disabled = state.index >= state.items.length - 1;
    $("btn-undo").disabled = pair.status === "pending";
    markCurrent();
  }

  function renderEmpty(text) {
    state.pair = null;
    state.index = -1;
    $("empty-text").textContent = text;
    renderPair();
  }

  async function show(index) {
    if (index < 0 || index >= state.items.length) return;
    state.index = index;
    const seq = ++state.loadSeq;
    const pair = await api(pairPath(state.items[index].id));
    if (seq !== state.loadSeq) return;  // the reviewer has moved on
    state.pair = pair;
    setMode("view");
    renderPair();
  }

  async function showId(id) {
    const index = state.items.findIndex((item) => item.id === id);
    if (index >= 0) await show(index);
    else if (state.items.length) await show(0);
    else renderEmpty("No pairs match these filters.");
  }

  async function showNextPending(after) {
    const pending = state.items.map((item, index) => [item, index]).filter(([item]) => item.status === "pending");
    if (!state.items.length) {
      renderEmpty(pendingCount() ? "No pairs match these filters." : "Every pair is reviewed. Thank you!");
      return;
    }
    if (!pending.length) {
      await showId(after ? after.id : state.items[0].id);
      banner(pendingCount() ? "Every pair in this view is reviewed; change the filters for the rest."
                            : "Every pair is reviewed. Thank you!", "ok", true);
      return;
    }
    const later = after ? pending.find(([item]) => item.position > after.position) : null;
    await show((later || pending[0])[1]);
  }

  function pendingCount() { return Number($("count-pending").textContent) || 0; }

  // ------------------------------------------------------------ modes: view, edit, reject

  function setMode(mode) {
    state.mode = mode;
    const editing = mode === "edit";
    $("question").hidden = editing;
    $("answer").hidden = editing;
    $("question-edit").hidden = !editing;
    $("answer-edit").hidden = !editing;
    $("actions").hidden = editing;
    $("edit-actions").hidden = !editing;
    $("reject-form").hidden = mode !== "reject";
    document.body.dataset.mode = mode;
  }

  function startEdit() {
    if (!state.pair) return;
    $("question-edit").value = finalQuestion(state.pair);
    $("answer-edit").value = finalAnswer(state.pair);
    setMode("edit");
    const answer = $("answer-edit");
    answer.focus();
    answer.setSelectionRange(answer.value.length, answer.value.length);
  }

  function startReject() {
    if (!state.pair) return;
    $("reason").value = state.pair.status === "rejected" ? state.pair.reason || "" : "";
    setMode("reject");
    $("reason").focus();
  }

  function cancel() {
    setMode("view");
    document.activeElement && document.activeElement.blur();
  }

  // ------------------------------------------------------------ decisions

  function reviewer() { return $("reviewer").value.trim(); }

  async function decide(status, extra = {}) {
    const pair = state.pair;
    if (!pair || state.busy) return;
    if (!reviewer()) {
      state.then = () => decide(status, extra);
      banner("Who is reviewing? Type your name in the Reviewer field and press Enter.", "warn", true);
      $("reviewer").focus();
      return;
    }
    if (status === "pending" && pair.status === "pending") {
      banner("This pair is already pending.");
      return;
    }
    state.busy = true;
    try {
      const updated = await api(pairPath(pair.id) + "/decision", {method: "POST", body: {
        status, reviewer: reviewer(), version: pair.version, ...extra}});
      setMode("view");
      document.activeElement && document.activeElement.blur();
      banner(updated.status === "pending" ? "Undone: the pair is pending again."
                                          : `Pair ${updated.status}.`, "ok");
      await loadList();
      if (status === "pending") await showId(updated.id);
      else await showNextPending(updated);
    } catch (error) {
      if (error.status === 409) {
        setMode("view");
        banner("This pair changed in another tab — reloaded.", "warn", true);
        await loadList();
        await showId(pair.id);
      } else {
        banner(error.message, "error", true);
      }
    } finally {
      state.busy = false;
    }
  }

  function saveEdit() {
    decide("edited", {question: $("question-edit").value, answer: $("answer-edit").value});
  }

  function saveReject() {
    const reason = $("reason").value.trim();
    if (!reason) {
      banner("A rejection needs a reason: type it, then press Enter.", "warn");
      $("reason").focus();
      return;
    }
    decide("rejected", {reason});
  }

  // ------------------------------------------------------------ keyboard

  const typing = (target) => target instanceof Element &&
    target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']") !== null;

  const SHORTCUTS = {
    a: () => decide("accepted"),
    e: startEdit,
    r: startReject,
    u: () => decide("pending"),
    j: () => show(state.index + 1),
    k: () => show(state.index - 1),
    ArrowDown: () => show(state.index + 1),
    ArrowRight: () => show(state.index + 1),
    ArrowUp: () => show(state.index - 1),
    ArrowLeft: () => show(state.index - 1),
  };

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "Escape" && state.mode !== "view") { event.preventDefault(); cancel(); return; }
    const action = SHORTCUTS[event.key];
    if (!action || state.mode !== "view") return;
    event.preventDefault();  // also keeps the key's letter out of a field the action focuses
    Promise.resolve(action()).catch((error) => banner(error.message, "error", true));
  });

  for (const id of ["question-edit", "answer-edit"]) {
    $(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); saveEdit(); }
      else if (event.key === "Escape") { event.preventDefault(); cancel(); }
    });
  }
  $("reason").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); saveReject(); }
    else if (event.key === "Escape") { event.preventDefault(); cancel(); }
  });
  $("reviewer").addEventListener("input", () => localStorage.setItem(REVIEWER_KEY, reviewer()));
  $("reviewer").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== "Escape") return;
    event.preventDefault();
    $("reviewer").blur();
    const then = state.then;
    state.then = null;
    if (event.key === "Enter" && reviewer()) {
      clearBanner();
      if (then) then();
    }
  });
  $("token").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, token());
    $("token").blur();
    clearBanner();
    start();
  });
  for (const name of ["status", "document", "warning"]) {
    const select = $("filter-" + name);
    select.addEventListener("change", async () => {
      const current = state.pair;
      try {
        await loadList();
        await showNextPending(current ? {id: current.id, position: current.position - 1} : null);
      } catch (error) {
        banner(error.message, "error", true);
      }
    });
    select.addEventListener("keydown", (event) => { if (event.key === "Escape") select.blur(); });
  }

  $("btn-accept").addEventListener("click", () => decide("accepted"));
  $("btn-edit").addEventListener("click", startEdit);
  $("btn-reject").addEventListener("click", startReject);
  $("btn-undo").addEventListener("click", () => decide("pending"));
  $("btn-prev").addEventListener("click", () => show(state.index - 1));
  $("btn-next").addEventListener("click", () => show(state.index + 1));
  $("btn-save").addEventListener("click", saveEdit);
  $("btn-cancel").addEventListener("click", cancel);

  // ------------------------------------------------------------ start

  async function start() {
    try {
      await loadList();
      await showNextPending(null);
    } catch (error) {
      renderEmpty(error.message);
      banner(error.message, "error", true);
    }
  }

  // a token in the fragment (`seektune review --open --token ...`) is kept and dropped from the address bar
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    localStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("token").value = localStorage.getItem(TOKEN_KEY) || "";
  $("reviewer").value = localStorage.getItem(REVIEWER_KEY) || "";
  setMode("view");
  start();
})();
