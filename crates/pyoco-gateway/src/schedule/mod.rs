//! Schedules (pyoco-server 0.7, contract §15.1): the record of the `pyoco_yaml_schedules`
//! bucket, its slots, and the dispatcher that submits a run at each slot.
//!
//! The record is kept as the JSON object it was read as (unknown keys survive our writes, as
//! they do 0.7's `dict(src)`); [`Schedule`] reads it with 0.7's normalisation. Ours only:
//! `schedule_type: "cron"` with `cron`, `timezone`, `cron_next_run_at`; `catch_up`; `paused`.
//! What a 0.7 gateway sharing the bucket does with them is decided here, see [`Schedule::due_at`]:
//! every schedule of ours that 0.7 must not dispatch (cron, paused) stores `next_run_at: null`,
//! which 0.7's `is_schedule_due` skips, and keeps its own due time in `cron_next_run_at`.

pub(crate) mod dispatcher;
pub(crate) mod slots;

use pyoco_wire::python;
use serde_json::{Map, Value};

pub(crate) use dispatcher::Dispatcher;
pub(crate) use slots::{CatchUp, CronSpec};

pub(crate) const STATUS_ACTIVE: &str = "ACTIVE";
pub(crate) const STATUS_COMPLETED: &str = "COMPLETED";
/// Ours. 0.7 normalises an unknown status to ACTIVE, but never dispatches the record: a
/// paused schedule has `next_run_at: null`.
pub(crate) const STATUS_PAUSED: &str = "PAUSED";

/// The least time between two runs of one schedule the dispatcher allows.
pub(crate) const MIN_SPACING_SECONDS: f64 = 1.0;

/// The kinds of schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Once,
    Interval,
    /// Ours; 0.7 reads it as `once` (and, its `next_run_at` being null, never dispatches it).
    Cron,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Once => "once",
            Kind::Interval => "interval",
            Kind::Cron => "cron",
        }
    }
}

/// The keys of 0.7's schedule view, in its order.
const VIEW_KEYS: [&str; 19] = [
    "schedule_id",
    "flow_name",
    "tag",
    "status",
    "schedule_type",
    "workflow_yaml_sha256",
    "workflow_yaml_bytes",
    "tenant_id",
    "api_key_id",
    "created_at",
    "updated_at",
    "run_at",
    "next_run_at",
    "interval_seconds",
    "start_at",
    "last_submitted_at",
    "last_run_id",
    "dispatch_count",
    "last_error",
];

/// One schedule record as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    pub id: String,
    pub map: Map<String, Value>,
}

impl Schedule {
    /// Read a stored value; `None` when it is not a JSON object (skipped, like a bad run).
    pub(crate) fn parse(id: &str, bytes: &[u8]) -> Option<Schedule> {
        match pyoco_wire::value_from_python_json(bytes) {
            Ok(Value::Object(map)) => Some(Schedule {
                id: id.to_string(),
                map,
            }),
            _ => None,
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        pyoco_wire::to_python_json(&self.map)
    }

    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).and_then(Value::as_str)
    }

    /// `float(value)` when set (0.7 normalises every time field so).
    pub(crate) fn f64(&self, key: &str) -> Option<f64> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => python::float_of_json(v).ok().filter(|f| f.is_finite()),
        }
    }

    pub(crate) fn set_f64(&mut self, key: &str, value: Option<f64>) {
        self.map.insert(
            key.to_string(),
            value.map_or(Value::Null, python::float_value),
        );
    }

    pub(crate) fn tenant_id(&self) -> Option<&str> {
        self.str("tenant_id")
    }

    /// 0.7: an unknown type reads as `once`.
    pub(crate) fn kind(&self) -> Kind {
        match self
            .str("schedule_type")
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("interval") => Kind::Interval,
            Some("cron") => Kind::Cron,
            _ => Kind::Once,
        }
    }

    /// 0.7's normalised status (unknown: ACTIVE), and ours: PAUSED.
    pub(crate) fn status(&self) -> &'static str {
        match self
            .str("status")
            .map(|s| s.trim().to_ascii_uppercase())
            .as_deref()
        {
            Some(STATUS_COMPLETED) => STATUS_COMPLETED,
            Some(STATUS_PAUSED) => STATUS_PAUSED,
            _ if self.map.get("paused") == Some(&Value::Bool(true)) => STATUS_PAUSED,
            _ => STATUS_ACTIVE,
        }
    }

    pub(crate) fn paused(&self) -> bool {
        self.status() == STATUS_PAUSED
    }

    pub(crate) fn catch_up(&self) -> CatchUp {
        CatchUp::parse(self.str("catch_up").unwrap_or("none")).unwrap_or(CatchUp::None)
    }

    /// The cron of a cron schedule; `Err` with why it cannot be evaluated.
    pub(crate) fn cron(&self) -> Result<CronSpec, String> {
        CronSpec::parse(
            self.str("cron").unwrap_or(""),
            self.str("timezone").unwrap_or("UTC"),
        )
    }

    /// When it is due next: `next_run_at` (0.7), or `cron_next_run_at` for a cron schedule;
    /// `None` when completed or paused.
    pub(crate) fn due_at(&self) -> Option<f64> {
        if self.status() != STATUS_ACTIVE {
            return None;
        }
        match self.kind() {
            Kind::Cron => self.f64("cron_next_run_at"),
            _ => self.f64("next_run_at"),
        }
    }

    pub(crate) fn lease_active(&self, now: f64) -> bool {
        self.f64("lease_until").is_some_and(|until| until > now)
    }

    /// The next slot strictly after `after` (interval and cron; `None` for a one-shot).
    pub(crate) fn next_slot_after(&self, after: f64) -> Option<f64> {
        match self.kind() {
            Kind::Once => None,
            Kind::Interval => {
                let interval = self.f64("interval_seconds").filter(|i| *i > 0.0)?;
                let anchor = self.f64("start_at").unwrap_or(after);
                Some(slots::interval_next(anchor, interval, after))
            }
            Kind::Cron => self.cron().ok()?.next_after(after),
        }
    }

    /// Store `due` as the due time (in the field the kind uses).
    pub(crate) fn set_due(&mut self, due: Option<f64>) {
        match self.kind() {
            Kind::Cron => {
                self.set_f64("cron_next_run_at", due);
                self.map.insert("next_run_at".into(), Value::Null);
            }
            _ => self.set_f64("next_run_at", due),
        }
    }

    /// The record after a successful dispatch of the slot `slot` at `submitted_at` (0.7's
    /// `advance_schedule_after_dispatch`, with `cron`).
    pub(crate) fn advanced(&self, slot: f64, submitted_at: f64, run_id: &str) -> Schedule {
        let mut next = self.clone();
        next.set_f64("updated_at", Some(submitted_at));
        next.set_f64("last_submitted_at", Some(submitted_at));
        let count = next
            .map
            .get("dispatch_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        next.map.insert("dispatch_count".into(), (count + 1).into());
        next.map.insert("last_error".into(), Value::Null);
        next.map.insert("lease_until".into(), Value::Null);
        next.map
            .insert("last_run_id".into(), Value::String(run_id.to_string()));
        if next.paused() {
            // Paused while the run was being submitted: stays paused.
            return next;
        }
        match self.kind() {
            Kind::Once => {
                next.map
                    .insert("status".into(), Value::String(STATUS_COMPLETED.into()));
                next.map.insert("next_run_at".into(), Value::Null);
            }
            _ => {
                // Never the same slot again, even if this clock read a hair before it; and at
                // most one run a second, whatever interval a 0.7 record asks for (0.7 accepts
                // any positive one; its poll spaces them, our wake-ups would not).
                let after = submitted_at.max(slot);
                let due = match self.f64("interval_seconds") {
                    Some(i) if self.kind() == Kind::Interval && i < MIN_SPACING_SECONDS => {
                        self.next_slot_after(after + MIN_SPACING_SECONDS - i)
                    }
                    _ => self.next_slot_after(after),
                };
                next.set_due(due);
            }
        }
        next
    }

    /// Skipping missed slots (`catch_up: none`): the next slot after `now`, no run.
    pub(crate) fn skipped_to(&self, now: f64) -> Schedule {
        let mut next = self.clone();
        next.set_f64("updated_at", Some(now));
        next.map.insert("lease_until".into(), Value::Null);
        next.set_due(self.next_slot_after(now));
        next
    }

    /// Paused or resumed at `now`. Resuming computes the next slot from now (a one-shot whose
    /// `run_at` has passed runs at once).
    pub(crate) fn with_paused(&self, paused: bool, now: f64) -> Schedule {
        let mut next = self.clone();
        next.set_f64("updated_at", Some(now));
        next.map.insert("paused".into(), Value::Bool(paused));
        if paused {
            next.map
                .insert("status".into(), Value::String(STATUS_PAUSED.into()));
            next.map.insert("next_run_at".into(), Value::Null);
            if self.kind() == Kind::Cron {
                next.map.insert("cron_next_run_at".into(), Value::Null);
            }
            return next;
        }
        next.map
            .insert("status".into(), Value::String(STATUS_ACTIVE.into()));
        let due = match self.kind() {
            Kind::Once => Some(self.f64("run_at").unwrap_or(now).max(now)),
            _ => self.next_slot_after(now),
        };
        next.set_due(due);
        next
    }

    /// The view `GET /schedules` answers: 0.7's keys (with `next_run_at` the effective due
    /// time), then ours: `cron`, `timezone`, `catch_up`, `paused`.
    pub(crate) fn view(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for key in VIEW_KEYS {
            let value = match key {
                "schedule_id" => Value::String(self.id.clone()),
                "status" => Value::String(self.status().into()),
                "schedule_type" => Value::String(self.kind().as_str().into()),
                "next_run_at" => self.due_at().map_or(Value::Null, python::float_value),
                "dispatch_count" | "workflow_yaml_bytes" => self
                    .map
                    .get(key)
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .into(),
                _ => self.map.get(key).cloned().unwrap_or(Value::Null),
            };
            out.insert(key.to_string(), value);
        }
        let cron = self.kind() == Kind::Cron;
        out.insert(
            "cron".into(),
            if cron {
                self.map.get("cron").cloned().unwrap_or(Value::Null)
            } else {
                Value::Null
            },
        );
        out.insert(
            "timezone".into(),
            if cron {
                Value::String(self.str("timezone").unwrap_or("UTC").into())
            } else {
                Value::Null
            },
        );
        out.insert(
            "catch_up".into(),
            Value::String(self.catch_up().as_str().into()),
        );
        out.insert("paused".into(), Value::Bool(self.paused()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sched(v: Value) -> Schedule {
        Schedule::parse("s1", &serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn a_once_schedule_completes_after_its_dispatch() {
        let s = sched(
            json!({"schedule_type": "once", "status": "ACTIVE", "run_at": 100.0,
            "next_run_at": 100.0, "dispatch_count": 0, "lease_until": 103.0}),
        );
        assert_eq!(s.due_at(), Some(100.0));
        let after = s.advanced(100.0, 100.01, "r1");
        assert_eq!(after.status(), STATUS_COMPLETED);
        assert_eq!(after.due_at(), None);
        assert_eq!(after.map["next_run_at"], Value::Null);
        assert_eq!(after.map["dispatch_count"], 1);
        assert_eq!(after.map["last_run_id"], "r1");
        assert_eq!(after.map["lease_until"], Value::Null);
    }

    #[test]
    fn an_interval_schedule_moves_to_the_next_grid_slot() {
        let s = sched(json!({"schedule_type": "interval", "status": "ACTIVE",
            "interval_seconds": 10.0, "start_at": 100.0, "next_run_at": 100.0}));
        let after = s.advanced(100.0, 100.003, "r1");
        assert_eq!(after.due_at(), Some(110.0));
        // Dispatched late (after 3 missed slots): next slot strictly after now, on the grid.
        let after = s.advanced(100.0, 135.0, "r1");
        assert_eq!(after.due_at(), Some(140.0));
        // A clock a hair before the slot never yields the same slot again.
        let after = s.advanced(100.0, 99.9999, "r1");
        assert_eq!(after.due_at(), Some(110.0));
    }

    #[test]
    fn a_0_7_record_with_a_tiny_interval_runs_at_most_once_a_second() {
        let s = sched(json!({"schedule_type": "interval", "status": "ACTIVE",
            "interval_seconds": 0.01, "start_at": 100.0, "next_run_at": 100.0}));
        let due = s.advanced(100.0, 100.002, "r1").due_at().unwrap();
        assert!((101.0..101.02).contains(&due), "{due}");
    }

    #[test]
    fn cron_and_paused_records_hide_their_due_time_from_0_7() {
        let s = sched(
            json!({"schedule_type": "cron", "status": "ACTIVE", "cron": "*/2 * * * * *",
            "timezone": "UTC", "next_run_at": null, "cron_next_run_at": 100.0}),
        );
        assert_eq!(s.kind(), Kind::Cron);
        assert_eq!(s.due_at(), Some(100.0));
        let after = s.advanced(100.0, 100.001, "r1");
        assert_eq!(after.due_at(), Some(102.0));
        assert_eq!(
            after.map["next_run_at"],
            Value::Null,
            "0.7 must never see it due"
        );
        assert_eq!(after.status(), STATUS_ACTIVE);

        let paused = after.with_paused(true, 101.0);
        assert_eq!(paused.status(), STATUS_PAUSED);
        assert_eq!(paused.due_at(), None);
        assert_eq!(paused.map["next_run_at"], Value::Null);
        assert_eq!(paused.view()["paused"], true);
        let resumed = paused.with_paused(false, 107.5);
        assert_eq!(resumed.status(), STATUS_ACTIVE);
        assert_eq!(resumed.due_at(), Some(108.0), "resume: next slot after now");

        let interval = sched(json!({"schedule_type": "interval", "status": "ACTIVE",
            "interval_seconds": 10.0, "start_at": 100.0, "next_run_at": 110.0}));
        let paused = interval.with_paused(true, 111.0);
        assert_eq!(paused.map["next_run_at"], Value::Null);
        assert_eq!(
            paused.with_paused(false, 125.0).due_at(),
            Some(130.0),
            "no catch-up on resume"
        );
    }

    #[test]
    fn a_0_7_record_reads_with_0_7_normalisation() {
        let s = sched(json!({"schedule_type": "weird", "status": "odd", "next_run_at": "5"}));
        assert_eq!(s.kind(), Kind::Once);
        assert_eq!(s.status(), STATUS_ACTIVE);
        assert_eq!(s.due_at(), Some(5.0));
        let view = s.view();
        assert_eq!(view["schedule_type"], "once");
        assert_eq!(view["catch_up"], "none");
        assert_eq!(view["paused"], false);
        assert_eq!(view["dispatch_count"], 0);
        assert_eq!(view.len(), VIEW_KEYS.len() + 4);
    }

    #[test]
    fn skipping_missed_slots_advances_without_a_run() {
        let s = sched(json!({"schedule_type": "interval", "status": "ACTIVE",
            "interval_seconds": 60.0, "start_at": 0.0, "next_run_at": 60.0, "dispatch_count": 2}));
        let skipped = s.skipped_to(1000.0);
        assert_eq!(skipped.due_at(), Some(1020.0));
        assert_eq!(skipped.map["dispatch_count"], 2);
    }
}
