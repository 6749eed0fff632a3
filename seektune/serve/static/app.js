// The seektune playground: chat with the served model over its OpenAI-compatible API, stream
// the answer, and send ratings and corrections to POST /v1/feedback (they become training rows
// through `seektune feedback export`). Plain JS, no framework, no build step; every request goes
// to this server only, with paths relative to the page so it also works behind a path prefix.
// On a server started with --rag INDEX, a "use documents" switch sends `rag` with each request and
// the answer's citations (the last stream chunk's `citations`) are listed under it as its Sources.
// Document text is data: it is only ever set with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "seektune.apiKey";
const MODEL_STORAGE = "seektune.model";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), apiKey: $("api-key"), newChat: $("new-chat"), banner: $("banner"),
  systemPrompt: $("system-prompt"), temperature: $("temperature"), maxTokens: $("max-tokens"),
  log: $("log"), empty: $("empty"), composer: $("composer"), message: $("message"),
  send: $("send"), stop: $("stop"), template: $("assistant-template"),
  ragToggle: $("rag-toggle"), useDocuments: $("use-documents"),
};

// The conversation sent with each request: user turns and the model's answers (content only).
let history = [];
let controller = null; // AbortController of the stream in flight

function storageGet(key) {
  try { return localStorage.getItem(key) || ""; } catch { return ""; } // storage may be disabled
}
function storageSet(key, value) {
  try { value ? localStorage.setItem(key, value) : localStorage.removeItem(key); } catch { /* ignore */ }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = ui.apiKey.value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// An OpenAI error body ({"error": {"message", ...}}) -> a sentence a user can act on.
async function describeError(response) {
  let message = "";
  try {
    const body = await response.json();
    const error = body && body.error;
    message = (error && error.message) || (body && typeof body.detail === "string" && body.detail) || "";
  } catch { /* not JSON */ }
  const hints = {
    401: "Enter the server's API key above.",
    413: "The request is too large.",
    429: "The server is busy; try again in a moment.",
  };
  const parts = [`${response.status} ${response.statusText || ""}`.trim()];
  if (message) parts.push(message);
  if (hints[response.status]) parts.push(hints[response.status]);
  return parts.join(" — ");
}

function showBanner(text) {
  ui.banner.textContent = text;
  ui.banner.hidden = !text;
}

async function loadModels() {
  let response;
  try {
    response = await fetch("v1/models", { headers: headers(false) });
  } catch (err) {
    showBanner("Cannot reach the server: " + err.message);
    return;
  }
  if (!response.ok) {
    showBanner("Cannot list the models: " + (await describeError(response)));
    return;
  }
  const body = await response.json();
  const ids = (body.data || []).map((m) => m.id);
  const retrieval = body.retrieval;
  ui.ragToggle.hidden = !(retrieval && retrieval.enabled);
  if (retrieval && retrieval.enabled) {
    ui.ragToggle.title = `Answer from the server's ${retrieval.documents} documents (${retrieval.chunks} passages) ` +
      "and cite them";
  }
  const wanted = ui.model.value || storageGet(MODEL_STORAGE);
  ui.model.replaceChildren(...ids.map((id) => new Option(id, id)));
  if (ids.includes(wanted)) ui.model.value = wanted;
  showBanner(ids.length ? "" : "The server lists no models.");
}

function addUserMessage(text) {
  const li = document.createElement("li");
  li.className = "msg user";
  li.dataset.testid = "user-message";
  li.textContent = text;
  ui.log.append(li);
  ui.empty.hidden = true;
}

function addAssistantMessage() {
  const li = ui.template.content.firstElementChild.cloneNode(true);
  ui.log.append(li);
  return {
    li,
    reasoning: li.querySelector(".reasoning"),
    reasoningText: li.querySelector(".reasoning-text"),
    content: li.querySelector(".content"),
    error: li.querySelector('[data-testid="message-error"]'),
    meta: li.querySelector(".meta"),
    sources: li.querySelector(".sources"),
    feedback: li.querySelector(".feedback"),
  };
}

// The passages an answer was grounded in: "[n] chunk_id — heading (document, page p)", each opening
// to its preview. Every string comes from the documents, so each goes in with textContent.
function showSources(box, citations) {
  const items = citations.map((c) => {
    const li = document.createElement("li");
    li.dataset.testid = "source";
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    const where = [c.document, c.page === null || c.page === undefined ? "" : `page ${c.page}`]
      .filter(Boolean).join(", ");
    summary.textContent = `[${c.number}] ${c.chunk_id}` + (c.heading ? ` — ${c.heading}` : "") +
      (where ? ` (${where})` : "");
    const preview = document.createElement("p");
    preview.className = "source-preview";
    preview.dataset.testid = "source-preview";
    preview.textContent = c.preview || "";
    details.append(summary, preview);
    li.append(details);
    return li;
  });
  box.querySelector(".sources-list").replaceChildren(...items);
  box.querySelector(".sources-none").hidden = items.length > 0;
  box.hidden = false;
}

function scrollToEnd() {
  window.scrollTo({ top: document.body.scrollHeight });
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.hidden = !busy;
  ui.model.disabled = busy;
}

// Reads an SSE body: calls onEvent(parsedJson) per `data:` line and resolves true on [DONE].
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const line of lines) {
      if (!line.startsWith("data:")) continue; // blank separators, comments (": ping"), event names
      const data = line.slice(5).trim();
      // no reader.cancel() here: the server closes the stream itself, and cancelling would
      // abort the request (a failed request in the browser's log) for no gain
      if (data === "[DONE]") return true;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

async function send(text) {
  const model = ui.model.value;
  const messages = [];
  const system = ui.systemPrompt.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history, { role: "user", content: text });

  addUserMessage(text);
  const view = addAssistantMessage();
  view.li.setAttribute("aria-busy", "true");
  scrollToEnd();

  const request = { model, messages, stream: true };
  const temperature = parseFloat(ui.temperature.value);
  const maxTokens = parseInt(ui.maxTokens.value, 10);
  if (Number.isFinite(temperature)) request.temperature = temperature;
  if (Number.isFinite(maxTokens) && maxTokens > 0) request.max_tokens = maxTokens;
  if (!ui.ragToggle.hidden) request.rag = ui.useDocuments.checked;

  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let completionId = null;
  let answer = "";
  let reasoning = "";
  let finish = null;
  let citations = null; // set by the last chunk when the answer was grounded in documents
  let ended = false;
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(true), body: JSON.stringify(request), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await describeError(response));
    ended = await readEvents(response.body, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message || "the server reported an error mid-stream");
      completionId = completionId || chunk.id || null;
      if (Array.isArray(chunk.citations)) citations = chunk.citations;
      const choice = (chunk.choices || []).find((c) => (c.index || 0) === 0);
      if (!choice) return;
      const delta = choice.delta || {};
      if (delta.reasoning_content) {
        reasoning += delta.reasoning_content;
        view.reasoningText.textContent = reasoning;
        view.reasoning.hidden = false;
      }
      if (delta.content) {
        answer += delta.content;
        view.content.textContent = answer;
        scrollToEnd();
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    if (!ended) throw new Error("The stream ended before [DONE]; the answer may be cut short.");
  } catch (err) {
    const stopped = err.name === "AbortError";
    view.error.textContent = stopped ? "Stopped." : err.message;
    view.error.hidden = false;
    if (stopped) { // the user's own choice: a note, not an alarm
      view.error.removeAttribute("role");
      view.error.className = "muted stopped";
    }
  } finally {
    controller = null;
    setBusy(false);
    view.li.removeAttribute("aria-busy");
  }

  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  view.meta.textContent = [model, `${seconds} s`, finish === "length" ? "cut at max tokens" : ""]
    .filter(Boolean).join(" · ");
  if (!answer && !reasoning && ended) view.content.textContent = "(empty answer)";
  if (ended && citations) showSources(view.sources, citations);
  if (ended) {
    history.push({ role: "user", content: text }, { role: "assistant", content: answer });
    if (completionId) wireFeedback(view.feedback, completionId);
  }
  ui.message.focus();
}

async function postFeedback(payload) {
  const response = await fetch("v1/feedback", {
    method: "POST", headers: headers(true), body: JSON.stringify(payload),
  });
  if (!response.ok) throw new Error(await describeError(response));
}

function wireFeedback(box, completionId) {
  box.hidden = false;
  box.dataset.completionId = completionId;
  const thumbs = box.querySelectorAll(".thumb");
  const status = box.querySelector(".thanks");
  const suggest = box.querySelector(".suggest");
  const form = box.querySelector(".correction");
  const correction = box.querySelector(".correction-text");
  const comment = box.querySelector(".comment-text");
  let rating = null;

  async function submit(payload, thanks) {
    status.classList.remove("failed");
    status.textContent = "Sending…";
    try {
      await postFeedback({ id: completionId, ...payload });
      status.textContent = thanks;
      return true;
    } catch (err) {
      status.classList.add("failed");
      status.textContent = "Not saved: " + err.message;
      return false;
    }
  }

  thumbs.forEach((button) => button.addEventListener("click", async () => {
    const chosen = button.dataset.rating;
    if (await submit({ rating: chosen }, "Thanks for the feedback!")) {
      rating = chosen;
      thumbs.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    }
  }));

  suggest.addEventListener("click", () => {
    form.hidden = !form.hidden;
    suggest.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) correction.focus();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = correction.value.trim();
    if (!text) return;
    // a suggested answer means this one could be better: "down" unless the user rated it up
    const payload = { rating: rating || "down", correction: text };
    if (comment.value.trim()) payload.comment = comment.value.trim();
    if (await submit(payload, "Thanks! Your answer will be used for training.")) {
      form.hidden = true;
      suggest.setAttribute("aria-expanded", "false");
    }
  });
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (!text || controller) return;
  if (!ui.model.value) {
    if (ui.banner.hidden) showBanner("No model to talk to yet: the model list is empty.");
    ui.banner.scrollIntoView({ block: "nearest" });
    return;
  }
  ui.message.value = "";
  send(text);
});

ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", () => controller && controller.abort());

ui.newChat.addEventListener("click", () => {
  if (controller) controller.abort();
  history = [];
  ui.log.replaceChildren();
  ui.empty.hidden = false;
  ui.message.focus();
});

ui.apiKey.addEventListener("change", () => {
  storageSet(KEY_STORAGE, ui.apiKey.value.trim());
  loadModels();
});

ui.model.addEventListener("change", () => storageSet(MODEL_STORAGE, ui.model.value));

ui.apiKey.value = storageGet(KEY_STORAGE);
loadModels();
