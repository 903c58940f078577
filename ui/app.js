// pyoco-server desktop — the window.
//
// Talks to the Rust core only through the commands of docs/desktop-api.md, called with
// window.__TAURI__.core.invoke(name, args) (app.withGlobalTauri = true). No framework, no build:
// the DOM is built once and then updated in place, so polling never makes the layout jump.

const STATUS_POLL_MS = 500;
const LOGS_POLL_MS = 1000;
const MAX_LOG_LINES = 500;
const VALIDATE_DEBOUNCE_MS = 150;
const TAURI_WAIT_MS = 3000;

/** The components the window knows up front (cards exist before the first status arrives). */
const KNOWN_COMPONENTS = [
  { id: 'nats', label: 'nats-server' },
  { id: 'gateway', label: 'gateway' },
  { id: 'worker', label: 'worker' },
];

const STATE_LABELS = {
  disabled: 'Disabled',
  starting: 'Starting',
  running: 'Running',
  restarting: 'Restarting',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed',
  unknown: '…',
};

/* =============================================================================================
 * DOM helpers
 * =========================================================================================== */

const $ = (id) => document.getElementById(id);

/** Properties set as DOM properties rather than attributes. */
const DOM_PROPS = new Set(['value', 'checked', 'disabled', 'hidden', 'selected']);

/**
 * Creates an element. `props`: `class`, `text`, `dataset`, `on<event>` handlers, DOM properties
 * (value, checked, disabled, hidden, selected) and any other attribute.
 */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (DOM_PROPS.has(key)) node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) node.append(child);
  }
  return node;
}

/** Sets text only when it changed (no needless relayout while polling). */
function setText(node, text) {
  const value = text ?? '';
  if (node.textContent !== value) node.textContent = value;
}

function setAttr(node, name, value) {
  if (value == null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, value);
  }
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* Inline SVG icons (24×24, stroked), built with the DOM rather than markup strings. */
const ICONS = {
  copy: ['M10 9h9a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1h-9a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1z',
    'M15 9V5a1 1 0 0 0-1-1H5a1 1 0 0 0-1 1v9a1 1 0 0 0 1 1h4'],
  check: ['M5 12.5l4.5 4.5L19 7.5'],
  restart: ['M20 12a8 8 0 1 1-2.34-5.66', 'M20 4v5h-5'],
  alert: ['M10.3 4.2 2.6 17.5A2 2 0 0 0 4.3 20.5h15.4a2 2 0 0 0 1.7-3L13.7 4.2a2 2 0 0 0-3.4 0z',
    'M12 9.5v4', 'M12 17h.01'],
  search: ['M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14z', 'M20 20l-4-4'],
  arrowDown: ['M12 5v14', 'M18 13l-6 6-6-6'],
  download: ['M12 4v11', 'M7 10l5 5 5-5', 'M5 20h14'],
  info: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z', 'M12 11v5', 'M12 7.5v.5'],
  external: ['M14 4h6v6', 'M20 4l-9 9', 'M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5'],
};

function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', `icon icon-${name}`);
  svg.setAttribute('aria-hidden', 'true');
  for (const d of ICONS[name] ?? []) {
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}

/** Replaces every `<span data-icon="name">` placeholder of the static markup with its icon. */
function mountStaticIcons() {
  for (const slot of document.querySelectorAll('[data-icon]')) {
    slot.replaceWith(icon(slot.dataset.icon));
  }
}

/* =============================================================================================
 * Tauri bridge
 * =========================================================================================== */

let tauriInvoke = null;

/** Waits a little for the global Tauri API (it is normally injected before any page script). */
async function waitForTauri(timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const invoke = window.__TAURI__?.core?.invoke;
    if (typeof invoke === 'function') return invoke;
    if (performance.now() > deadline) return null;
    await sleep(50);
  }
}

function invoke(command, args) {
  return args === undefined ? tauriInvoke(command) : tauriInvoke(command, args);
}

/** The text of a rejection: the API's `{message, fields}` object, a string, or an Error. */
function errorMessage(err) {
  if (typeof err === 'string') return err;
  if (err && typeof err.message === 'string' && err.message) return err.message;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

function errorFields(err) {
  return err && typeof err === 'object' && err.fields && typeof err.fields === 'object'
    ? err.fields : {};
}

/**
 * Runs `task` every `intervalMs`, one call at a time: the next run is scheduled only once the
 * previous one settled, so two polls of the same command never overlap.
 */
function startPolling(task, intervalMs) {
  const tick = async () => {
    const started = performance.now();
    try {
      await task();
    } catch (err) {
      console.error(err);
    }
    setTimeout(tick, Math.max(0, intervalMs - (performance.now() - started)));
  };
  tick();
}

/* =============================================================================================
 * Toast (transient errors of one-shot actions)
 * =========================================================================================== */

let toastTimer = 0;

function showToast(message) {
  const toast = $('toast');
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 6000);
}

/* =============================================================================================
 * Views & navigation
 * =========================================================================================== */

/** The views the gateway's dashboard provides, framed (its `?embed=1` mode). */
const DASHBOARD_VIEWS = ['runs', 'schedules', 'workers', 'metrics', 'wheels', 'dlq'];
const VIEWS = ['status', ...DASHBOARD_VIEWS, 'settings'];

let currentView = 'status';
/** The gateway's dashboard address while the stack runs (from the status). */
let dashboardUrl = null;

function viewFromHash() {
  const name = location.hash.replace(/^#/, '');
  return VIEWS.includes(name) ? name : 'status';
}

function showView(name) {
  currentView = name;
  const framed = DASHBOARD_VIEWS.includes(name);
  setHidden($('view-status'), name !== 'status');
  setHidden($('view-settings'), name !== 'settings');
  setHidden($('view-dashboard'), !framed);
  for (const tab of document.querySelectorAll('.tab')) {
    setAttr(tab, 'aria-current', tab.dataset.view === name ? 'page' : null);
  }
  if (name === 'settings') ensureSettingsLoaded();
  if (framed) showDashboard();
}

/** Point the frame at the dashboard view of the current tab (only the fragment changes when
 *  the gateway is the same, so the framed page is not reloaded). */
function showDashboard() {
  const frame = $('dashboard-frame');
  const known = typeof dashboardUrl === 'string' && dashboardUrl !== '';
  setHidden(frame, !known);
  setHidden($('dashboard-waiting'), known);
  if (!known) return;
  const url = new URL(dashboardUrl);
  url.searchParams.set('embed', '1');
  url.hash = `#/${currentView}`;
  if (frame.src !== url.href) frame.src = url.href;
}

function setDashboardUrl(url) {
  const next = typeof url === 'string' && url !== '' ? url : null;
  if (next === dashboardUrl) return;
  dashboardUrl = next;
  if (DASHBOARD_VIEWS.includes(currentView)) showDashboard();
}

function navigate(name) {
  const hash = `#${name}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
  showView(name);
}

function initNavigation() {
  for (const name of VIEWS) $(`nav-${name}`).addEventListener('click', () => navigate(name));
  $('startup-error-settings').addEventListener('click', () => navigate('settings'));
  window.addEventListener('hashchange', () => showView(viewFromHash()));
  showView(viewFromHash());
}

/* =============================================================================================
 * Status: header badge, startup error, component cards, addresses
 * =========================================================================================== */

const statusState = {
  cards: new Map(), // component id -> { root, pill, since, message, button }
  requestSeq: 0, // increases with every call returning a Status
  appliedSeq: 0, // the newest one rendered (older responses are ignored)
};

function relativeDuration(sinceSeconds) {
  if (typeof sinceSeconds !== 'number') return '';
  const secs = Math.max(0, Date.now() / 1000 - sinceSeconds);
  if (secs < 60) return `for ${Math.floor(secs)} s`;
  const mins = secs / 60;
  if (mins < 60) return `for ${Math.floor(mins)} min`;
  const hours = mins / 60;
  if (hours < 24) return `for ${Math.floor(hours)} h ${Math.floor(mins % 60)} min`;
  const days = Math.floor(hours / 24);
  return `for ${days} day${days === 1 ? '' : 's'}`;
}

function absoluteTime(sinceSeconds) {
  if (typeof sinceSeconds !== 'number') return null;
  return `since ${new Date(sinceSeconds * 1000).toLocaleString()}`;
}

function createComponentCard(id, label) {
  const pill = el('span', { class: 'pill', dataset: { state: 'unknown' }, text: STATE_LABELS.unknown });
  const since = el('span', { class: 'component-since' });
  const message = el('div', { class: 'component-message selectable', hidden: true });
  const button = el('button', {
    type: 'button', class: 'btn btn-sm', id: `restart-${id}`,
    'aria-label': `Restart ${label}`,
    onclick: () => restartComponent(id, button),
  }, icon('restart'), el('span', { class: 'btn-label', text: 'Restart' }));
  const title = el('h3', { class: 'component-label', text: label });

  const root = el('article', {
    class: 'card component', id: `component-${id}`, dataset: { state: 'unknown' },
    'aria-label': label,
  },
  el('div', { class: 'component-head' }, el('span', { class: 'state-dot' }), title, pill),
  message,
  el('div', { class: 'component-foot' }, since, button));

  const card = { root, title, pill, since, message, button };
  statusState.cards.set(id, card);
  $('components').append(root);
  return card;
}

function updateComponentCard(component) {
  const card = statusState.cards.get(component.id)
    ?? createComponentCard(component.id, component.label ?? component.id);
  const state = component.state ?? 'unknown';

  setAttr(card.root, 'data-state', state);
  setAttr(card.pill, 'data-state', state);
  setText(card.pill, STATE_LABELS[state] ?? state);
  setText(card.title, component.label ?? component.id);
  setText(card.since, relativeDuration(component.since));
  setAttr(card.since, 'title', absoluteTime(component.since));

  const hasMessage = typeof component.message === 'string' && component.message !== '';
  setText(card.message, hasMessage ? component.message : '');
  setHidden(card.message, !hasMessage);
}

function overallState(status) {
  const components = status.components ?? [];
  if (status.startup_error || components.some((c) => c.state === 'failed')) {
    return { state: 'problem', text: 'Problem' };
  }
  if (status.all_running) return { state: 'running', text: 'All running' };
  const restarting = components.find((c) => c.state === 'restarting');
  if (restarting) return { state: 'starting', text: `Restarting ${restarting.label}…` };
  if (components.some((c) => c.state === 'stopping')) return { state: 'starting', text: 'Stopping…' };
  return { state: 'starting', text: 'Starting…' };
}

function renderOverall(status) {
  const badge = $('overall-state');
  const { state, text } = overallState(status);
  setAttr(badge, 'data-state', state);
  setText(badge, text);
  setText($('app-version'), status.version ? `v${status.version}` : '');
}

function renderStartupError(status) {
  const message = status.startup_error || '';
  setText($('startup-error-text'), message);
  setHidden($('startup-error'), !message);
  setText($('settings-startup-error-text'), message);
  setHidden($('settings-startup-error'), !message);
}

/** Things the app decided at start (a taken default port replaced by a free one). */
function renderNotices(status) {
  const notices = status.notices ?? [];
  const list = $('notices-list');
  const key = notices.join('\n');
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren(...notices.map((text) => el('li', {}, text)));
  }
  setHidden($('notices'), notices.length === 0);
}

/** Address rows: the value element id and the Status key it shows. */
const ADDRESS_ROWS = [
  { key: 'api_url', id: 'url-api', label: 'API URL' },
  { key: 'dashboard_url', id: 'url-dashboard', label: 'dashboard URL' },
  { key: 'nats_url', id: 'url-nats', label: 'NATS URL' },
  { key: 'nats_monitor_url', id: 'url-nats-monitor', label: 'NATS monitoring URL' },
  { key: 'data_dir', id: 'path-data-dir', label: 'data dir' },
  { key: 'env_file', id: 'path-env-file', label: '.env file path' },
];

function initAddresses() {
  for (const row of ADDRESS_ROWS) {
    const value = $(row.id);
    const button = el('button', {
      type: 'button', class: 'btn btn-icon btn-ghost copy-button', title: 'Copy',
      'aria-label': `Copy ${row.label}`, disabled: true,
      onclick: () => copyText(value.dataset.value ?? '', button),
    }, icon('copy'), icon('check'));
    value.after(button);
    value.textContent = '—';
    value.classList.add('is-empty');
  }
}

function renderAddresses(status) {
  for (const row of ADDRESS_ROWS) {
    const valueEl = $(row.id);
    const value = status[row.key];
    const known = typeof value === 'string' && value !== '';
    setText(valueEl, known ? value : '—');
    valueEl.dataset.value = known ? value : '';
    valueEl.classList.toggle('is-empty', !known);
    valueEl.nextElementSibling.disabled = !known;
    const rowEl = valueEl.closest('.kv-row');
    if (rowEl.hasAttribute('data-optional')) setHidden(rowEl, !known);
  }
  $('open-dashboard').disabled = !status.dashboard_url;
  setDashboardUrl(status.dashboard_url);
}

async function copyText(text, button) {
  if (!text) return;
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    ok = legacyCopy(text);
  }
  if (!ok) return; // fall back silently: the value is selectable anyway
  button.classList.add('is-copied');
  setTimeout(() => button.classList.remove('is-copied'), 1200);
}

function legacyCopy(text) {
  const area = el('textarea', { class: 'visually-hidden', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

function setConnected(connected, err) {
  const indicator = $('connection-state');
  setHidden(indicator, connected);
  setAttr(indicator, 'title', connected ? null : `The app core did not answer: ${errorMessage(err)}`);
  document.body.classList.toggle('is-disconnected', !connected);
}

function renderStatus(status, seq) {
  if (seq < statusState.appliedSeq) return; // an older answer arriving late
  statusState.appliedSeq = seq;
  renderOverall(status);
  renderStartupError(status);
  renderNotices(status);
  for (const component of status.components ?? []) updateComponentCard(component);
  renderAddresses(status);
}

async function pollStatus() {
  const seq = ++statusState.requestSeq;
  try {
    const status = await invoke('app_status');
    setConnected(true);
    renderStatus(status, seq);
  } catch (err) {
    setConnected(false, err);
  }
}

async function restartComponent(component, button) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  const seq = ++statusState.requestSeq;
  try {
    const status = await invoke('restart_component', { component });
    renderStatus(status, seq);
  } catch (err) {
    showToast(`Restart failed: ${errorMessage(err)}`);
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

async function openDashboard() {
  try {
    await invoke('open_dashboard');
  } catch (err) {
    showToast(`Could not open the dashboard: ${errorMessage(err)}`);
  }
}

function initStatus() {
  for (const { id, label } of KNOWN_COMPONENTS) createComponentCard(id, label);
  initAddresses();
  const restartAll = $('restart-all');
  restartAll.addEventListener('click', () => restartComponent('all', restartAll));
  $('open-dashboard').addEventListener('click', openDashboard);
}

/* =============================================================================================
 * Logs
 * =========================================================================================== */

const logState = {
  lastSeq: null, // the newest seq received (null: nothing yet)
  follow: true, // keep scrolled to the bottom unless the user scrolled up
  ownScrollTop: null, // where the window itself last scrolled the box to
};

function isScrolledToBottom(node) {
  return node.scrollHeight - node.scrollTop - node.clientHeight < 24;
}

function scrollLogsToBottom() {
  const box = $('logs');
  box.scrollTop = box.scrollHeight;
  logState.ownScrollTop = box.scrollTop;
}

function logLine(line) {
  const level = String(line.level ?? 'INFO').toUpperCase();
  const component = String(line.component ?? 'app');
  return el('div', { class: 'log-line', dataset: { level, component } },
    el('span', { class: 'log-time', text: line.time ?? '' }),
    el('span', { class: 'log-level', text: level }),
    el('span', { class: 'log-tag', text: component }),
    el('span', { class: 'log-msg', text: line.message ?? '' }));
}

function appendLogLines(lines) {
  const box = $('logs');
  const fresh = lines.filter((line) => logState.lastSeq == null || line.seq > logState.lastSeq);
  if (fresh.length === 0) return;
  logState.lastSeq = fresh[fresh.length - 1].seq;
  setHidden($('logs-empty'), true);

  const follow = logState.follow;
  const fragment = document.createDocumentFragment();
  for (const line of fresh) fragment.append(logLine(line));
  box.append(fragment);
  trimLogLines(box, follow);
  if (follow) scrollLogsToBottom();
}

/** Keeps at most MAX_LOG_LINES lines; when the user reads older lines, keeps them in place. */
function trimLogLines(box, follow) {
  const lines = box.getElementsByClassName('log-line');
  const excess = lines.length - MAX_LOG_LINES;
  if (excess <= 0) return;
  const before = box.scrollHeight;
  for (let i = 0; i < excess; i += 1) lines[0].remove();
  if (!follow) box.scrollTop -= before - box.scrollHeight;
}

async function pollLogs() {
  try {
    const result = await invoke('recent_logs', { after: logState.lastSeq });
    appendLogLines(Array.isArray(result?.lines) ? result.lines : []);
  } catch {
    // app_status shows the disconnected state; logs simply resume later
  }
}

function setFollow(follow) {
  logState.follow = follow;
  setHidden($('logs-jump'), follow);
}

/**
 * Scroll events also come from the window's own scrolling, and may be handled after the layout
 * changed (a card above grew): those keep following; only a scroll by the user decides.
 */
function onLogsScroll() {
  const box = $('logs');
  if (logState.follow && Math.abs(box.scrollTop - (logState.ownScrollTop ?? -1)) < 2) {
    if (!isScrolledToBottom(box)) scrollLogsToBottom();
    return;
  }
  setFollow(isScrolledToBottom(box));
}

function initLogs() {
  const box = $('logs');
  box.addEventListener('scroll', onLogsScroll, { passive: true });
  // The box shrinks when a card above grows (e.g. an error message appears): keep following.
  new ResizeObserver(() => {
    if (logState.follow) scrollLogsToBottom();
  }).observe(box);
  $('logs-filter').addEventListener('change', (event) => {
    box.dataset.filter = event.target.value;
    if (logState.follow) scrollLogsToBottom();
    else setFollow(isScrolledToBottom(box));
  });
  $('logs-jump').addEventListener('click', () => {
    setFollow(true);
    scrollLogsToBottom();
  });
}

/* =============================================================================================
 * Settings
 * =========================================================================================== */

const settingsState = {
  requested: false, // settings_form was asked for at least once
  loading: false,
  saving: false,
  form: null,
  fields: new Map(), // name -> field controller (see createField)
  groups: [], // { id, section, navItem, fields: [field controller] }
  exportPathTouched: false,
};

/* ---------- values ---------- */

const TRUE_WORDS = /^(1|true|yes|on)$/i;
const FALSE_WORDS = /^(0|false|no|off)$/i;

/** The option a `.env` value selects in a bool/select control (unknown values are kept raw). */
function displayValue(def, value) {
  const raw = value ?? '';
  if (raw === '') return '';
  if (def.input === 'bool') {
    if (TRUE_WORDS.test(raw.trim())) return 'true';
    if (FALSE_WORDS.test(raw.trim())) return 'false';
    return raw;
  }
  if (def.input === 'select') {
    const choices = def.choices ?? [];
    return choices.find((c) => c === raw)
      ?? choices.find((c) => c.toLowerCase() === raw.trim().toLowerCase())
      ?? raw;
  }
  return raw;
}

/** The value to send for a field: for a secret, the typed text, or "" when cleared. */
function currentValue(field) {
  if (field.clear?.checked) return '';
  return field.input.value;
}

function isDirty(field) {
  if (field.def.input === 'secret') return field.clear?.checked || field.input.value !== '';
  return field.input.value !== field.original;
}

/* ---------- building the form ---------- */

function textInput(def, original) {
  const input = el('input', {
    type: 'text', class: 'input', value: original,
    placeholder: hasDefault(def) ? def.default : 'not set',
    autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false',
  });
  if (def.input === 'number') input.setAttribute('inputmode', 'decimal');
  if (def.input === 'path' || def.input === 'number') input.classList.add('input-mono');
  return input;
}

function selectInput(options, original) {
  const select = el('select', { class: 'select' },
    el('option', { value: '', text: '(default)' }),
    options.map((choice) => el('option', { value: choice, text: choice })));
  if (original !== '' && !options.includes(original)) {
    // A value the list does not know (e.g. a locale for the dashboard language): keep it.
    select.append(el('option', { value: original, text: original }));
  }
  select.value = original;
  return select;
}

function secretInput(def) {
  return el('input', {
    type: 'password', class: 'input',
    placeholder: def.is_set ? '•••••• set — type to replace' : 'not set',
    autocomplete: 'new-password', spellcheck: 'false',
  });
}

function buildInput(def, original) {
  switch (def.input) {
    case 'bool': return selectInput(['true', 'false'], original);
    case 'select': return selectInput(def.choices ?? [], original);
    case 'secret': return secretInput(def);
    default: return textInput(def, original);
  }
}

function hasDefault(def) {
  return typeof def.default === 'string' && def.default !== '';
}

function restartsText(def) {
  const restarts = def.restarts ?? [];
  return restarts.length ? `restarts: ${restarts.join(', ')}` : 'applies at next app start';
}

function fieldInfo(def, ids) {
  const defaultText = hasDefault(def)
    ? [el('span', { text: 'default: ' }), el('code', { text: def.default })]
    : [el('span', { text: 'default: not set' })];
  const meta = el('p', { class: 'field-meta' },
    el('span', { class: 'meta-item' }, defaultText),
    el('span', { class: 'meta-item meta-restarts', text: restartsText(def) }));
  const nameRow = el('div', { class: 'field-name-row' },
    el('label', { class: 'field-name', for: ids.input, text: def.name }),
    def.scope === 'local' ? el('span', { class: 'tag', text: 'local only' }) : null,
    def.secret ? el('span', { class: 'tag', text: 'secret' }) : null,
    el('span', { class: 'tag tag-modified', text: 'modified' }));

  const override = def.env_override == null ? null : el('p', { class: 'field-override' },
    el('span', { text: 'Overridden by the environment: ' }),
    el('code', { class: 'selectable', text: def.env_override }));

  return el('div', { class: 'field-info' },
    nameRow,
    def.help ? el('p', { class: 'field-help', id: ids.help, text: def.help }) : null,
    def.expected ? el('p', { class: 'field-expected', text: `Expected: ${def.expected}` }) : null,
    meta,
    override);
}

function createField(def, group) {
  const ids = { input: `field-${def.name}`, error: `error-${def.name}`, help: `help-${def.name}` };
  const original = def.input === 'secret' ? '' : displayValue(def, def.value);
  const input = buildInput(def, original);
  input.id = ids.input;
  input.setAttribute('aria-describedby', `${ids.help} ${ids.error}`);

  const errorEl = el('p', { class: 'field-error', id: ids.error, hidden: true, 'aria-live': 'polite' });
  const clear = def.input === 'secret' && def.is_set
    ? el('input', { type: 'checkbox', id: `clear-${def.name}` }) : null;
  const clearLabel = clear ? el('label', { class: 'check', for: clear.id }, clear,
    el('span', { text: 'Clear (remove the stored value)' })) : null;

  const row = el('div', { class: 'field', id: `row-${def.name}`, dataset: { name: def.name } },
    fieldInfo(def, ids),
    el('div', { class: 'field-control' }, input, clearLabel, errorEl));

  const field = {
    def, group, row, input, clear, errorEl, original,
    error: null, timer: 0, token: 0,
    haystack: `${def.name} ${def.help ?? ''}`.toLowerCase(), // what the search box matches
  };
  input.addEventListener(input.tagName === 'SELECT' ? 'change' : 'input', () => onFieldEdited(field));
  clear?.addEventListener('change', () => onClearToggled(field));
  return field;
}

function createGroup(group) {
  const entry = { id: group.id, fields: [] };
  entry.countEl = el('span', { class: 'muted' });
  entry.section = el('section', {
    class: 'card settings-group', id: `group-${group.id}`, 'aria-labelledby': `group-title-${group.id}`,
  }, el('header', { class: 'group-head' },
    el('h2', { class: 'group-title', id: `group-title-${group.id}`, text: group.title }),
    entry.countEl));

  for (const def of group.fields ?? []) {
    const field = createField(def, entry);
    entry.fields.push(field);
    entry.section.append(field.row);
    settingsState.fields.set(def.name, field);
  }
  // The Auth group holds the gateway's API keys too.
  if (group.fields?.some((def) => def.name === 'PYOCO_HTTP_AUTH_MODE')) {
    entry.section.append(createApiKeysPanel());
  }

  const button = el('button', {
    type: 'button', class: 'group-link', dataset: { group: group.id },
    onclick: () => scrollToGroup(entry),
  }, el('span', { class: 'group-link-title', text: group.title }), el('span', { class: 'group-dot' }));
  entry.navItem = el('li', {}, button);
  entry.navButton = button;
  return entry;
}

function buildSettingsForm(form) {
  settingsState.form = form;
  settingsState.fields = new Map();
  settingsState.groups = (form.groups ?? []).map(createGroup);

  $('settings-groups').replaceChildren(...settingsState.groups.map((g) => g.section));
  $('settings-group-list').replaceChildren(...settingsState.groups.map((g) => g.navItem));
  setText($('settings-env-file'), form.env_file ?? '');
  if (!settingsState.exportPathTouched) $('export-path').value = form.export_path ?? '';

  applySearch();
  updateSettingsSummary();
  updateActiveGroup();
  validateLoadedValues();
}

/** Validates what the `.env` holds now, so a bad value (the reason of a startup error) shows. */
function validateLoadedValues() {
  for (const field of settingsState.fields.values()) {
    if (field.def.input !== 'secret' && field.original !== '') validateField(field);
  }
}

/* ---------- loading ---------- */

function ensureSettingsLoaded() {
  if (settingsState.requested) return;
  settingsState.requested = true;
  loadSettingsForm();
}

async function loadSettingsForm() {
  if (settingsState.loading) return;
  settingsState.loading = true;
  const main = $('settings-main');
  const firstLoad = !settingsState.form;
  setHidden($('settings-loading'), !firstLoad);
  setHidden($('settings-load-error'), true);
  try {
    const form = await invoke('settings_form');
    const scrollTop = main.scrollTop;
    buildSettingsForm(form);
    main.scrollTop = scrollTop;
  } catch (err) {
    setText($('settings-load-error-text'), errorMessage(err));
    setHidden($('settings-load-error'), false);
  } finally {
    settingsState.loading = false;
    setHidden($('settings-loading'), true);
  }
}

/* ---------- editing & validation ---------- */

function onFieldEdited(field) {
  if (field.def.input === 'secret' && field.input.value !== '' && field.clear) {
    field.clear.checked = false;
  }
  clearSuccessResult();
  scheduleValidation(field);
  updateSettingsSummary();
  if (field.def.name === 'PYOCO_HTTP_AUTH_MODE') updateApiKeysHint();
}

/* ---------- API keys (Settings → Auth) ---------- */

const apiKeysState = { keys: null, panel: null, revokeArmed: null };

function createApiKeysPanel() {
  const tenant = el('input', {
    type: 'text', id: 'api-key-tenant', class: 'input', maxlength: 64, spellcheck: 'false',
    placeholder: 'tenant, e.g. demo', 'aria-label': 'Tenant of the new key',
  });
  tenant.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') { event.preventDefault(); createApiKey(); }
  });
  const panel = el('div', { class: 'api-keys', id: 'api-keys' },
    el('h3', { class: 'api-keys-title', text: 'API keys' }),
    el('p', {
      class: 'field-help',
      text: 'Keys for the gateway when PYOCO_HTTP_AUTH_MODE is api_key, hashed with '
        + 'PYOCO_AUTH_PEPPER (save the pepper first). A key sees only its tenant\'s runs. '
        + 'pyoco-server-admin manages the same keys.',
    }),
    el('p', { class: 'api-keys-hint', id: 'api-keys-hint', role: 'status', hidden: true }),
    el('div', { class: 'api-keys-create' },
      tenant,
      el('button', { type: 'button', class: 'btn btn-primary', id: 'api-key-create', text: 'Create key', onclick: createApiKey }),
      el('button', { type: 'button', class: 'btn btn-ghost', id: 'api-keys-refresh', text: 'Refresh', onclick: loadApiKeys })),
    el('div', { class: 'api-key-created', id: 'api-key-created', hidden: true }),
    el('p', { class: 'result-line', id: 'api-keys-result', role: 'status' }),
    el('table', { class: 'api-keys-table', id: 'api-keys-table' }));
  apiKeysState.panel = panel;
  loadApiKeys();
  return panel;
}

async function loadApiKeys() {
  try {
    const answer = await invoke('list_api_keys');
    apiKeysState.keys = answer.keys ?? [];
    renderApiKeys();
  } catch (err) {
    apiKeysState.keys = null;
    renderApiKeys();
    showResult($('api-keys-result'), errorMessage(err), { error: true });
  }
  updateApiKeysHint();
}

function formatTime(seconds) {
  return seconds == null ? '' : new Date(seconds * 1000).toLocaleString();
}

function renderApiKeys() {
  const table = $('api-keys-table');
  if (!table) return;
  const keys = apiKeysState.keys ?? [];
  if (keys.length === 0) {
    table.replaceChildren(el('caption', { class: 'muted', text: apiKeysState.keys ? 'No API keys yet.' : '' }));
    return;
  }
  const rows = keys.map((key) => {
    const revoke = key.revoked_at == null
      ? el('button', {
        type: 'button', class: 'btn btn-sm', text: 'Revoke', dataset: { keyId: key.key_id },
        onclick: (event) => revokeApiKey(key.key_id, event.currentTarget),
      })
      : null;
    return el('tr', { dataset: { keyId: key.key_id } },
      el('td', { class: 'mono', text: key.key_id }),
      el('td', { text: key.tenant_id }),
      el('td', { text: formatTime(key.created_at) }),
      el('td', { class: key.revoked_at == null ? 'key-active' : 'key-revoked',
        text: key.revoked_at == null ? 'active' : `revoked ${formatTime(key.revoked_at)}` }),
      el('td', {}, revoke));
  });
  table.replaceChildren(
    el('thead', {}, el('tr', {},
      ...['Key id', 'Tenant', 'Created', 'State', ''].map((h) => el('th', { text: h })))),
    el('tbody', {}, rows));
}

/** Switching the mode to api_key with no active key: say to create one first. */
function updateApiKeysHint() {
  const hint = $('api-keys-hint');
  if (!hint) return;
  const mode = settingsState.fields.get('PYOCO_HTTP_AUTH_MODE')?.input.value;
  const active = (apiKeysState.keys ?? []).filter((k) => k.revoked_at == null).length;
  const show = mode === 'api_key' && apiKeysState.keys != null && active === 0;
  setText(hint, show
    ? 'Create a key first: with api_key every request to the gateway needs one, and there is none yet.'
    : '');
  hint.hidden = !show;
}

async function createApiKey() {
  const tenant = $('api-key-tenant').value.trim();
  const button = $('api-key-create');
  if (!tenant) {
    showResult($('api-keys-result'), 'Enter the tenant the key is for (e.g. demo).', { error: true });
    return;
  }
  button.disabled = true;
  try {
    const made = await invoke('create_api_key', { tenant });
    const keyInput = el('input', {
      type: 'text', class: 'input input-mono', id: 'api-key-value', readonly: true, value: made.api_key,
      'aria-label': 'The new API key',
    });
    const copy = el('button', {
      type: 'button', class: 'btn btn-sm', id: 'api-key-copy', text: 'Copy',
      onclick: () => copyText(keyInput.value, copy),
    });
    const box = $('api-key-created');
    box.replaceChildren(
      el('p', { text: `Key for tenant ${made.tenant_id}, shown only now: copy it and keep it secret.` }),
      el('div', { class: 'api-key-value' }, keyInput, copy));
    box.hidden = false;
    $('api-key-tenant').value = '';
    showResult($('api-keys-result'), `Created key ${made.key_id}.`);
    await loadApiKeys();
  } catch (err) {
    showResult($('api-keys-result'), errorMessage(err), { error: true });
  } finally {
    button.disabled = false;
  }
}

/** First click arms the button ("Click to confirm"), a second one within 5 s revokes. */
async function revokeApiKey(keyId, button) {
  if (apiKeysState.revokeArmed !== keyId) {
    apiKeysState.revokeArmed = keyId;
    setText(button, 'Click to confirm');
    setTimeout(() => {
      if (apiKeysState.revokeArmed === keyId) {
        apiKeysState.revokeArmed = null;
        if (button.isConnected) setText(button, 'Revoke');
      }
    }, 5000);
    return;
  }
  apiKeysState.revokeArmed = null;
  button.disabled = true;
  try {
    await invoke('revoke_api_key', { keyId });
    $('api-key-created').hidden = true;
    showResult($('api-keys-result'), `Revoked key ${keyId}: every gateway refuses it now.`);
    await loadApiKeys();
  } catch (err) {
    button.disabled = false;
    showResult($('api-keys-result'), errorMessage(err), { error: true });
  }
}

function onClearToggled(field) {
  if (field.clear.checked) field.input.value = '';
  field.input.disabled = field.clear.checked;
  clearSuccessResult();
  scheduleValidation(field);
  updateSettingsSummary();
}

function scheduleValidation(field) {
  clearTimeout(field.timer);
  field.token += 1; // any answer still on its way is now stale
  field.timer = setTimeout(() => validateField(field), VALIDATE_DEBOUNCE_MS);
}

async function validateField(field) {
  const token = ++field.token;
  const value = currentValue(field);
  if (value === '') { // empty = unset: always valid
    setFieldError(field, null);
    return;
  }
  try {
    const result = await invoke('validate_setting', { name: field.def.name, value });
    if (token === field.token) setFieldError(field, result?.error ?? null);
  } catch {
    // could not validate (core unreachable): saving validates again
  }
}

function setFieldError(field, message) {
  field.error = message || null;
  setText(field.errorEl, field.error ?? '');
  setHidden(field.errorEl, !field.error);
  setAttr(field.input, 'aria-invalid', field.error ? 'true' : null);
  field.row.classList.toggle('is-invalid', Boolean(field.error));
  updateSettingsSummary();
}

/* ---------- footer: dirty count, save, discard ---------- */

function dirtyFields() {
  return [...settingsState.fields.values()].filter(isDirty);
}

function invalidFields() {
  return [...settingsState.fields.values()].filter((f) => f.error);
}

function updateSettingsSummary() {
  const dirty = dirtyFields();
  const invalid = invalidFields();

  for (const field of settingsState.fields.values()) {
    field.row.classList.toggle('is-dirty', isDirty(field));
  }
  for (const group of settingsState.groups) {
    setAttr(group.navButton, 'data-dirty', group.fields.some(isDirty) ? 'true' : null);
    setAttr(group.navButton, 'data-invalid', group.fields.some((f) => f.error) ? 'true' : null);
  }

  let text = 'No unsaved changes';
  if (dirty.length) text = `${dirty.length} unsaved change${dirty.length === 1 ? '' : 's'}`;
  if (invalid.length) text += ` · ${invalid.length} invalid`;
  setText($('dirty-count'), text);
  $('dirty-count').classList.toggle('has-changes', dirty.length > 0);

  $('save-settings').disabled = settingsState.saving || dirty.length === 0 || invalid.length > 0;
  $('discard-settings').disabled = settingsState.saving || dirty.length === 0;
}

function showResult(node, message, { error = false, notes = [] } = {}) {
  // (the ' ' between the spans only matters for textContent: flex layout drops it)
  node.replaceChildren(
    el('span', { text: message }),
    ...notes.flatMap((note) => [' ', el('span', { class: 'result-note', text: note })]));
  node.classList.toggle('error', error);
  node.classList.toggle('success', !error && message !== '');
}

function clearSuccessResult() {
  const node = $('save-result');
  if (node.classList.contains('success')) showResult(node, '');
}

function describeSave(result) {
  const restarted = result.restarted ?? [];
  const parts = [`Saved to ${result.env_file}.`];
  parts.push(restarted.length ? `Restarted: ${restarted.join(', ')}.` : 'Nothing to restart.');
  return parts.join(' ');
}

async function saveSettings() {
  const dirty = dirtyFields();
  if (settingsState.saving || dirty.length === 0 || invalidFields().length) return;
  const changes = Object.fromEntries(dirty.map((f) => [f.def.name, currentValue(f)]));

  settingsState.saving = true;
  $('save-settings').textContent = 'Saving…';
  updateSettingsSummary();
  try {
    const result = await invoke('save_settings', { changes });
    showResult($('save-result'), describeSave(result), { notes: result.notes ?? [] });
    await loadSettingsForm();
  } catch (err) {
    showResult($('save-result'), errorMessage(err), { error: true });
    showSaveFieldErrors(errorFields(err));
  } finally {
    settingsState.saving = false;
    $('save-settings').textContent = 'Save';
    updateSettingsSummary();
  }
}

function showSaveFieldErrors(fields) {
  let first = null;
  for (const [name, message] of Object.entries(fields)) {
    const field = settingsState.fields.get(name);
    if (!field) continue;
    field.token += 1; // a pending validation must not hide the save's verdict
    setFieldError(field, message);
    if (!first) first = field;
  }
  first?.row.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
}

function discardChanges() {
  if (!settingsState.form) return;
  const scrollTop = $('settings-main').scrollTop;
  for (const field of settingsState.fields.values()) clearTimeout(field.timer);
  buildSettingsForm(settingsState.form);
  $('settings-main').scrollTop = scrollTop;
  showResult($('save-result'), '');
}

/* ---------- search & group navigation ---------- */

function applySearch() {
  const terms = $('settings-search').value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  let anyVisible = false;
  for (const group of settingsState.groups) {
    let visible = 0;
    for (const field of group.fields) {
      const match = terms.every((term) => field.haystack.includes(term));
      setHidden(field.row, !match);
      if (match) visible += 1;
    }
    setHidden(group.section, visible === 0);
    setHidden(group.navItem, visible === 0);
    setText(group.countEl, countText(visible, group.fields.length));
    if (visible > 0) anyVisible = true;
  }
  setHidden($('settings-empty'), anyVisible || !settingsState.form);
  updateActiveGroup();
}

function countText(visible, total) {
  const noun = `setting${total === 1 ? '' : 's'}`;
  return visible === total ? `${total} ${noun}` : `${visible} of ${total} ${noun}`;
}

function scrollToGroup(group) {
  group.section.scrollIntoView({ block: 'start', behavior: 'smooth' });
  group.section.querySelector('input, select')?.focus({ preventScroll: true });
}

/** Highlights, in the group list, the group at the top of the scrolled settings. */
function updateActiveGroup() {
  const main = $('settings-main');
  const readingLine = Math.min(main.clientHeight * 0.25, 160);
  const top = main.getBoundingClientRect().top + readingLine;
  let active = null;
  for (const group of settingsState.groups) {
    if (group.section.hidden) continue;
    if (!active || group.section.getBoundingClientRect().top <= top) active = group;
  }
  const atBottom = main.scrollTop > 0 && main.scrollTop + main.clientHeight >= main.scrollHeight - 4;
  if (atBottom) { // the last groups can never reach the reading line
    const shown = settingsState.groups.filter((g) => !g.section.hidden);
    active = shown[shown.length - 1] ?? active;
  }
  for (const group of settingsState.groups) {
    setAttr(group.navButton, 'aria-current', group === active ? 'true' : null);
  }
}

/* ---------- export ---------- */

async function exportSettings(event) {
  event.preventDefault();
  const button = $('export-button');
  const path = $('export-path').value.trim();
  if (button.disabled) return;
  if (!path) {
    showResult($('export-result'), 'Enter the path of the file to write.', { error: true });
    return;
  }
  button.disabled = true;
  try {
    const result = await invoke('export_settings', { path });
    const count = result.count ?? 0;
    // What a server should not run with (auth off, no pepper, any module callable).
    const warnings = (result.warnings ?? []).map((w) => `Warning: ${w}.`);
    showResult($('export-result'),
      `Exported ${count} setting${count === 1 ? '' : 's'} to ${result.path ?? path}`,
      { notes: warnings });
  } catch (err) {
    showResult($('export-result'), errorMessage(err), { error: true });
  } finally {
    button.disabled = false;
  }
}

function initSettings() {
  $('settings-search').addEventListener('input', applySearch);
  $('settings-search').addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && event.target.value) {
      event.target.value = '';
      applySearch();
    }
  });
  $('settings-main').addEventListener('scroll', updateActiveGroup, { passive: true });
  $('settings-retry').addEventListener('click', loadSettingsForm);
  $('save-settings').addEventListener('click', saveSettings);
  $('discard-settings').addEventListener('click', discardChanges);
  $('export-form').addEventListener('submit', exportSettings);
  $('export-path').addEventListener('input', () => { settingsState.exportPathTouched = true; });
  document.addEventListener('keydown', (event) => {
    const saveShortcut = (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 's';
    if (saveShortcut && !$('view-settings').hidden) {
      event.preventDefault();
      saveSettings();
    }
  });
}

/* =============================================================================================
 * Start
 * =========================================================================================== */

function showNotInApp() {
  setHidden($('no-tauri'), false);
  setHidden($('view-status'), true);
  setHidden($('view-settings'), true);
  for (const button of document.querySelectorAll('.app-header button')) button.disabled = true;
  const badge = $('overall-state');
  setAttr(badge, 'data-state', 'unknown');
  setText(badge, 'Not connected');
}

async function main() {
  mountStaticIcons();
  tauriInvoke = await waitForTauri(TAURI_WAIT_MS);
  if (!tauriInvoke) {
    showNotInApp();
    return;
  }
  initStatus();
  initLogs();
  initSettings();
  initNavigation();
  startPolling(pollStatus, STATUS_POLL_MS);
  startPolling(pollLogs, LOGS_POLL_MS);
}

main();
