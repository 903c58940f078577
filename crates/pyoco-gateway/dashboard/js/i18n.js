// Every string of the dashboard, in English and Japanese.
//
// Language: `?lang=ja|en` in the address, or the in-page switch (remembered in localStorage)
// › the gateway's PYOCO_DASHBOARD_LANG when `ja`/`en` (`data-server-lang` on <html>) › the
// browser's languages (navigator.languages: what it sends as Accept-Language) › English.

const STORE_LANG = "pyoco.lang";
export const LANGS = ["en", "ja"];

const STATUS_EN = { PENDING: "Pending", RUNNING: "Running", CANCELLING: "Cancelling", COMPLETED: "Completed", FAILED: "Failed", CANCELLED: "Cancelled", UNKNOWN: "Unknown" };
const STATUS_JA = { PENDING: "待機中", RUNNING: "実行中", CANCELLING: "キャンセル中", COMPLETED: "完了", FAILED: "失敗", CANCELLED: "キャンセル済み", UNKNOWN: "不明" };
const TASK_EN = { PENDING: "Pending", RUNNING: "Running", SUCCEEDED: "Succeeded", FAILED: "Failed", CANCELLED: "Cancelled" };
const TASK_JA = { PENDING: "待機中", RUNNING: "実行中", SUCCEEDED: "成功", FAILED: "失敗", CANCELLED: "キャンセル" };
const WORKER_EN = { RUNNING: "Running", IDLE: "Idle", STOPPED_GRACEFUL: "Stopped", DISCONNECTED: "Disconnected" };
const WORKER_JA = { RUNNING: "実行中", IDLE: "待機中", STOPPED_GRACEFUL: "停止", DISCONNECTED: "切断" };

function prefixed(prefix, map) {
  return Object.fromEntries(Object.entries(map).map(([k, v]) => [`${prefix}.${k}`, v]));
}

const STRINGS = {
  en: {
    ...prefixed("status", STATUS_EN),
    ...prefixed("task", TASK_EN),
    ...prefixed("worker", WORKER_EN),
    "app.title": "pyoco-server",
    "nav.runs": "Runs",
    "nav.workers": "Workers",
    "nav.label": "Views",
    "lang.label": "Language",
    "auth.button": "API key",
    "auth.title": "API key required",
    "auth.text": "This gateway asks for an API key. It is kept in this browser only and sent with every request.",
    "auth.header": "Header",
    "auth.key": "Key",
    "auth.save": "Save",
    "auth.clear": "Forget key",
    "auth.cancel": "Close",
    "auth.rejected": "The gateway refused the key ({detail}).",
    "live.connecting": "connecting…",
    "live.live": "live",
    "live.streaming": "live",
    "live.reconnecting": "reconnecting…",
    "live.error": "offline",
    "live.done": "finished",
    "time.seconds_ago": "{n} s ago",
    "time.minutes_ago": "{n} min ago",
    "time.hours_ago": "{n} h ago",
    "error.load": "Could not load: {detail}",
    "error.action": "Failed: {detail}",
    "runs.title": "Runs",
    "runs.empty": "No runs match.",
    "runs.load_more": "Load older runs",
    "runs.all_statuses": "All",
    "runs.flow_exact": "exact name",
    "runs.tag_exact": "exact tag",
    "runs.contains": "contains…",
    "runs.status": "Status",
    "runs.flow": "Flow",
    "runs.tag": "Tag",
    "runs.worker": "Worker",
    "runs.run_id": "Run ID",
    "runs.sort": "Sort",
    "runs.col_status": "Status",
    "runs.col_flow": "Flow",
    "runs.col_run": "Run",
    "runs.col_tag": "Tag",
    "runs.col_worker": "Worker",
    "runs.col_duration": "Duration",
    "runs.col_updated": "Updated",
    "runs.shown": "{n} shown of {total} loaded",
    "sort.ops": "Needs attention first",
    "sort.updated": "Recently updated",
    "sort.started": "Recently started",
    "sort.flow": "Flow name",
    "sort.status": "Status",
    "run.back": "← Runs",
    "run.cancel": "Cancel run",
    "run.cancel_confirm": "Cancel run {run}? Its running task is interrupted.",
    "run.cancel_yes": "Cancel run",
    "run.cancel_no": "Keep running",
    "run.not_found": "No such run (or not visible with this key).",
    "run.graph": "Graph",
    "run.details": "Details",
    "run.params": "Parameters",
    "run.timeline": "Timeline",
    "run.tasks": "Tasks",
    "run.task": "Task",
    "run.state": "State",
    "run.started": "Started",
    "run.took": "Duration",
    "run.task_detail": "Task",
    "run.run_id": "Run ID",
    "run.flow": "Flow",
    "run.tag": "Tag",
    "run.tags": "Tags",
    "run.worker": "Worker",
    "run.attempt": "Attempt",
    "run.start": "Started",
    "run.end": "Ended",
    "run.updated": "Updated",
    "run.heartbeat": "Heartbeat",
    "run.cancel_requested": "Cancel requested",
    "run.yaml": "flow.yaml",
    "run.tenant": "Tenant",
    "run.error": "Error",
    "run.truncated": "Records",
    "run.truncated_note": "Task records were dropped: the run was larger than the snapshot limit.",
    "run.no_tasks_yet": "No tasks yet: the run has not started.",
    "run.graph_too_large": "{n} tasks: too many to draw.",
    "run.no_edges": "Dependencies unknown (run by a worker that does not report them).",
    "run.timeline_empty": "No task has started yet.",
    "run.no_record": "No record for this task.",
    "task.error": "Error",
    "task.traceback": "Traceback",
    "task.inputs": "Inputs",
    "task.output": "Output",
    "task.stdout": "stdout",
    "task.stderr": "stderr",
    "workers.title": "Workers",
    "workers.empty": "No workers.",
    "workers.all_states": "All",
    "workers.state": "State",
    "workers.show_hidden": "Show hidden",
    "workers.col_worker": "Worker",
    "workers.col_state": "State",
    "workers.col_tags": "Tags",
    "workers.col_current": "Current run",
    "workers.col_heartbeat": "Heartbeat",
    "workers.col_last": "Last run",
    "workers.col_wheels": "Wheels",
    "workers.col_actions": "",
    "workers.hidden": "hidden",
    "workers.hide": "Hide",
    "workers.unhide": "Unhide",
    "workers.connection_lost": "connection lost",
    "workers.sync_off": "sync off",
    "workers.installed": "{n} installed",
    "workers.failed_wheels": "{n} failed",
  },
  ja: {
    ...prefixed("status", STATUS_JA),
    ...prefixed("task", TASK_JA),
    ...prefixed("worker", WORKER_JA),
    "app.title": "pyoco-server",
    "nav.runs": "実行",
    "nav.workers": "ワーカー",
    "nav.label": "表示",
    "lang.label": "言語",
    "auth.button": "APIキー",
    "auth.title": "APIキーが必要です",
    "auth.text": "このゲートウェイはAPIキーを要求しています。キーはこのブラウザにだけ保存され、すべてのリクエストで送信されます。",
    "auth.header": "ヘッダー",
    "auth.key": "キー",
    "auth.save": "保存",
    "auth.clear": "キーを削除",
    "auth.cancel": "閉じる",
    "auth.rejected": "ゲートウェイがキーを拒否しました（{detail}）。",
    "live.connecting": "接続中…",
    "live.live": "ライブ",
    "live.streaming": "ライブ",
    "live.reconnecting": "再接続中…",
    "live.error": "オフライン",
    "live.done": "終了",
    "time.seconds_ago": "{n}秒前",
    "time.minutes_ago": "{n}分前",
    "time.hours_ago": "{n}時間前",
    "error.load": "読み込めませんでした: {detail}",
    "error.action": "失敗しました: {detail}",
    "runs.title": "実行一覧",
    "runs.empty": "該当する実行はありません。",
    "runs.load_more": "さらに古い実行を読み込む",
    "runs.all_statuses": "すべて",
    "runs.flow_exact": "完全一致",
    "runs.tag_exact": "完全一致",
    "runs.contains": "部分一致…",
    "runs.status": "状態",
    "runs.flow": "フロー",
    "runs.tag": "タグ",
    "runs.worker": "ワーカー",
    "runs.run_id": "実行ID",
    "runs.sort": "並び順",
    "runs.col_status": "状態",
    "runs.col_flow": "フロー",
    "runs.col_run": "実行",
    "runs.col_tag": "タグ",
    "runs.col_worker": "ワーカー",
    "runs.col_duration": "所要時間",
    "runs.col_updated": "更新",
    "runs.shown": "読み込み済み {total} 件中 {n} 件を表示",
    "sort.ops": "要対応を優先",
    "sort.updated": "更新が新しい順",
    "sort.started": "開始が新しい順",
    "sort.flow": "フロー名",
    "sort.status": "状態",
    "run.back": "← 実行一覧",
    "run.cancel": "実行をキャンセル",
    "run.cancel_confirm": "実行 {run} をキャンセルしますか？実行中のタスクは中断されます。",
    "run.cancel_yes": "キャンセルする",
    "run.cancel_no": "続行する",
    "run.not_found": "この実行は存在しません（またはこのキーでは参照できません）。",
    "run.graph": "グラフ",
    "run.details": "詳細",
    "run.params": "パラメーター",
    "run.timeline": "タイムライン",
    "run.tasks": "タスク",
    "run.task": "タスク",
    "run.state": "状態",
    "run.started": "開始",
    "run.took": "所要時間",
    "run.task_detail": "タスク",
    "run.run_id": "実行ID",
    "run.flow": "フロー",
    "run.tag": "タグ",
    "run.tags": "タグ一覧",
    "run.worker": "ワーカー",
    "run.attempt": "試行",
    "run.start": "開始",
    "run.end": "終了",
    "run.updated": "更新",
    "run.heartbeat": "ハートビート",
    "run.cancel_requested": "キャンセル要求",
    "run.yaml": "flow.yaml",
    "run.tenant": "テナント",
    "run.error": "エラー",
    "run.truncated": "レコード",
    "run.truncated_note": "スナップショットの上限を超えたため、タスクレコードは省略されました。",
    "run.no_tasks_yet": "タスクはまだありません（未開始）。",
    "run.graph_too_large": "タスクが {n} 個あるため描画しません。",
    "run.no_edges": "依存関係は不明です（依存関係を報告しないワーカーで実行されました）。",
    "run.timeline_empty": "まだ開始したタスクはありません。",
    "run.no_record": "このタスクのレコードはありません。",
    "task.error": "エラー",
    "task.traceback": "トレースバック",
    "task.inputs": "入力",
    "task.output": "出力",
    "task.stdout": "標準出力",
    "task.stderr": "標準エラー出力",
    "workers.title": "ワーカー",
    "workers.empty": "ワーカーはいません。",
    "workers.all_states": "すべて",
    "workers.state": "状態",
    "workers.show_hidden": "非表示も表示",
    "workers.col_worker": "ワーカー",
    "workers.col_state": "状態",
    "workers.col_tags": "タグ",
    "workers.col_current": "実行中",
    "workers.col_heartbeat": "ハートビート",
    "workers.col_last": "前回の実行",
    "workers.col_wheels": "ホイール",
    "workers.col_actions": "",
    "workers.hidden": "非表示",
    "workers.hide": "非表示にする",
    "workers.unhide": "表示する",
    "workers.connection_lost": "接続が切れました",
    "workers.sync_off": "同期なし",
    "workers.installed": "{n} 個インストール済み",
    "workers.failed_wheels": "{n} 個失敗",
  },
};

let lang = "en";

function pick(candidate) {
  const c = String(candidate || "").toLowerCase();
  if (c.startsWith("ja")) return "ja";
  if (c.startsWith("en")) return "en";
  return null;
}

/** Decide the language (see the module comment); `?lang=` is also remembered. */
export function initLang() {
  const fromUrl = pick(new URLSearchParams(location.search).get("lang"));
  if (fromUrl) {
    try {
      localStorage.setItem(STORE_LANG, fromUrl);
    } catch {
      // Storage refused (private mode): the choice lasts for this page.
    }
  }
  let stored = null;
  try {
    stored = pick(localStorage.getItem(STORE_LANG));
  } catch {
    stored = null;
  }
  const server = pick(document.documentElement.dataset.serverLang);
  const browser = (navigator.languages || [navigator.language]).map(pick).find(Boolean);
  lang = fromUrl || stored || server || browser || "en";
  document.documentElement.lang = lang;
  return lang;
}

/** Switch language (remembered). */
export function setLang(next) {
  if (!LANGS.includes(next)) return;
  lang = next;
  try {
    localStorage.setItem(STORE_LANG, next);
  } catch {
    // see initLang
  }
  document.documentElement.lang = lang;
}

export function currentLang() {
  return lang;
}

/** The string `key` in the page language (English, then the key, when missing). */
export function t(key, vars) {
  let text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

/** For tests: every key of every language. */
export const KEYS = { en: Object.keys(STRINGS.en), ja: Object.keys(STRINGS.ja) };
