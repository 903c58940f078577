// The gateway's HTTP API, from the page's own origin. The API key (when the gateway asks for
// one) lives in localStorage under 0.5.1's names and goes with every call, the SSE stream
// included: the stream is read with fetch, not EventSource, so it can carry the header.

const STORE_HEADER = "pyoco.auth_header";
const STORE_KEY = "pyoco.auth_key";

/** An answer other than 2xx, with the gateway's `detail` as text. */
export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

/** The `detail` of an error body as one line (FastAPI validation lists included). */
export function detailText(body) {
  if (body === null || body === undefined) return "";
  if (typeof body === "string") return body;
  const detail = body.detail;
  // Our gateway adds a `reason` to many details (which rule, which limit).
  if (typeof detail === "string") return typeof body.reason === "string" ? `${detail}: ${body.reason}` : detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const loc = Array.isArray(e && e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "";
        const msg = (e && e.msg) || JSON.stringify(e);
        return loc ? `${loc}: ${msg}` : msg;
      })
      .join("; ");
  }
  return detail === undefined ? JSON.stringify(body) : JSON.stringify(detail);
}

const listeners = new Set();

export const auth = {
  /** The header name: the one saved, else the gateway's (from the page), else X-API-Key. */
  header() {
    return (
      localStorage.getItem(STORE_HEADER) ||
      document.documentElement.dataset.apiKeyHeader ||
      "X-API-Key"
    );
  },
  key() {
    return localStorage.getItem(STORE_KEY) || "";
  },
  save(header, key) {
    if (header) localStorage.setItem(STORE_HEADER, header);
    else localStorage.removeItem(STORE_HEADER);
    if (key) localStorage.setItem(STORE_KEY, key);
    else localStorage.removeItem(STORE_KEY);
  },
  /** Called with the failed request's path when the gateway answers 401. */
  onRequired(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
};

function headers(extra) {
  const out = new Headers(extra || {});
  const key = auth.key();
  if (key) out.set(auth.header(), key);
  return out;
}

async function parseBody(res) {
  const type = res.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await res.json();
    } catch {
      return null;
    }
  }
  return await res.text();
}

/**
 * One API call. `json` is sent as a JSON body, `body` as is (FormData, …). Resolves to the
 * parsed answer; rejects with ApiError (a 401 also tells the auth listeners).
 */
export async function request(method, path, { json, body, signal, headers: extra } = {}) {
  const init = { method, headers: headers(extra), signal, cache: "no-store" };
  if (json !== undefined) {
    init.headers.set("content-type", "application/json");
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const res = await fetch(path, init);
  const parsed = await parseBody(res);
  if (!res.ok) {
    if (res.status === 401) for (const fn of listeners) fn(path);
    throw new ApiError(res.status, detailText(parsed), parsed);
  }
  return parsed;
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, opts) => request("POST", path, opts);
export const patch = (path, opts) => request("PATCH", path, opts);
export const del = (path, opts) => request("DELETE", path, opts);

/** `?a=1&b=2` of the defined, non-empty values of `params` (arrays repeat the key). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, String(x)));
    else q.append(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/**
 * Read `GET /runs/{id}/watch` until `signal` aborts: `onSnapshot(snapshot)` for each snapshot
 * event. Reconnects after a stream ends (the gateway ends it at `timeout_sec`) or fails, asking
 * only for changes since the last snapshot seen. `onState` gets "connecting", "streaming",
 * "reconnecting" or "error".
 */
export async function watchRun(runId, { signal, onSnapshot, onState, include = "records" }) {
  let since;
  let delay = 0;
  while (!signal.aborted) {
    if (delay) await sleep(delay, signal);
    if (signal.aborted) return;
    onState && onState("connecting");
    try {
      const path =
        `/runs/${encodeURIComponent(runId)}/watch` +
        query({ include, timeout_sec: 60, since });
      const res = await stream(path, { signal });
      onState && onState("streaming");
      for await (const ev of sseEvents(res.body, signal)) {
        if (ev.event !== "snapshot") continue;
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          continue;
        }
        const snap = data && data.snapshot;
        if (snap && typeof snap === "object") {
          if (typeof snap.updated_at === "number") since = snap.updated_at;
          onSnapshot(snap);
        }
      }
      if (signal.aborted) return;
      delay = 300;
      onState && onState("reconnecting");
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 401)) {
        onState && onState("error", err);
        return;
      }
      onState && onState("error", err);
      delay = 1500;
    }
  }
}

/** Open a streaming GET (SSE): the Response, or an ApiError for an answer other than 2xx. */
export async function stream(path, { signal, headers: extra } = {}) {
  const res = await fetch(path, { headers: headers(extra), signal, cache: "no-store" });
  if (!res.ok) {
    const body = await parseBody(res);
    if (res.status === 401) for (const fn of listeners) fn(path);
    throw new ApiError(res.status, detailText(body), body);
  }
  return res;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/**
 * The events of a `text/event-stream` body (the WHATWG format: `event:`/`data:`/`id:` fields, blank
 * line ends an event, `:` comments). Hand-written: about 30 lines, where the maintained
 * libraries for fetch-based SSE are unmaintained or ship a build step.
 */
export async function* sseEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data = [];
  let id; // the last event id (it carries over to later events, as in EventSource)
  try {
    while (!signal || !signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" && buffer[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          // Named events without data (e.g. an `end`) are delivered too.
          if (data.length || event !== "message") yield { event, data: data.join("\n"), id };
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id" && !value.includes("\0")) id = value;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * POST a form with upload progress (fetch cannot report it): `onProgress(sent, total)`.
 * Resolves to the parsed answer; rejects with ApiError like `request`.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = auth.key();
    if (key) xhr.setRequestHeader(auth.header(), key);
    xhr.upload.onprogress = (e) => onProgress && e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onerror = () => reject(new ApiError(0, "network error", null));
    xhr.onload = () => {
      let body = xhr.responseText;
      if ((xhr.getResponseHeader("content-type") || "").includes("json")) {
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // keep the text
        }
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
      } else {
        if (xhr.status === 401) for (const fn of listeners) fn(path);
        reject(new ApiError(xhr.status, detailText(body), body));
      }
    };
    xhr.send(form);
  });
}
