//! The two clocks that run beside a job: the run heartbeat and the in-progress ACK.
//!
//! * **Run heartbeat** (`PYOCO_RUN_HEARTBEAT_INTERVAL_SEC`, 1 s): rewrite the snapshot with fresh
//!   `heartbeat_at`/`updated_at`. The write is a compare-and-set, so it is also the cancel
//!   check: a cancel written by a gateway changes the revision, the write conflicts, the worker
//!   re-reads and sees the request. A failed heartbeat is logged and the run goes on — unlike
//!   0.5.1, where it made the run execute twice (§14-5).
//! * **In-progress ACK** (`+WPI`, `PYOCO_ACK_PROGRESS_INTERVAL_SEC`, 10 s): keeps JetStream from
//!   redelivering a long run to another worker. The period follows 0.5.1's rule (§6.5), see
//!   [`ack_progress_interval`]. A failure is logged, never silent (§14-24).
//!
//! Both are plain `tokio::time::Interval`s polled by the job's event loop (`job/execute.rs`), so
//! they stop exactly when the job does and can never outlive it.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// §6.5: `interval ≤ 0` disables in-progress ACKs; an interval of at least the ack wait would
/// be too late, so `max(0.5 s, ack_wait / 2)` is used instead.
pub fn ack_progress_interval(interval_sec: f64, ack_wait: Duration) -> Option<Duration> {
    if interval_sec.is_nan() || interval_sec <= 0.0 {
        return None;
    }
    let wanted = Duration::try_from_secs_f64(interval_sec).unwrap_or(Duration::MAX);
    if wanted >= ack_wait {
        Some((ack_wait / 2).max(Duration::from_millis(500)))
    } else {
        Some(wanted)
    }
}

/// A periodic tick whose first tick comes one period from now (not immediately), and which
/// does not try to catch up on ticks missed while the job was busy.
pub(crate) fn ticker(period: Duration) -> Interval {
    let period = period.max(Duration::from_millis(10));
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_progress_follows_the_0_5_1_rule() {
        let s = Duration::from_secs;
        assert_eq!(ack_progress_interval(10.0, s(30)), Some(s(10)));
        assert_eq!(ack_progress_interval(0.0, s(30)), None);
        assert_eq!(ack_progress_interval(-1.0, s(30)), None);
        assert_eq!(ack_progress_interval(f64::NAN, s(30)), None);
        // At or above the ack wait: half the ack wait, at least 0.5 s.
        assert_eq!(ack_progress_interval(10.0, s(2)), Some(s(1)));
        assert_eq!(ack_progress_interval(30.0, s(30)), Some(s(15)));
        assert_eq!(
            ack_progress_interval(5.0, Duration::from_millis(600)),
            Some(Duration::from_millis(500))
        );
    }
}
