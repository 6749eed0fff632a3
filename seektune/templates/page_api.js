// The JSON helper shared by seektune's local pages (the review page and the studio): no build step, no
// network beyond the page's own server. `seektunePageApi(tokenInput, tokenField, unauthorized)` returns
// `api(path, {method, body})`: the body sent as JSON, the bearer key taken from the page's key field, and on a
// refusal an Error whose message is the server's `detail` (for 401: `unauthorized`, with the key field shown),
// carrying `status` and the answer's body as `data`.
"use strict";

window.seektunePageApi = (tokenInput, tokenField, unauthorized) => async (path, {method = "GET", body} = {}) => {
  const headers = {"Accept": "application/json"};
  const token = tokenInput.value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, cache: "no-store",
                                      body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
    const error = new Error(response.status === 401 ? unauthorized : detail);
    error.status = response.status;
    error.data = data;
    if (response.status === 401) tokenField.hidden = false;
    throw error;
  }
  return data;
};
