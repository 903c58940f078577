// One poller of GET /metrics for the whole page: every 5 s while the page is open, kept in
// memory (the last hour), shared by the runs view's counts and the metrics charts.

import * as api from "./api.js";
import { parseMetrics } from "./metrics_text.js";

const INTERVAL_MS = 5000;
/** One hour of samples. */
const KEEP = 720;

const samples = [];
const listeners = new Set();
let timer = null;
let running = false;
let lastError = null;

function toSample(text) {
  const s = { t: Date.now() / 1000, runs: {}, today: {}, queue: {}, workers: null, dlq: null };
  for (const m of parseMetrics(text)) {
    if (m.name === "pyoco_runs_total" && m.labels.status !== undefined) s.runs[m.labels.status] = m.value;
    else if (m.name === "pyoco_runs_today_total" && m.labels.status !== undefined) s.today[m.labels.status] = m.value;
    else if (m.name === "pyoco_queue_depth" && m.labels.tag !== undefined) s.queue[m.labels.tag] = m.value;
    else if (m.name === "pyoco_workers_alive_total") s.workers = m.value;
    else if (m.name === "pyoco_dlq_messages_total") s.dlq = m.value;
  }
  return s;
}

async function poll() {
  clearTimeout(timer);
  try {
    const text = await api.get("/metrics");
    samples.push(toSample(typeof text === "string" ? text : ""));
    if (samples.length > KEEP) samples.splice(0, samples.length - KEEP);
    lastError = null;
  } catch (err) {
    lastError = err;
  }
  for (const fn of listeners) fn(samples, lastError);
  timer = setTimeout(poll, document.hidden ? INTERVAL_MS * 3 : INTERVAL_MS);
}

/** Call `fn(samples, error)` now (if there are samples) and after every scrape. */
export function subscribe(fn) {
  listeners.add(fn);
  if (!running) {
    running = true;
    poll();
  } else if (samples.length || lastError) {
    fn(samples, lastError);
  }
  return () => listeners.delete(fn);
}

/** Scrape now (after an action that changes the counts). */
export function refresh() {
  if (running) poll();
}
