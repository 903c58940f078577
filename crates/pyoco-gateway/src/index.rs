//! The run index: every run of the runs bucket in memory, kept current by one KV watch, so
//! `GET /runs` and `GET /metrics` answer without reading the bucket.
//!
//! Why: 0.5.1 reads every snapshot on every list or metrics call (§14-19; 1.25 s for one
//! `GET /runs?limit=100` over 6,000 runs). Here a page costs O(log n + runs walked) and the
//! metrics O(statuses + runs updated today).
//!
//! What it keeps per run, and nothing more: the `GET /runs` summary item (only the summary keys
//! present in the snapshot, §3.2) as a shared template plus the values of its holes (run id,
//! times: [`summary`]), the fields the list filters on
//! (`status`, `flow_name`, `tag`, `workflow_yaml_sha256`, `schedule_id`, `tenant_id`), the status label the
//! metrics count by and the KV revision it was read at. Repeated strings (statuses, flows,
//! tags, tenants, digests, summary templates) are shared, and canonical UUID keys are held as
//! their 16 bytes ([`run_key`]). After each load the B-tree is rebuilt full and freed memory is
//! given back to the system. Runs are ordered by `(updated_at, run_id)` in a B-tree —
//! the list order and the cursor's coordinates — and per-status totals change with every write.
//!
//! How it stays current: one task per gateway, started once NATS is ready, follows
//! `watch_all_with_history` on the runs bucket: first the latest value of every key, then every
//! change. A change is applied only when its revision is newer than the one held, so the
//! submit handler's own insert (read-your-writes, [`RunIndex::insert_submitted`]) and the watch
//! never move a run backwards. When the watch ends or fails, or the client reconnects to NATS
//! (the server may have lost or replaced its data), a new watch starts a new *generation*: its
//! history replaces whatever the old one said, and once it has caught up the runs it did not
//! mention are dropped. Meanwhile the previous contents keep answering.
//!
//! A snapshot that is not a JSON object is skipped with a warning, and removes the run it
//! replaced: one bad record never fails a list or a scrape (§14-22).

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
    fmt,
    num::NonZeroU32,
    ops::Bound,
    sync::{atomic::Ordering as AtomicOrdering, Arc, Once, PoisonError, RwLock},
    time::Duration,
};

use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt;
use pyoco_store::{SharedStore, Store};
use pyoco_wire::{python, RunsCursor, RUN_SUMMARY_KEYS};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::error::ApiError;

mod run_key;
mod summary;

use run_key::RunKey;
use summary::{Fill, HoleValues};

/// How long a request waits for the first load before answering `503 IndexLoading`.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(5);

/// How often the watch task checks for a reconnect (a local counter, no NATS traffic).
const TICK: Duration = Duration::from_secs(1);

/// The in-memory index of every run. Owned by [`crate::AppState`]; dropping it stops its task.
pub(crate) struct RunIndex {
    shared: Arc<Shared>,
    source: SharedStore,
    started: Once,
    /// Never sent on: when the index is dropped, the task sees the channel close and ends.
    stop: watch::Sender<()>,
}

impl fmt::Debug for RunIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.read();
        f.debug_struct("RunIndex")
            .field("runs", &state.slots.len())
            .field("generation", &state.generation)
            .field("caught_up", &*self.shared.caught_up.borrow())
            .finish()
    }
}

struct Shared {
    state: RwLock<IndexState>,
    /// `true` once a watch has delivered its whole history (stays `true` during a rebuild).
    caught_up: watch::Sender<bool>,
    /// The runs someone watches (`GET /runs/{id}/watch`), each with the last change the
    /// bucket watch delivered for it: every watcher of the gateway shares the index's one KV
    /// watch instead of owning a JetStream consumer.
    watched: std::sync::Mutex<HashMap<String, watch::Sender<Option<KeyChange>>>>,
}

/// One revision of a run's key: its value, or `None` for a delete or purge.
#[derive(Debug, Clone)]
pub(crate) struct KeyChange {
    pub revision: u64,
    pub value: Option<bytes::Bytes>,
}

/// The changes of one run's key as the index's watch delivers them, from subscription on
/// (the latest only: a watcher that falls behind skips to the newest revision). Dropping the
/// last subscription of a key forgets the key.
pub(crate) struct KeySubscription {
    rx: Option<watch::Receiver<Option<KeyChange>>>,
    run_id: String,
    shared: Arc<Shared>,
}

impl KeySubscription {
    /// The next change after the one last seen; `None` when the index is gone.
    pub(crate) async fn changed(&mut self) -> Option<KeyChange> {
        let rx = self.rx.as_mut()?;
        rx.changed().await.ok()?;
        rx.borrow_and_update().clone()
    }
}

impl Drop for KeySubscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if watched
            .get(&self.run_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            watched.remove(&self.run_id);
        }
    }
}

impl RunIndex {
    /// An index over the runs bucket of `source`. Its task starts now when called inside a
    /// tokio runtime, else with the first request; it waits for the store to be ready.
    pub(crate) fn new(source: SharedStore) -> RunIndex {
        let index = RunIndex {
            shared: Arc::new(Shared {
                state: RwLock::new(IndexState::default()),
                caught_up: watch::Sender::new(false),
                watched: std::sync::Mutex::new(HashMap::new()),
            }),
            source,
            started: Once::new(),
            stop: watch::Sender::new(()),
        };
        index.ensure_started();
        index
    }

    /// Follow the changes of run `run_id` from now on.
    pub(crate) fn subscribe(&self, run_id: &str) -> KeySubscription {
        self.ensure_started();
        let rx = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(run_id.to_string())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe();
        KeySubscription {
            rx: Some(rx),
            run_id: run_id.to_string(),
            shared: Arc::clone(&self.shared),
        }
    }

    fn ensure_started(&self) {
        if self.started.is_completed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.call_once(|| {
            runtime.spawn(maintain(
                self.shared.clone(),
                self.source.clone(),
                self.stop.subscribe(),
            ));
        });
    }

    /// Wait up to `wait` for the first complete load; `503 nats unavailable: IndexLoading` if
    /// it has not finished by then.
    pub(crate) async fn ready(&self, wait: Duration) -> Result<(), ApiError> {
        self.ensure_started();
        let mut caught_up = self.shared.caught_up.subscribe();
        let ready = tokio::time::timeout(wait, caught_up.wait_for(|ready| *ready))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if ready {
            return Ok(());
        }
        Err(ApiError::Unavailable {
            kind: "IndexLoading".to_string(),
            message: format!("the run index is still loading the runs bucket after {wait:?}"),
        })
    }

    /// Add the snapshot a submit just created at `revision`, so the submitter's next list sees
    /// it even before the watch delivers it. A no-op when the watch is already past `revision`.
    pub(crate) fn insert_submitted(&self, run_id: &str, snapshot: &[u8], revision: u64) {
        let run = match IndexedFields::parse(snapshot) {
            Ok(fields) => ParsedRun::from_fields(fields),
            Err(err) => {
                tracing::warn!(%run_id, "not indexing the submitted snapshot: {err}");
                return;
            }
        };
        let mut state = self.shared.write();
        if revision <= state.high_water {
            return;
        }
        let generation = state.generation;
        state.put(run_id, revision, generation, run);
    }

    /// One page of runs, newest first: the runs matching `query`, at most `query.limit`, each
    /// turned into a `T` by `item` (called in page order while the index is read-locked, so
    /// keep it short). `next_cursor` names the last item when more runs match after it.
    ///
    /// Cost: O(log n) to find the start, then one step per run walked; filters without an
    /// index are checked on the way, and the walk stops at the first run past the page.
    pub(crate) fn page<T>(
        &self,
        query: &PageQuery<'_>,
        mut item: impl FnMut(RunView<'_>) -> T,
    ) -> Page<T> {
        let mut page = Page {
            items: Vec::new(),
            next_cursor: None,
        };
        // Python compares with NaN like this: nothing is after a NaN cursor, nothing is after
        // a NaN `updated_after`.
        if query.cursor.is_some_and(|c| c.updated_at.is_nan())
            || query.updated_after.is_some_and(f64::is_nan)
        {
            return page;
        }
        let upper = match query.cursor {
            None => Bound::Unbounded,
            // (u, r, key) < (cu, cr, "") exactly when (u, r) < (cu, cr).
            Some(cursor) => Bound::Excluded(SortKey::first_at(cursor.updated_at, &cursor.run_id)),
        };
        let state = self.shared.read();
        let Some(filter) = Filter::resolve(query, &state.symbols) else {
            // A filter value no run has.
            return page;
        };
        let mut last: Option<&SortKey> = None;
        for (sort, run) in state.order.range((Bound::Unbounded, upper)).rev() {
            if let Some(after) = query.updated_after {
                let updated_at = sort.updated_at.0;
                match updated_at.partial_cmp(&after) {
                    Some(Ordering::Greater) => {}
                    // NaN is never after anything, but sorts first: keep walking.
                    None => continue,
                    Some(_) => break,
                }
            }
            if !filter.matches(run) {
                continue;
            }
            if page.items.len() == query.limit {
                page.next_cursor = last.map(SortKey::cursor);
                break;
            }
            page.items.push(item(RunView {
                sort,
                run,
                template: state.templates.name(run.template),
            }));
            last = Some(sort);
        }
        page
    }

    /// Runs per status label, sorted by label: all of them, and those whose `updated_at` is in
    /// `today` (epoch seconds, start inclusive, end exclusive).
    pub(crate) fn status_counts(&self, today: std::ops::Range<f64>) -> StatusCounts {
        let state = self.shared.read();
        let total: Vec<(Sym, u64)> = state.status_totals.iter().map(|(l, n)| (*l, *n)).collect();
        // There are few labels: a short list beats a map.
        let mut today_counts: Vec<(Sym, u64)> = Vec::new();
        let from = SortKey::first_at(today.start, "");
        for (sort, run) in state.order.range(from..) {
            if sort.updated_at.0.partial_cmp(&today.end) != Some(Ordering::Less) {
                break;
            }
            match today_counts.iter_mut().find(|(l, _)| *l == run.label) {
                Some((_, n)) => *n += 1,
                None => today_counts.push((run.label, 1)),
            }
        }
        let named = |counts: Vec<(Sym, u64)>| {
            let mut named: Vec<(String, u64)> = counts
                .into_iter()
                .map(|(label, n)| (state.symbols.name(label).to_string(), n))
                .collect();
            named.sort_unstable();
            named
        };
        StatusCounts {
            total: named(total),
            today: named(today_counts),
        }
    }

    /// Number of runs indexed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.read().slots.len()
    }
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start a new generation (a new watch); returns its number.
    fn begin_generation(&self) -> u64 {
        let mut state = self.write();
        state.generation += 1;
        state.high_water = 0;
        state.generation
    }

    /// Apply one watch entry of `generation`.
    /// Hand `entry` to the watchers of its run, if any (one map lookup otherwise).
    fn notify_watchers(&self, entry: &Entry) {
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = watched.get(&entry.key) {
            tx.send_replace(Some(KeyChange {
                revision: entry.revision,
                value: matches!(entry.operation, Operation::Put).then(|| entry.value.clone()),
            }));
        }
    }

    fn apply(&self, entry: &Entry, generation: u64) {
        let parsed = match entry.operation {
            Operation::Put => match IndexedFields::parse(&entry.value) {
                Ok(fields) => Some(ParsedRun::from_fields(fields)),
                Err(err) => {
                    tracing::warn!(
                        run_id = %entry.key,
                        revision = entry.revision,
                        "skipping a corrupt run snapshot: {err}"
                    );
                    None
                }
            },
            Operation::Delete | Operation::Purge => None,
        };
        let mut state = self.write();
        if state.generation != generation {
            return;
        }
        state.high_water = state.high_water.max(entry.revision);
        match parsed {
            Some(run) => state.put(&entry.key, entry.revision, generation, run),
            None => state.forget(&entry.key, entry.revision, generation),
        }
    }

    /// `generation` has delivered its whole history: drop what it did not mention.
    fn caught_up(&self, generation: u64) {
        let mut state = self.write();
        if state.generation != generation {
            return;
        }
        let dropped = state.sweep(generation);
        state.compact();
        let runs = state.slots.len();
        drop(state);
        if dropped > 0 {
            tracing::info!(
                dropped,
                "runs gone from the bucket were dropped from the index"
            );
        }
        tracing::debug!(runs, generation, "run index caught up");
        self.caught_up.send_replace(true);
        return_freed_memory();
    }
}

/// What `GET /runs` asks the index for. Filter values are compared exactly; `None` means no
/// filter.
#[derive(Debug, Default, Clone)]
pub(crate) struct PageQuery<'a> {
    pub status: Option<&'a str>,
    pub flow_name: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub workflow_yaml_sha256: Option<&'a str>,
    /// Runs a schedule dispatched (`schedule_id`, pyoco-server 0.7).
    pub schedule_id: Option<&'a str>,
    /// The caller's tenant when it has one (§3.1): other tenants' runs are left out.
    pub tenant_id: Option<&'a str>,
    /// Only runs with `updated_at` strictly greater.
    pub updated_after: Option<f64>,
    /// Only runs strictly after this position in the list order.
    pub cursor: Option<&'a RunsCursor>,
    pub limit: usize,
}

/// A [`PageQuery`]'s filters as symbols: comparing them is comparing integers.
struct Filter {
    status: Option<Sym>,
    flow_name: Option<Sym>,
    tag: Option<Sym>,
    workflow_yaml_sha256: Option<Sym>,
    schedule_id: Option<Sym>,
    tenant_id: Option<Sym>,
}

impl Filter {
    /// `None` when a filter names a string no run has: nothing can match.
    fn resolve(query: &PageQuery<'_>, symbols: &Symbols) -> Option<Filter> {
        let sym = |want: Option<&str>| match want {
            None => Some(None),
            Some(want) => symbols.lookup(want).map(Some),
        };
        Some(Filter {
            status: sym(query.status)?,
            flow_name: sym(query.flow_name)?,
            tag: sym(query.tag)?,
            workflow_yaml_sha256: sym(query.workflow_yaml_sha256)?,
            schedule_id: sym(query.schedule_id)?,
            tenant_id: sym(query.tenant_id)?,
        })
    }

    fn matches(&self, run: &IndexedRun) -> bool {
        fn same(want: Option<Sym>, have: Option<Sym>) -> bool {
            want.is_none_or(|want| have == Some(want))
        }
        self.status
            .is_none_or(|want| run.status_is_label && run.label == want)
            && same(self.flow_name, run.flow_name)
            && same(self.tag, run.tag)
            && same(self.workflow_yaml_sha256, run.workflow_yaml_sha256)
            && same(self.schedule_id, run.schedule_id)
            && same(self.tenant_id, run.tenant_id)
    }
}

/// A page of [`RunIndex::page`].
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// Set only when more matching runs follow the last item.
    pub next_cursor: Option<RunsCursor>,
}

/// Result of [`RunIndex::status_counts`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusCounts {
    pub total: Vec<(String, u64)>,
    pub today: Vec<(String, u64)>,
}

/// One run as the index holds it: 56 bytes, nothing on the heap of its own.
#[derive(Debug)]
struct IndexedRun {
    /// The values of the summary template's holes (see [`summary`]).
    values: HoleValues,
    /// The `GET /runs` summary item and `include=times` keys, as a template in
    /// [`IndexState::templates`].
    template: Sym,
    /// `str(status or "UNKNOWN")`, the metrics label.
    label: Sym,
    flow_name: Option<Sym>,
    tag: Option<Sym>,
    workflow_yaml_sha256: Option<Sym>,
    schedule_id: Option<Sym>,
    tenant_id: Option<Sym>,
    /// Whether `status` is the string `label` (a `status` filter can only match then).
    status_is_label: bool,
}

impl IndexedRun {
    fn symbols(&self) -> impl Iterator<Item = Sym> {
        [
            Some(self.label),
            self.flow_name,
            self.tag,
            self.workflow_yaml_sha256,
            self.schedule_id,
            self.tenant_id,
        ]
        .into_iter()
        .flatten()
    }
}

/// A run of a page, as [`RunIndex::page`] shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunView<'a> {
    sort: &'a SortKey,
    run: &'a IndexedRun,
    template: &'a [u8],
}

impl RunView<'_> {
    /// The KV key of the run.
    pub(crate) fn key(&self) -> String {
        self.sort.key.to_string()
    }

    fn fill(&self) -> Fill<'_> {
        Fill {
            run_id: &self.sort.run_id,
            updated_at: self.sort.updated_at.0,
            values: &self.run.values,
        }
    }

    /// Append the summary item as JSON to `out`.
    pub(crate) fn write_summary(&self, out: &mut Vec<u8>) {
        summary::write_summary(self.template, &self.fill(), out);
    }

    /// Append the summary item with its `start_time` and `end_time` (those present) to `out`.
    pub(crate) fn write_summary_with_times(&self, out: &mut Vec<u8>) {
        summary::write_summary_with_times(self.template, &self.fill(), out);
    }
}

/// Seconds as a totally ordered key: `-0.0` is `0.0` (Python compares them equal) and every
/// NaN is the positive one, which sorts after `+inf` and so before every run in the list.
#[derive(Debug, Clone, Copy)]
struct Timestamp(f64);

impl Timestamp {
    fn new(seconds: f64) -> Timestamp {
        if seconds == 0.0 {
            Timestamp(0.0)
        } else if seconds.is_nan() {
            Timestamp(f64::NAN)
        } else {
            Timestamp(seconds)
        }
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Position of a run in the list: `(float(updated_at or 0), str(run_id or ""))` as 0.5.1 sorts
/// (descending), then the KV key, so two keys whose snapshots share both never collide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    updated_at: Timestamp,
    run_id: RunKey,
    key: RunKey,
}

impl SortKey {
    /// The smallest key at `(updated_at, run_id)`.
    fn first_at(updated_at: f64, run_id: &str) -> SortKey {
        SortKey {
            updated_at: Timestamp::new(updated_at),
            run_id: RunKey::new(run_id),
            key: RunKey::new(""),
        }
    }

    fn cursor(&self) -> RunsCursor {
        RunsCursor {
            updated_at: self.updated_at.0,
            run_id: self.run_id.to_string(),
        }
    }
}

/// Where a key sits in the order and which write it reflects.
#[derive(Debug)]
struct Slot {
    revision: u64,
    generation: u64,
    updated_at: Timestamp,
    /// The snapshot's `run_id` when it is not the key (it always is, for sane writers).
    run_id: Option<RunKey>,
}

impl Slot {
    fn sort_key(&self, key: &RunKey) -> SortKey {
        SortKey {
            updated_at: self.updated_at,
            run_id: self.run_id.clone().unwrap_or_else(|| key.clone()),
            key: key.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct IndexState {
    slots: HashMap<RunKey, Slot>,
    order: BTreeMap<SortKey, IndexedRun>,
    status_totals: HashMap<Sym, u64>,
    symbols: Symbols,
    /// The summary templates runs use (see [`summary`]).
    templates: Symbols<[u8]>,
    /// The current watch; entries of older generations are replaced whatever their revision.
    generation: u64,
    /// Highest revision the current watch delivered: a submit insert at or below it is
    /// already known to the watch (delivered, or superseded by a later write it will deliver).
    high_water: u64,
}

impl IndexState {
    fn is_newer(&self, key: &RunKey, revision: u64, generation: u64) -> bool {
        self.slots
            .get(key)
            .is_none_or(|slot| slot.generation < generation || revision > slot.revision)
    }

    fn put(&mut self, key: &str, revision: u64, generation: u64, run: ParsedRun) {
        let key = RunKey::new(key);
        if !self.is_newer(&key, revision, generation) {
            return;
        }
        self.remove(&key);
        let slot = Slot {
            revision,
            generation,
            updated_at: run.updated_at,
            run_id: (run.run_id != key).then_some(run.run_id),
        };
        let label = self.symbols.acquire(&run.label);
        *self.status_totals.entry(label).or_default() += 1;
        let template = self.templates.acquire(&run.template);
        let mut acquire = |name: Option<String>| name.map(|name| self.symbols.acquire(&name));
        let indexed = IndexedRun {
            values: run.values,
            template,
            label,
            flow_name: acquire(run.flow_name),
            tag: acquire(run.tag),
            workflow_yaml_sha256: acquire(run.workflow_yaml_sha256),
            schedule_id: acquire(run.schedule_id),
            tenant_id: acquire(run.tenant_id),
            status_is_label: run.status_is_label,
        };
        self.order.insert(slot.sort_key(&key), indexed);
        self.slots.insert(key, slot);
    }

    /// The key was deleted, purged, or now holds something unreadable.
    fn forget(&mut self, key: &str, revision: u64, generation: u64) {
        let key = RunKey::new(key);
        if self.slots.contains_key(&key) && self.is_newer(&key, revision, generation) {
            self.remove(&key);
        }
    }

    /// Remove `key` if it is indexed.
    fn remove(&mut self, key: &RunKey) {
        let Some((key, slot)) = self.slots.remove_entry(key) else {
            return;
        };
        if let Some(run) = self.order.remove(&slot.sort_key(&key)) {
            self.templates.release(run.template);
            if let Some(n) = self.status_totals.get_mut(&run.label) {
                *n -= 1;
                if *n == 0 {
                    self.status_totals.remove(&run.label);
                }
            }
            for sym in run.symbols() {
                self.symbols.release(sym);
            }
        }
    }

    /// After a load: the B-tree rebuilt from its sorted runs, so its nodes are full (one write
    /// at a time in key order leaves them about half full), and the maps at their size.
    fn compact(&mut self) {
        self.order = std::mem::take(&mut self.order).into_iter().collect();
        self.slots.shrink_to_fit();
        self.status_totals.shrink_to_fit();
        self.symbols.shrink_to_fit();
        self.templates.shrink_to_fit();
    }

    /// Drop every run older generations put here and `generation` did not confirm.
    fn sweep(&mut self, generation: u64) -> usize {
        let stale: Vec<RunKey> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.generation < generation)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            self.remove(key);
        }
        stale.len()
    }
}

/// A string of [`Symbols`]: statuses, flows, tags, tenants and digests repeat across runs, so
/// each run holds 4-byte symbols instead of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sym(NonZeroU32);

impl Sym {
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// The strings (or byte strings) runs use, counted, so one no run uses any more is forgotten.
#[derive(Debug)]
struct Symbols<T: ?Sized = str> {
    ids: HashMap<Arc<T>, Sym>,
    /// Name and number of uses per symbol; `None` while a symbol is free.
    names: Vec<Option<(Arc<T>, u32)>>,
    free: Vec<Sym>,
}

impl<T: ?Sized> Default for Symbols<T> {
    fn default() -> Self {
        Symbols {
            ids: HashMap::new(),
            names: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Symbols<T>
where
    for<'a> Arc<T>: From<&'a T>,
{
    /// The symbol of `name`, counting one more use.
    fn acquire(&mut self, name: &T) -> Sym {
        if let Some(&sym) = self.ids.get(name) {
            if let Some((_, uses)) = &mut self.names[sym.index()] {
                *uses += 1;
            }
            return sym;
        }
        let name: Arc<T> = Arc::from(name);
        let sym = match self.free.pop() {
            Some(sym) => {
                self.names[sym.index()] = Some((name.clone(), 1));
                sym
            }
            None => {
                self.names.push(Some((name.clone(), 1)));
                let number = u32::try_from(self.names.len()).expect("fewer than 2^32 strings");
                Sym(NonZeroU32::new(number).expect("at least one"))
            }
        };
        self.ids.insert(name, sym);
        sym
    }

    /// One use of `sym` less; forgotten at zero.
    fn release(&mut self, sym: Sym) {
        let slot = &mut self.names[sym.index()];
        if let Some((name, uses)) = slot {
            *uses -= 1;
            if *uses == 0 {
                self.ids.remove(&**name);
                *slot = None;
                self.free.push(sym);
            }
        }
    }

    fn lookup(&self, name: &T) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    /// Give the memory of a first load's growth back: the maps at their size.
    fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.names.shrink_to_fit();
        self.free.shrink_to_fit();
    }
}

impl Symbols<str> {
    fn name(&self, sym: Sym) -> &str {
        self.names[sym.index()]
            .as_ref()
            .map_or("", |(name, _)| name)
    }
}

impl Symbols<[u8]> {
    fn name(&self, sym: Sym) -> &[u8] {
        self.names[sym.index()]
            .as_ref()
            .map_or(&[], |(name, _)| name)
    }
}

/// The keys of a snapshot the index reads; everything else is skipped unparsed.
fn is_indexed_key(key: &str) -> bool {
    key == "workflow_yaml_sha256" || RUN_SUMMARY_KEYS.contains(&key) || TIME_KEYS.contains(&key)
}

/// The keys `include=times` adds to summary items (ours: the dashboard shows durations).
const TIME_KEYS: [&str; 2] = ["start_time", "end_time"];

/// The indexed keys of a snapshot. Any JSON object reads (values of any type); anything else
/// is an error. Large values the index does not need (`task_records`, `params`) are checked
/// for syntax and skipped without being built.
struct IndexedFields(Map<String, Value>);

impl IndexedFields {
    fn parse(bytes: &[u8]) -> Result<IndexedFields, serde_json::Error> {
        pyoco_wire::from_python_json(bytes)
    }
}

impl<'de> Deserialize<'de> for IndexedFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = IndexedFields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IndexedFields, A::Error> {
                let mut fields = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if is_indexed_key(&key) {
                        // A repeated key keeps its last value, like `json.loads`.
                        fields.insert(key, map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(IndexedFields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// A snapshot reduced to what the index keeps, built before taking the lock.
#[derive(Debug)]
struct ParsedRun {
    updated_at: Timestamp,
    run_id: RunKey,
    /// The summary template (see [`summary`]) and the values of its holes.
    template: Vec<u8>,
    values: HoleValues,
    label: String,
    status_is_label: bool,
    flow_name: Option<String>,
    tag: Option<String>,
    workflow_yaml_sha256: Option<String>,
    schedule_id: Option<String>,
    tenant_id: Option<String>,
}

impl ParsedRun {
    fn from_fields(IndexedFields(fields): IndexedFields) -> ParsedRun {
        let (updated_at, run_id) = pyoco_wire::run_sort_key(&fields);
        let updated_at = Timestamp::new(updated_at);
        let run_id = RunKey::new(&run_id);
        let (template, values) = summary::encode(&fields, &run_id, updated_at.0);
        let status = fields.get("status");
        let string = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
        ParsedRun {
            updated_at,
            run_id,
            template,
            values,
            label: status_label(status),
            status_is_label: matches!(status, Some(Value::String(s)) if !s.is_empty()),
            flow_name: string("flow_name"),
            tag: string("tag"),
            workflow_yaml_sha256: string("workflow_yaml_sha256"),
            schedule_id: string("schedule_id"),
            tenant_id: string("tenant_id"),
        }
    }
}

/// `str(snap.get("status") or "UNKNOWN")`, except that a list or an object is labelled as
/// compact JSON (`DIFFERENCES.md`).
fn status_label(status: Option<&Value>) -> String {
    match status.filter(|s| python::truthy(s)) {
        None => "UNKNOWN".to_string(),
        Some(json @ (Value::Array(_) | Value::Object(_))) => {
            String::from_utf8_lossy(&pyoco_wire::to_python_json(json)).into_owned()
        }
        Some(status) => python::str_of_json(status),
    }
}

/// Give the memory a load freed back to the system: glibc keeps it in its arenas (the parsed
/// snapshots of a 100,000-run bucket, the half-empty B-tree the load built). `malloc_trim(0)`
/// on a blocking thread; elsewhere (musl, macOS) a no-op.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        // SAFETY: malloc_trim only walks the allocator's own arenas.
        drop(runtime.spawn_blocking(|| unsafe { libc::malloc_trim(0) }));
    }
}

/// The index task: wait for the store, then follow the bucket, one generation per watch.
async fn maintain(shared: Arc<Shared>, source: SharedStore, mut stop: watch::Receiver<()>) {
    let store = loop {
        tokio::select! {
            _ = stop.changed() => return,
            ready = source.wait_ready(Duration::from_secs(3600)) => match ready {
                Ok(store) => break store,
                Err(err) => {
                    tracing::debug!("run index waiting for NATS: {err}");
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(TICK) => {}
                    }
                }
            },
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let generation = shared.begin_generation();
        let started = tokio::time::Instant::now();
        let reason = tokio::select! {
            _ = stop.changed() => return,
            reason = follow(&shared, &store, generation) => reason,
        };
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        match reason {
            WatchEnded::Reconnected => {
                tracing::info!(generation, "reconnected to NATS: rebuilding the run index");
            }
            WatchEnded::Failed(why) if store.check_connected().is_ok() => {
                tracing::warn!(generation, "rebuilding the run index: {why}");
            }
            WatchEnded::Failed(why) => {
                tracing::debug!(generation, "run index waiting for NATS: {why}");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Why [`follow`] returned.
enum WatchEnded {
    /// The client reconnected: the server may have lost or replaced its data.
    Reconnected,
    Failed(String),
}

/// Follow one watch of the runs bucket until it ends; returns why it ended.
async fn follow(shared: &Shared, store: &Store, generation: u64) -> WatchEnded {
    use WatchEnded::{Failed, Reconnected};
    if let Err(err) = store.check_connected() {
        return Failed(err.to_string());
    }
    let connects = || {
        store
            .client()
            .statistics()
            .connects
            .load(AtomicOrdering::Relaxed)
    };
    let connected_as = connects();
    let bucket = store.runs();
    // An empty bucket sends no history at all: ask the stream first.
    let was_empty = match bucket_is_empty(store).await {
        Ok(empty) => empty,
        Err(err) => return Failed(format!("reading the runs stream info failed: {err}")),
    };
    let mut watch = match bucket.watch_all_with_history().await {
        Ok(watch) => watch,
        Err(err) => return Failed(format!("starting the runs watch failed: {err}")),
    };
    let mut caught_up = false;
    if was_empty {
        shared.caught_up(generation);
        caught_up = true;
    }
    let mut received_since_tick = false;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            entry = watch.next() => match entry {
                None => return Failed("the runs watch ended".to_string()),
                Some(Err(err)) => return Failed(format!("the runs watch failed: {err}")),
                Some(Ok(entry)) => {
                    received_since_tick = true;
                    shared.apply(&entry, generation);
                    shared.notify_watchers(&entry);
                    if !caught_up && (entry.seen_current || entry.delta == 0) {
                        shared.caught_up(generation);
                        caught_up = true;
                    }
                }
            },
            _ = tick.tick() => {
                if connects() != connected_as {
                    return Reconnected;
                }
                // Emptied between the stream info and the watch: no history will come.
                if !caught_up && !received_since_tick && bucket_is_empty(store).await.unwrap_or(false) {
                    shared.caught_up(generation);
                    caught_up = true;
                }
                received_since_tick = false;
            }
        }
    }
}

async fn bucket_is_empty(store: &Store) -> Result<bool, async_nats::Error> {
    let mut stream = store.runs().raw().stream.clone();
    let info = stream.info().await?;
    Ok(info.state.messages == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(value: &Value) -> ParsedRun {
        ParsedRun::from_fields(IndexedFields::parse(&serde_json::to_vec(value).unwrap()).unwrap())
    }

    fn run(id: &str, status: &str, updated_at: f64) -> ParsedRun {
        parsed(&json!({
            "run_id": id, "flow_name": "main", "tag": "default", "tags": ["default"],
            "tenant_id": null, "api_key_id": null, "status": status, "params": {"x": 1},
            "tasks": {}, "task_records": {"t": {"state": "SUCCEEDED", "output": [1, 2]}},
            "heartbeat_at": updated_at, "updated_at": updated_at, "error": null
        }))
    }

    /// An index over `state` without a task (needs a runtime: the store handle spawns one).
    fn index_with(state: IndexState) -> RunIndex {
        let index = RunIndex {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                caught_up: watch::Sender::new(true),
                watched: std::sync::Mutex::new(HashMap::new()),
            }),
            source: SharedStore::connect_in_background(
                "nats://127.0.0.1:1",
                "test",
                pyoco_store::StoreConfig::default(),
            ),
            started: Once::new(),
            stop: watch::Sender::new(()),
        };
        // No task: these tests feed the state themselves.
        index.started.call_once(|| {});
        index
    }

    fn ids(index: &RunIndex, query: &PageQuery<'_>) -> (Vec<String>, Option<RunsCursor>) {
        let page = index.page(query, |run| run.key().to_string());
        (page.items, page.next_cursor)
    }

    fn labels(state: &IndexState) -> Vec<&str> {
        let mut labels: Vec<&str> = state
            .status_totals
            .keys()
            .map(|l| state.symbols.name(*l))
            .collect();
        labels.sort_unstable();
        labels
    }

    fn query(limit: usize) -> PageQuery<'static> {
        PageQuery {
            limit,
            ..PageQuery::default()
        }
    }

    /// The summary item (`times`: with `include=times`) of `snapshot` stored under key `r`.
    fn rendered(snapshot: &Value, times: bool) -> String {
        let mut state = IndexState::default();
        state.put("r", 1, 0, parsed(snapshot));
        let (sort, run) = state.order.iter().next().unwrap();
        let view = RunView {
            sort,
            run,
            template: state.templates.name(run.template),
        };
        let mut out = Vec::new();
        if times {
            view.write_summary_with_times(&mut out);
        } else {
            view.write_summary(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_summary_keeps_only_present_summary_keys() {
        let snapshot = json!({
            "run_id": "r", "status": "RUNNING", "updated_at": 5.0, "worker_id": null,
            "workflow_yaml_sha256": "abc", "task_records": {"t": {}}, "params": {}
        });
        assert_eq!(
            rendered(&snapshot, false),
            r#"{"run_id":"r","status":"RUNNING","updated_at":5.0,"worker_id":null}"#
        );
        assert_eq!(
            parsed(&snapshot).workflow_yaml_sha256.as_deref(),
            Some("abc")
        );
        let id = "0f3c2a9e-5b7d-4e1f-8a2b-9c0d1e2f3a4b";
        assert_eq!(
            rendered(
                &json!({"run_id": id, "updated_at": 1712345678.123456, "heartbeat_at": 1.5}),
                false
            ),
            format!(r#"{{"run_id":"{id}","updated_at":1712345678.123456,"heartbeat_at":1.5}}"#)
        );
    }

    #[test]
    fn include_times_adds_the_present_times_to_the_summary() {
        let with = |snapshot: Value| rendered(&snapshot, true);
        assert_eq!(
            with(json!({"run_id": "r", "status": "RUNNING", "start_time": 1.5, "end_time": null})),
            r#"{"run_id":"r","status":"RUNNING","start_time":1.5,"end_time":null}"#
        );
        assert_eq!(
            with(json!({"run_id": "r", "status": "PENDING"})),
            r#"{"run_id":"r","status":"PENDING"}"#
        );
        assert_eq!(with(json!({"start_time": 2})), r#"{"start_time":2}"#);
        assert_eq!(with(json!({"end_time": 2.5})), r#"{"end_time":2.5}"#);
    }

    #[test]
    fn non_objects_and_broken_json_do_not_parse() {
        for bad in [&b"not json"[..], b"[1,2]", b"\"s\"", b"{\"run_id\":", b""] {
            assert!(IndexedFields::parse(bad).is_err(), "{bad:?}");
        }
        // Python's NaN tokens read as null, as everywhere else.
        assert!(IndexedFields::parse(br#"{"run_id":"r","task_records":{"x":NaN}}"#).is_ok());
    }

    #[test]
    fn status_labels_follow_python_str_or_unknown() {
        assert_eq!(status_label(None), "UNKNOWN");
        assert_eq!(status_label(Some(&json!(null))), "UNKNOWN");
        assert_eq!(status_label(Some(&json!(""))), "UNKNOWN");
        assert_eq!(status_label(Some(&json!(0))), "UNKNOWN");
        assert_eq!(status_label(Some(&json!("done"))), "done");
        assert_eq!(status_label(Some(&json!(true))), "True");
        assert_eq!(status_label(Some(&json!(7))), "7");
        assert_eq!(status_label(Some(&json!(1.5))), "1.5");
    }

    #[tokio::test]
    async fn pages_walk_newest_first_and_the_cursor_is_strict() {
        let mut state = IndexState::default();
        for (i, (id, u)) in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 3.0), ("e", 0.5)]
            .into_iter()
            .enumerate()
        {
            state.put(id, i as u64 + 1, 0, run(id, "COMPLETED", u));
        }
        let index = index_with(state);
        let (items, next) = ids(&index, &query(2));
        assert_eq!(items, ["d", "b"]);
        let next = next.unwrap();
        assert_eq!((next.updated_at, next.run_id.as_str()), (3.0, "b"));
        let (items, next) = ids(
            &index,
            &PageQuery {
                cursor: Some(&next),
                ..query(2)
            },
        );
        assert_eq!(items, ["c", "a"]);
        let next = next.unwrap();
        let (items, last) = ids(
            &index,
            &PageQuery {
                cursor: Some(&next),
                ..query(2)
            },
        );
        assert_eq!((items, last), (vec!["e".to_string()], None));
        // Exactly filled: no cursor.
        assert_eq!(ids(&index, &query(5)).1, None);
        // Strictly greater.
        let (items, _) = ids(
            &index,
            &PageQuery {
                updated_after: Some(2.0),
                ..query(10)
            },
        );
        assert_eq!(items, ["d", "b"]);
        let (items, _) = ids(
            &index,
            &PageQuery {
                updated_after: Some(f64::NAN),
                ..query(10)
            },
        );
        assert!(items.is_empty());
    }

    #[tokio::test]
    async fn filters_compare_exact_strings() {
        let mut state = IndexState::default();
        state.put("a", 1, 0, run("a", "RUNNING", 1.0));
        state.put("b", 2, 0, run("b", "running", 2.0));
        state.put(
            "c",
            3,
            0,
            parsed(&json!({"run_id": "c", "status": null, "updated_at": 3.0,
                            "flow_name": "other", "tag": "gpu", "tenant_id": "t1",
                            "workflow_yaml_sha256": "abc", "schedule_id": "s1"})),
        );
        let index = index_with(state);
        let with = |q: PageQuery<'static>| ids(&index, &q).0;
        assert_eq!(
            with(PageQuery {
                status: Some("RUNNING"),
                ..query(10)
            }),
            ["a"]
        );
        // A missing status is counted as UNKNOWN but never matches a filter.
        assert!(with(PageQuery {
            status: Some("UNKNOWN"),
            ..query(10)
        })
        .is_empty());
        assert_eq!(
            with(PageQuery {
                flow_name: Some("other"),
                ..query(10)
            }),
            ["c"]
        );
        assert_eq!(
            with(PageQuery {
                tag: Some("default"),
                ..query(10)
            }),
            ["b", "a"]
        );
        assert_eq!(
            with(PageQuery {
                workflow_yaml_sha256: Some("abc"),
                ..query(10)
            }),
            ["c"]
        );
        assert_eq!(
            with(PageQuery {
                tenant_id: Some("t1"),
                ..query(10)
            }),
            ["c"]
        );
        assert_eq!(
            with(PageQuery {
                schedule_id: Some("s1"),
                ..query(10)
            }),
            ["c"]
        );
        assert!(with(PageQuery {
            schedule_id: Some("s2"),
            ..query(10)
        })
        .is_empty());
        assert!(with(PageQuery {
            tenant_id: Some("t2"),
            ..query(10)
        })
        .is_empty());
    }

    #[test]
    fn older_revisions_never_win_and_deletes_remove() {
        let mut state = IndexState::default();
        state.put("a", 5, 1, run("a", "RUNNING", 1.0));
        state.put("a", 4, 1, run("a", "PENDING", 9.0));
        assert_eq!(labels(&state), ["RUNNING"]);
        state.put("a", 6, 1, run("a", "COMPLETED", 2.0));
        assert_eq!(labels(&state), ["COMPLETED"]);
        assert_eq!(state.order.len(), 1);
        state.forget("a", 5, 1);
        assert_eq!(state.slots.len(), 1);
        state.forget("a", 7, 1);
        assert!(state.slots.is_empty() && state.order.is_empty());
        assert!(state.status_totals.is_empty());
    }

    #[test]
    fn a_new_generation_replaces_and_sweeps() {
        let mut state = IndexState::default();
        state.put("a", 10, 1, run("a", "RUNNING", 1.0));
        state.put("b", 11, 1, run("b", "RUNNING", 1.0));
        // A server that lost its data starts revisions again from 1.
        state.put("a", 1, 2, run("a", "COMPLETED", 2.0));
        assert_eq!(state.sweep(2), 1);
        assert_eq!(
            state
                .slots
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(labels(&state), ["COMPLETED"]);
    }

    #[tokio::test]
    async fn submit_inserts_below_the_watch_high_water_are_ignored() {
        // The watch saw the create (12) and the delete (13) before the submit handler got to
        // its insert of revision 12: the run must stay gone.
        let mut state = IndexState {
            generation: 1,
            ..IndexState::default()
        };
        state.put("gone", 12, 1, run("gone", "PENDING", 1.0));
        state.forget("gone", 13, 1);
        state.high_water = 13;
        let index = index_with(state);
        let snapshot = serde_json::to_vec(&json!({"run_id": "gone", "status": "PENDING"})).unwrap();
        index.insert_submitted("gone", &snapshot, 12);
        assert_eq!(index.len(), 0);
        index.insert_submitted("new", &snapshot, 14);
        assert_eq!(index.len(), 1);
    }

    #[tokio::test]
    async fn requests_before_the_first_load_get_503_index_loading() {
        let index = index_with(IndexState::default());
        index.shared.caught_up.send_replace(false);
        let err = index.ready(Duration::from_millis(30)).await.unwrap_err();
        assert!(
            matches!(&err, ApiError::Unavailable { kind, .. } if kind == "IndexLoading"),
            "{err:?}"
        );
        let waiting = index.ready(Duration::from_secs(5));
        let shared = index.shared.clone();
        let (ready, ()) = tokio::join!(waiting, async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            shared.caught_up.send_replace(true);
        });
        assert!(ready.is_ok());
    }

    #[tokio::test]
    async fn counts_by_status_and_today() {
        let mut state = IndexState::default();
        state.put("a", 1, 0, run("a", "RUNNING", 100.0));
        state.put("b", 2, 0, run("b", "COMPLETED", 150.0));
        state.put("c", 3, 0, run("c", "COMPLETED", 199.9));
        state.put("d", 4, 0, run("d", "COMPLETED", 200.0));
        state.put(
            "e",
            5,
            0,
            parsed(&json!({"run_id": "e", "updated_at": 150.0})),
        );
        state.put(
            "f",
            6,
            0,
            parsed(&json!({"run_id": "f", "updated_at": "nan"})),
        );
        let index = index_with(state);
        let counts = index.status_counts(150.0..200.0);
        let text = |v: &[(String, u64)]| {
            v.iter()
                .map(|(l, n)| format!("{l}={n}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            text(&counts.total),
            ["COMPLETED=3", "RUNNING=1", "UNKNOWN=2"]
        );
        assert_eq!(text(&counts.today), ["COMPLETED=2", "UNKNOWN=1"]);
    }

    #[test]
    fn strings_are_shared_and_forgotten_when_unused() {
        let mut state = IndexState::default();
        state.put("a", 1, 0, run("a", "RUNNING", 1.0));
        state.put("b", 2, 0, run("b", "RUNNING", 2.0));
        let a = state.order.values().next().unwrap().label;
        let b = state.order.values().last().unwrap().label;
        assert_eq!(a, b);
        state.put("a", 3, 0, run("a", "DONE", 1.0));
        assert_eq!(state.symbols.lookup("RUNNING"), Some(a));
        state.put("b", 4, 0, run("b", "DONE", 2.0));
        assert_eq!(state.symbols.lookup("RUNNING"), None);
        // The freed symbol is reused.
        state.put("c", 5, 0, run("c", "FAILED", 3.0));
        assert_eq!(state.symbols.lookup("FAILED"), Some(a));
        assert_eq!(labels(&state), ["DONE", "FAILED"]);
    }

    /// `MALLOC_ARENA_MAX=1 cargo test -p pyoco-gateway --lib -- --ignored --nocapture index_memory`
    #[test]
    #[ignore = "measurement; run alone"]
    fn index_memory_for_ten_thousand_runs() {
        fn rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
        let snapshots: Vec<Vec<u8>> = (0..10_000)
            .map(|i| {
                let id = format!("{:08x}-2f0a-4d4e-9a8b-1c2d3e4f5a6b", i);
                let u = 1_712_345_678.123_456 + f64::from(i);
                serde_json::to_vec(&json!({
                    "run_id": id, "flow_name": "main", "tag": "default", "tags": ["default"],
                    "tenant_id": null, "api_key_id": null, "workflow_yaml_sha256": null,
                    "workflow_yaml_bytes": null, "cancel_requested_at": null,
                    "cancel_requested_by": null, "status": "COMPLETED", "params": {"x": 1},
                    "tasks": {"t1": "SUCCEEDED", "t2": "SUCCEEDED"},
                    "task_records": {"t1": {"state": "SUCCEEDED", "output": 2}},
                    "start_time": u, "end_time": u, "heartbeat_at": u, "updated_at": u,
                    "error": null, "worker_id": "w1"
                }))
                .unwrap()
            })
            .collect();
        /// Bytes the allocator has handed out and not taken back (glibc; counts the main
        /// arena only: run with `MALLOC_ARENA_MAX=1`).
        fn heap_in_use() -> usize {
            // SAFETY: mallinfo2 only reads the allocator's counters.
            let info = unsafe { libc::mallinfo2() };
            info.uordblks + info.hblkhd
        }
        let before = rss_kib();
        let heap_before = heap_in_use();
        let mut state = IndexState::default();
        let mut summary_bytes = 0;
        for (i, bytes) in snapshots.iter().enumerate() {
            let run = ParsedRun::from_fields(IndexedFields::parse(bytes).unwrap());
            summary_bytes += run.template.len();
            let key = format!("{:08x}-2f0a-4d4e-9a8b-1c2d3e4f5a6b", i);
            state.put(&key, i as u64 + 1, 0, run);
        }
        let after = rss_kib();
        let heap_after = heap_in_use();
        println!(
            "10,000 runs: heap +{} KiB ({} bytes/run), RSS +{} KiB; summary templates {} bytes/run (shared)",
            (heap_after - heap_before) / 1024,
            (heap_after - heap_before) / 10_000,
            after - before,
            summary_bytes / 10_000
        );
        assert_eq!(state.slots.len(), 10_000);
    }
}
