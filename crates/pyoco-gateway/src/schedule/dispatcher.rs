//! The schedule dispatcher: every schedule in memory (one KV watch of the schedules bucket),
//! a sleep until the earliest due time (or the next change, or the poll interval as the
//! fallback), then a claim by compare-and-set on the revision read, the run submitted through
//! the `POST /runs/yaml` path, and the record advanced by compare-and-set on the claim's
//! revision (contract §15.1).
//!
//! Several gateways (ours or 0.7's) on one bucket: each claim names the revision it read, so
//! of the gateways waking for one slot exactly one claim succeeds, the others get a conflict
//! and skip. A claim holds `lease_until = now + max(3, 3 × poll)`: a gateway that dies between
//! claim and submit leaves the slot to another once the lease ran out (as in 0.7).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Once, PoisonError},
    time::Duration,
};

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use pyoco_store::{SharedStore, Store, StoreError};
use pyoco_wire::{python, NewRun, WorkflowUpload};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::{CatchUp, Kind, Schedule};
use crate::AppState;

/// A dispatch counts as catching up missed slots once it is this much later than its slot
/// (at least the lease, so a slot a gateway is still dispatching is never taken for missed).
fn grace(poll: f64) -> f64 {
    lease_seconds(poll) + poll
}

/// 0.7's lease: `max(3, 3 × poll)`.
pub(crate) fn lease_seconds(poll: f64) -> f64 {
    (3.0 * poll).max(3.0)
}

/// The schedules this gateway knows, by id, with the revision each was read at.
#[derive(Debug, Default)]
struct Known {
    map: HashMap<String, (Schedule, u64)>,
    loaded: bool,
}

/// The dispatcher of one gateway. Owned by [`AppState`]; its task ends with the state.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    known: Arc<Mutex<Known>>,
    changed: Arc<Notify>,
    loaded: watch::Sender<bool>,
    started: Once,
    poll: f64,
    /// Never sent on: dropping the dispatcher ends its task.
    stop: watch::Sender<()>,
}

impl Dispatcher {
    pub(crate) fn new(poll: f64) -> Dispatcher {
        Dispatcher {
            known: Arc::default(),
            changed: Arc::new(Notify::new()),
            loaded: watch::Sender::new(false),
            started: Once::new(),
            poll: poll.max(0.2),
            stop: watch::Sender::new(()),
        }
    }

    /// Start the watch and dispatch loop (once; needs a tokio runtime).
    pub(crate) fn start(&self, state: &AppState, source: SharedStore) {
        if self.started.is_completed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.call_once(|| {
            let weak = state.downgrade();
            let ctx = Ctx {
                known: self.known.clone(),
                changed: self.changed.clone(),
                loaded: self.loaded.clone(),
                poll: self.poll,
            };
            let stop = self.stop.subscribe();
            runtime.spawn(run(ctx, weak, source, stop));
        });
    }

    /// Wait (up to `wait`) until the bucket was read once.
    pub(crate) async fn ready(&self, wait: Duration) -> bool {
        let mut rx = self.loaded.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Every schedule known, with its revision.
    pub(crate) fn all(&self) -> Vec<(Schedule, u64)> {
        lock(&self.known).map.values().cloned().collect()
    }

    pub(crate) fn count_for_tenant(&self, tenant: Option<&str>) -> usize {
        lock(&self.known)
            .map
            .values()
            .filter(|(s, _)| s.tenant_id() == tenant)
            .count()
    }

    /// A schedule we created (read-your-writes before the watch delivers it).
    pub(crate) fn note(&self, schedule: Schedule, revision: u64) {
        apply(&self.known, schedule, revision);
        self.changed.notify_one();
    }

    /// A schedule we changed; ignored when it was deleted meanwhile.
    pub(crate) fn note_update(&self, schedule: Schedule, revision: u64) {
        apply_update(&self.known, schedule, revision);
        self.changed.notify_one();
    }

    pub(crate) fn note_deleted(&self, id: &str) {
        lock(&self.known).map.remove(id);
        self.changed.notify_one();
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.changed.notify_one();
    }
}

fn lock(known: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    known.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Replace a known schedule with `schedule` unless what is known is newer; a schedule no
/// longer known (deleted meanwhile) stays forgotten.
fn apply_update(known: &Mutex<Known>, schedule: Schedule, revision: u64) {
    let mut known = lock(known);
    if let Some(held) = known.map.get_mut(&schedule.id) {
        if held.1 < revision {
            *held = (schedule, revision);
        }
    }
}

/// Keep `schedule` unless what is known is newer.
fn apply(known: &Mutex<Known>, schedule: Schedule, revision: u64) {
    let mut known = lock(known);
    match known.map.get(&schedule.id) {
        Some((_, held)) if *held >= revision => {}
        _ => {
            known.map.insert(schedule.id.clone(), (schedule, revision));
        }
    }
}

#[derive(Clone)]
struct Ctx {
    known: Arc<Mutex<Known>>,
    changed: Arc<Notify>,
    loaded: watch::Sender<bool>,
    poll: f64,
}

/// Wait for NATS, then follow the bucket and dispatch, restarting the watch when it ends.
async fn run(
    ctx: Ctx,
    state: crate::state::WeakState,
    source: SharedStore,
    mut stop: watch::Receiver<()>,
) {
    let store = loop {
        tokio::select! {
            _ = stop.changed() => return,
            ready = source.wait_ready(Duration::from_secs(3600)) => if let Ok(store) = ready {
                break store;
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
        }
    };
    let follower = tokio::spawn(follow_forever(ctx.clone(), store.clone()));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let now = python::time();
        let mut wake_at = now + ctx.poll;
        let mut due = Vec::new();
        // While NATS is down nothing can be claimed: wait for the connection (re-checked each
        // poll) instead of failing every due schedule once per wake-up.
        if store.check_connected().is_ok() {
            let known = lock(&ctx.known);
            let flying = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            for (schedule, revision) in known.map.values() {
                let Some(at) = schedule.due_at() else {
                    continue;
                };
                if flying.contains(&schedule.id) {
                    continue;
                }
                if at > now {
                    wake_at = wake_at.min(at);
                } else if schedule.lease_active(now) {
                    let until = schedule.f64("lease_until").unwrap_or(now + ctx.poll);
                    wake_at = wake_at.min(until);
                } else {
                    due.push((schedule.clone(), *revision, at));
                }
            }
        }
        for (schedule, revision, slot) in due {
            let Some(state) = state.upgrade() else {
                follower.abort();
                return;
            };
            in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(schedule.id.clone());
            let ctx = ctx.clone();
            let store = store.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let id = schedule.id.clone();
                dispatch(&ctx, &state, &store, schedule, revision, slot).await;
                in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                ctx.changed.notify_one();
            });
        }
        let sleep = (wake_at - python::time()).clamp(0.0, ctx.poll);
        tokio::select! {
            _ = stop.changed() => { follower.abort(); return; }
            _ = ctx.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs_f64(sleep)) => {}
        }
    }
}

/// Claim, submit, advance one due schedule.
async fn dispatch(
    ctx: &Ctx,
    state: &AppState,
    store: &Store,
    schedule: Schedule,
    revision: u64,
    slot: f64,
) {
    let bucket = store.schedules();
    let id = schedule.id.clone();
    let now = python::time();
    // Missed slots (no gateway ran at them): `catch_up: none` skips to the next slot. A
    // one-shot always runs (late), as in 0.7.
    if schedule.kind() != Kind::Once
        && schedule.catch_up() == CatchUp::None
        && now - slot > grace(ctx.poll)
    {
        let skipped = schedule.skipped_to(now);
        match bucket.update(&id, skipped.to_json(), revision).await {
            Ok(rev) => {
                tracing::info!(schedule_id = %id, slot, "skipped missed schedule slots (catch_up none)");
                apply_update(&ctx.known, skipped, rev);
            }
            Err(err) => tracing::debug!(schedule_id = %id, "skip lost to another writer: {err}"),
        }
        return;
    }
    let mut claimed = schedule.clone();
    claimed.set_f64("lease_until", Some(now + lease_seconds(ctx.poll)));
    claimed.set_f64("updated_at", Some(now));
    let claim_rev = match bucket.update(&id, claimed.to_json(), revision).await {
        Ok(rev) => rev,
        Err(StoreError::Conflict(_)) => {
            tracing::debug!(schedule_id = %id, slot, "slot claimed by another gateway");
            return;
        }
        Err(err) => {
            tracing::warn!(schedule_id = %id, "claiming a schedule failed: {err}");
            return;
        }
    };
    apply_update(&ctx.known, claimed.clone(), claim_rev);
    let submitted = submit(state, &claimed, slot).await;
    let submitted_at = python::time();
    let (next, run_id) = match submitted {
        Ok(run_id) => {
            tracing::debug!(schedule_id = %id, %run_id, slot, late_ms = (submitted_at - slot) * 1e3, "schedule dispatched");
            (claimed.advanced(slot, submitted_at, &run_id), Some(run_id))
        }
        Err(error) => {
            tracing::warn!(schedule_id = %id, "schedule dispatch failed: {error}");
            let mut failed = claimed.clone();
            failed.map.insert("lease_until".into(), Value::Null);
            failed.set_f64("updated_at", Some(submitted_at));
            failed.map.insert("last_error".into(), Value::String(error));
            (failed, None)
        }
    };
    finish(ctx, store, &id, next, claim_rev, run_id, slot, submitted_at).await;
}

/// Write the advanced record on the claim's revision. When someone changed it meanwhile
/// (a pause, a resume), lay the dispatch's counters over what is there now.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Ctx,
    store: &Store,
    id: &str,
    next: Schedule,
    claim_rev: u64,
    run_id: Option<String>,
    slot: f64,
    submitted_at: f64,
) {
    let bucket = store.schedules();
    let mut next = next;
    let mut revision = claim_rev;
    for _ in 0..5 {
        match bucket.update(id, next.to_json(), revision).await {
            Ok(rev) => {
                apply_update(&ctx.known, next, rev);
                return;
            }
            Err(StoreError::Conflict(_)) => {}
            Err(err) => {
                tracing::warn!(schedule_id = %id, "advancing a schedule failed: {err}");
                return;
            }
        }
        // Changed since our claim: deleted (nothing to do) or edited (merge).
        let current = match bucket.get(id).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(schedule_id = %id, "re-reading a schedule failed: {err}");
                return;
            }
        };
        let Some(now) = Schedule::parse(id, &current.value) else {
            return;
        };
        revision = current.revision;
        next = match &run_id {
            Some(run_id) => now.advanced(slot, submitted_at, run_id),
            None => {
                let mut n = now.clone();
                n.map.insert("lease_until".into(), Value::Null);
                n.map
                    .insert("last_error".into(), next.map["last_error"].clone());
                n
            }
        };
    }
    tracing::warn!(schedule_id = %id, "gave up advancing a schedule after repeated conflicts");
}

/// The run id of a schedule's slot: a UUID (version 5) of the schedule id and the slot, the
/// same on every gateway. When a gateway dies between submitting a slot's run and advancing
/// the schedule (or the advance is lost in a NATS leader election), the gateway that takes the
/// slot over after the lease finds the run already there and does not start a second one.
pub(crate) fn slot_run_id(schedule_id: &str, slot: f64) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8a4f_3c2e_5d1b_4e8f_9a7c_6b5d_4e3f_2a1b);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{schedule_id}@{slot:.6}").as_bytes())
        .hyphenated()
        .to_string()
}

/// Submit the schedule's run; the run id, or `<ExcClass>: <msg>` as 0.7 stores it.
async fn submit(state: &AppState, schedule: &Schedule, slot: f64) -> Result<String, String> {
    let text = schedule.str("workflow_yaml").unwrap_or("").to_string();
    let digest = match schedule.str("workflow_yaml_sha256") {
        Some(sha) if !sha.is_empty() => pyoco_wire::WorkflowDigest {
            sha256: sha.to_string(),
            bytes: schedule
                .map
                .get("workflow_yaml_bytes")
                .and_then(Value::as_u64)
                .unwrap_or(text.len() as u64),
        },
        _ => pyoco_wire::WorkflowDigest::of(text.as_bytes()),
    };
    let tag = schedule.str("tag").unwrap_or("").to_string();
    let tag = if tag.is_empty() {
        state.default_tag().to_string()
    } else {
        tag
    };
    let params = match schedule.map.get("params") {
        Some(Value::Object(p)) => p.clone(),
        _ => Default::default(),
    };
    let run = NewRun {
        run_id: slot_run_id(&schedule.id, slot),
        flow_name: schedule.str("flow_name").unwrap_or("").to_string(),
        tag: tag.clone(),
        tags: vec![tag],
        tenant_id: schedule.tenant_id().map(str::to_string),
        api_key_id: schedule.str("api_key_id").map(str::to_string),
        params,
        workflow: Some(WorkflowUpload { text, digest }),
    };
    crate::routes::submit_scheduled_run(state, run, &schedule.id, slot)
        .await
        .map(|s| s.run_id().to_string())
        .map_err(|err| format!("SubmitError: {err}"))
}

/// Follow the bucket forever: one watch with history at a time, restarted when it ends.
async fn follow_forever(ctx: Ctx, store: Store) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let reason = follow(&ctx, &store).await;
        tracing::debug!("schedules watch ended: {reason}; restarting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow(ctx: &Ctx, store: &Store) -> String {
    let bucket = store.schedules();
    // Changes from now on, then the full set (a watch of an empty bucket sends nothing, and a
    // change between the two is seen twice, never missed: revisions order them).
    let mut watch = match bucket.watch_all().await {
        Ok(w) => w,
        Err(err) => return format!("starting the schedules watch failed: {err}"),
    };
    let keys = match bucket.keys().await {
        Ok(keys) => keys,
        Err(err) => return format!("listing schedules failed: {err}"),
    };
    let mut fresh = HashMap::new();
    for key in keys {
        if let Ok(Some(entry)) = bucket.get(&key).await {
            if let Some(s) = Schedule::parse(&key, &entry.value) {
                fresh.insert(key, (s, entry.revision));
            }
        }
    }
    {
        let mut known = lock(&ctx.known);
        known.map.retain(|id, _| fresh.contains_key(id));
        for (id, (s, rev)) in fresh {
            match known.map.get(&id) {
                Some((_, held)) if *held >= rev => {}
                _ => {
                    known.map.insert(id, (s, rev));
                }
            }
        }
        known.loaded = true;
    }
    ctx.loaded.send_replace(true);
    ctx.changed.notify_one();
    loop {
        match watch.next().await {
            None => return "ended".into(),
            Some(Err(err)) => return format!("failed: {err}"),
            Some(Ok(entry)) => {
                match entry.operation {
                    Operation::Put => {
                        if let Some(s) = Schedule::parse(&entry.key, &entry.value) {
                            apply(&ctx.known, s, entry.revision);
                        }
                    }
                    Operation::Delete | Operation::Purge => {
                        lock(&ctx.known).map.remove(&entry.key);
                    }
                }
                ctx.changed.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_and_grace_follow_the_poll_interval() {
        assert_eq!(lease_seconds(0.2), 3.0);
        assert_eq!(lease_seconds(1.0), 3.0);
        assert_eq!(lease_seconds(2.0), 6.0);
        assert_eq!(grace(1.0), 4.0);
    }

    #[test]
    fn a_deleted_schedule_is_not_brought_back_by_a_late_write_of_ours() {
        let known = Mutex::new(Known::default());
        let s = |rev: u64| {
            let mut map = serde_json::Map::new();
            map.insert("dispatch_count".into(), rev.into());
            Schedule {
                id: "s1".into(),
                map,
            }
        };
        apply(&known, s(1), 1);
        apply_update(&known, s(3), 3);
        apply_update(&known, s(2), 2);
        assert_eq!(lock(&known).map["s1"].1, 3, "never backwards");
        lock(&known).map.remove("s1");
        apply_update(&known, s(4), 4);
        assert!(lock(&known).map.is_empty(), "a ghost of a deleted schedule");
        apply(&known, s(5), 5);
        assert_eq!(lock(&known).map["s1"].1, 5, "created again");
    }

    #[test]
    fn a_slot_has_one_run_id_on_every_gateway() {
        let a = slot_run_id("5b0f3c2e-0000-4000-8000-000000000001", 1_765_000_000.0);
        assert_eq!(
            a,
            slot_run_id("5b0f3c2e-0000-4000-8000-000000000001", 1_765_000_000.0)
        );
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
        assert_eq!(a.len(), 36, "hyphenated like every run id");
        // Another slot, another schedule: another run.
        assert_ne!(
            a,
            slot_run_id("5b0f3c2e-0000-4000-8000-000000000001", 1_765_000_001.0)
        );
        assert_ne!(
            a,
            slot_run_id("5b0f3c2e-0000-4000-8000-000000000002", 1_765_000_000.0)
        );
    }
}
