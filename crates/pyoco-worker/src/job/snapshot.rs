//! Snapshot shapes the claim and the ways a run ends build on: a blank run, the job's metadata
//! laid over what a gateway stored, unfinished tasks ended in a given state.

use pyoco_wire::{JobMessage, RunSnapshot, RunStatus, TaskState};

/// Compare-and-set attempts of a claim, or of ending a run that will not execute (each conflict
/// means another writer got in between).
pub(super) const MAX_CLAIM_ATTEMPTS: usize = 8;

/// Tasks still in one of `from` become `to` (with `ended_at`, and `error` if given).
pub(super) fn end_unfinished_tasks(
    s: &mut RunSnapshot,
    from: &[TaskState],
    to: TaskState,
    error: Option<&str>,
    t: f64,
) {
    for (name, state) in s.tasks.iter_mut() {
        if from.contains(state) {
            *state = to.clone();
            if let Some(rec) = s.task_records.get_mut(name) {
                rec.state = to.clone();
                rec.ended_at = Some(t);
                if let Some(e) = error {
                    rec.error = Some(e.to_string());
                }
            }
        }
    }
}

/// A snapshot with nothing known but the run id and flow name.
pub(super) fn blank_snapshot(run_id: &str, flow_name: &str, t: f64) -> RunSnapshot {
    RunSnapshot {
        run_id: run_id.to_string(),
        flow_name: flow_name.to_string(),
        tag: None,
        tags: Vec::new(),
        tenant_id: None,
        api_key_id: None,
        workflow_yaml_sha256: Some(None),
        workflow_yaml_bytes: Some(None),
        cancel_requested_at: Some(None),
        cancel_requested_by: Some(None),
        status: RunStatus::Pending,
        params: Default::default(),
        tasks: Default::default(),
        task_records: Default::default(),
        start_time: None,
        end_time: None,
        heartbeat_at: t,
        updated_at: t,
        error: None,
        worker_id: None,
        task_records_truncated: None,
        extra: Default::default(),
    }
}

/// Lay the job's metadata over a stored snapshot: flow name, tags, tenant, API key, workflow
/// digest and params (what a gateway stored is kept where the job says nothing).
pub(super) fn apply_job_metadata(s: &mut RunSnapshot, job: &JobMessage) {
    s.flow_name = job.flow_name.clone();
    s.tag = Some(job.tag.clone());
    s.tags = if job.tags.is_empty() {
        vec![job.tag.clone()]
    } else {
        job.tags.clone()
    };
    s.tenant_id = job.tenant_id.clone().or(s.tenant_id.take());
    s.api_key_id = job.api_key_id.clone().or(s.api_key_id.take());
    s.workflow_yaml_sha256 = Some(
        job.workflow_yaml_sha256
            .clone()
            .or(s.workflow_yaml_sha256.clone().flatten()),
    );
    s.workflow_yaml_bytes = Some(job.workflow_yaml_bytes.or(s.workflow_yaml_bytes.flatten()));
    s.params = job.params.clone();
    // pyoco-server 0.7: a run a schedule dispatched names it in every snapshot.
    if let Some(schedule_id) = job
        .extra
        .get("schedule_id")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    {
        s.extra.insert("schedule_id".into(), schedule_id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyoco_wire::TaskRecord;

    #[test]
    fn unfinished_tasks_end_in_the_given_state() {
        let mut s = blank_snapshot("r", "f", 1.0);
        s.tasks.insert("a".into(), TaskState::Succeeded);
        s.tasks.insert("b".into(), TaskState::Running);
        s.tasks.insert("c".into(), TaskState::Pending);
        s.task_records
            .insert("b".into(), TaskRecord::new(TaskState::Running));
        end_unfinished_tasks(
            &mut s,
            &[TaskState::Running, TaskState::Pending],
            TaskState::Cancelled,
            None,
            2.0,
        );
        assert_eq!(s.tasks["a"], TaskState::Succeeded);
        assert_eq!(s.tasks["b"], TaskState::Cancelled);
        assert_eq!(s.tasks["c"], TaskState::Cancelled);
        assert_eq!(s.task_records["b"].ended_at, Some(2.0));
    }
}
