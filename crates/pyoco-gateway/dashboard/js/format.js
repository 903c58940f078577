// Formatting shared by the views: times, durations, JSON, run and task states.

import { currentLang, t } from "./i18n.js";

export const RUN_STATUSES = ["PENDING", "RUNNING", "CANCELLING", "COMPLETED", "FAILED", "CANCELLED"];
export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

/** 0.5.1's `ops_default` order: what needs attention first. */
const OPS_RANK = { RUNNING: 0, CANCELLING: 0, PENDING: 0, FAILED: 1, CANCELLED: 1, COMPLETED: 2 };
export function opsRank(status) {
  return OPS_RANK[status] ?? 3;
}

/** A state as a CSS-friendly word (`data-state` of badges and graph nodes). */
export function stateClass(state) {
  return String(state || "unknown").toLowerCase();
}

function locale() {
  return currentLang() === "ja" ? "ja-JP" : "en-GB";
}

/** Epoch seconds → local date and time, e.g. `2026-12-05 17:20:03`. */
export function dateTime(epochSeconds) {
  if (typeof epochSeconds !== "number" || !isFinite(epochSeconds) || epochSeconds <= 0) return "—";
  const d = new Date(epochSeconds * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(
    d.getMinutes()
  )}:${pad(d.getSeconds())}`;
}

/** Epoch seconds → "12 s ago" / "3 min ago" / a date for older ones. */
export function ago(epochSeconds, now = Date.now() / 1000) {
  if (typeof epochSeconds !== "number" || !isFinite(epochSeconds) || epochSeconds <= 0) return "—";
  const s = Math.max(0, now - epochSeconds);
  if (s < 60) return t("time.seconds_ago", { n: Math.floor(s) });
  if (s < 3600) return t("time.minutes_ago", { n: Math.floor(s / 60) });
  if (s < 86400) return t("time.hours_ago", { n: Math.floor(s / 3600) });
  return dateTime(epochSeconds);
}

/** Seconds → "850 ms" / "12.3 s" / "4 min 05 s" / "2 h 03 min". */
export function duration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/** Pretty JSON of any value (strings shown as they are). */
export function pretty(value) {
  if (typeof value === "string") return value;
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** A number with the page language's grouping. */
export function number(n) {
  return typeof n === "number" ? n.toLocaleString(locale()) : "—";
}

/** Bytes → "1.2 MB". */
export function bytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
