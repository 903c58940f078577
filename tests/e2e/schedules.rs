//! Schedules end to end: real nats-server, our gateway's dispatcher, the local worker running
//! the real pyoco. One-shot, interval and cron schedules fire on their slots and their runs
//! complete carrying `schedule_id`; two gateways on one NATS dispatch each slot once; pause,
//! resume and delete; the catch-up rule; a cron in a time zone with daylight saving time.

use std::time::Duration;

use pyoco_store::{SharedStore, StoreConfig};
use pyoco_testkit::{eventually, settings_for, AppOptions, Gateway, TestApp};
use pyoco_wire::python;
use serde_json::{json, Value};

use crate::README_FLOW;

/// `epoch` as ISO 8601 UTC with `Z` (whole seconds).
fn iso_utc(epoch: f64) -> String {
    let secs = epoch.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn create(app: &TestApp, parts: &[(&str, String)]) -> Value {
    let mut form = reqwest::multipart::Form::new()
        .part(
            "workflow",
            reqwest::multipart::Part::bytes(README_FLOW.as_bytes().to_vec()).file_name("flow.yaml"),
        )
        .text("flow_name", "scheduled");
    for (k, v) in parts {
        form = form.text(k.to_string(), v.clone());
    }
    let response = app
        .http()
        .post(app.url("/schedules/yaml"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The full snapshots of the schedule's runs (`GET /runs?schedule_id=…&include=full`).
async fn runs_of(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, runs) = app
        .get_json(&format!("/runs?schedule_id={id}&include=full&limit=200"))
        .await;
    assert_eq!(status, 200, "{runs}");
    runs.as_array().unwrap().clone()
}

async fn schedule(app: &TestApp, id: &str) -> Value {
    let (_, list) = app.get_json("/schedules").await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["schedule_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn set_paused(app: &TestApp, id: &str, paused: bool) -> Value {
    let response = app
        .http()
        .patch(app.url(&format!("/schedules/{id}")))
        .json(&json!({ "paused": paused }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn delete(app: &TestApp, id: &str) {
    let response = app
        .http()
        .delete(app.url(&format!("/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn scheduled_at(run: &Value) -> f64 {
    run["scheduled_at"]
        .as_f64()
        .unwrap_or_else(|| panic!("no scheduled_at: {run}"))
}

/// Each run's slot is on the grid `anchor + k × step`, and no slot ran twice.
fn assert_on_grid_once(runs: &[Value], anchor: f64, step: f64) {
    let mut slots: Vec<f64> = runs.iter().map(scheduled_at).collect();
    for slot in &slots {
        let k = (slot - anchor) / step;
        assert!(
            (k - k.round()).abs() < 1e-6,
            "slot {slot} is off the grid {anchor} + k × {step}"
        );
    }
    slots.sort_by(f64::total_cmp);
    let before = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), before, "a slot ran twice: {slots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_interval_and_cron_schedules_fire_on_time_and_their_runs_complete() {
    let app = TestApp::start(AppOptions::default()).await;
    let now = python::time().ceil();
    let once = create(&app, &[("run_at", iso_utc(now + 3.0))]).await;
    let interval = create(
        &app,
        &[
            ("interval_seconds", "2".into()),
            ("start_at", iso_utc(now + 1.0)),
        ],
    )
    .await;
    let cron = create(&app, &[("cron", "*/2 * * * * *".into())]).await;
    assert_eq!(once["next_run_at"], now + 3.0);
    assert_eq!(interval["next_run_at"], now + 1.0);
    let ids = [&once, &interval, &cron].map(|s| s["schedule_id"].as_str().unwrap().to_string());

    // Two completed runs of the repeating ones, the one run of the one-shot.
    for (id, want) in ids.iter().zip([1, 2, 2]) {
        eventually(
            Duration::from_secs(45),
            "the schedule's runs completed",
            || async {
                let runs = runs_of(&app, id).await;
                let done = runs.iter().filter(|r| r["status"] == "COMPLETED").count();
                (done >= want).then_some(())
            },
        )
        .await;
    }
    delete(&app, &ids[1]).await;
    delete(&app, &ids[2]).await;

    for (i, id) in ids.iter().enumerate() {
        let runs = runs_of(&app, id).await;
        for run in &runs {
            assert_eq!(run["schedule_id"], json!(id), "{run}");
            assert_eq!(run["flow_name"], "scheduled");
            assert_eq!(run["params"], json!({"name": "world"}));
            if run["status"] == "COMPLETED" {
                let late = run["start_time"].as_f64().unwrap() - scheduled_at(run);
                assert!(
                    (0.0..5.0).contains(&late),
                    "started {late} s after its slot: {run}"
                );
            }
        }
        match i {
            0 => {
                assert_eq!(runs.len(), 1);
                assert_eq!(scheduled_at(&runs[0]), now + 3.0);
            }
            1 => assert_on_grid_once(&runs, now + 1.0, 2.0),
            _ => assert_on_grid_once(&runs, 0.0, 2.0),
        }
        // The same runs through `GET /schedules/{id}/runs` (summaries, with schedule_id); a
        // deleted schedule has none to show (0.7: 404), its runs stay.
        let (status, listed) = app
            .get_json(&format!("/schedules/{id}/runs?limit=200"))
            .await;
        if i > 0 {
            assert_eq!(
                (status, listed),
                (404, json!({"detail": "schedule not found"}))
            );
            continue;
        }
        assert_eq!(status, 200, "{listed}");
        let listed = listed.as_array().unwrap();
        assert!(listed.len() >= runs.len(), "{listed:?}");
        assert!(listed.iter().all(|r| r["schedule_id"] == json!(id)));
    }
    // The one-shot completed; its record says what ran.
    let once = schedule(&app, &ids[0]).await;
    assert_eq!(once["status"], "COMPLETED", "{once}");
    assert_eq!(once["next_run_at"], Value::Null);
    assert_eq!(once["dispatch_count"], 1);
    let run = &runs_of(&app, &ids[0]).await[0];
    assert_eq!(once["last_run_id"], run["run_id"]);
    // A plain run has no schedule_id: the filter leaves it out.
    let plain = app.submit_yaml(README_FLOW, "plain", "default").await;
    let runs = runs_of(&app, &ids[0]).await;
    assert!(runs.iter().all(|r| r["run_id"] != json!(plain)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_nats_dispatch_every_slot_exactly_once() {
    let app = TestApp::gateway_only().await;
    let settings = settings_for(&app.nats_url());
    let store = SharedStore::connect_in_background(
        &settings.nats_url,
        "second-gateway",
        StoreConfig::from(&settings),
    );
    let second = Gateway::start(&settings, store).await;
    let every_second = create(&app, &[("cron", "* * * * * *".into())]).await;
    let id = every_second["schedule_id"].as_str().unwrap().to_string();
    // The second gateway knows it too (its own watch of the bucket).
    eventually(
        Duration::from_secs(10),
        "the second gateway lists it",
        || async {
            let list: Value = second.get("/schedules").await.json().await.ok()?;
            (list.as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    delete(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let runs = runs_of(&app, &id).await;
    assert!(runs.len() >= 6, "only {} runs in 8 s", runs.len());
    assert_on_grid_once(&runs, 0.0, 1.0);
    // No slot was skipped either: consecutive seconds.
    let mut slots: Vec<f64> = runs.iter().map(scheduled_at).collect();
    slots.sort_by(f64::total_cmp);
    assert_eq!(
        slots.last().unwrap() - slots[0],
        (slots.len() - 1) as f64,
        "{slots:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_delete_stop_firing_and_resume_restarts() {
    let app = TestApp::gateway_only().await;
    let every = create(&app, &[("interval_seconds", "1".into())]).await;
    let id = every["schedule_id"].as_str().unwrap().to_string();
    let count = || async { runs_of(&app, &id).await.len() };
    eventually(Duration::from_secs(10), "two runs", || async {
        (count().await >= 2).then_some(())
    })
    .await;

    let paused = set_paused(&app, &id, true).await;
    assert_eq!(paused["status"], "PAUSED");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_pause = count().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count().await, at_pause, "a paused schedule fired");

    let resumed = set_paused(&app, &id, false).await;
    assert_eq!(resumed["status"], "ACTIVE");
    let next = resumed["next_run_at"].as_f64().unwrap();
    assert!(
        next > python::time() - 0.5 && next <= python::time() + 1.0,
        "{resumed}"
    );
    eventually(Duration::from_secs(10), "runs again", || async {
        (count().await >= at_pause + 2).then_some(())
    })
    .await;

    delete(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_delete = count().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count().await, at_delete, "a deleted schedule fired");
    assert_eq!(schedule(&app, &id).await, Value::Null);
    let runs = runs_of(&app, &id).await;
    let slots: Vec<f64> = runs.iter().map(scheduled_at).collect();
    let mut sorted = slots.clone();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    assert_eq!(sorted.len(), slots.len(), "a slot ran twice");
}

/// A record as 0.7 (or a gateway that was down) left it: due `ago` seconds ago.
fn overdue_record(id: &str, ago: f64, catch_up: &str) -> Value {
    let now = python::time();
    json!({"schedule_id": id, "flow_name": "late", "tag": "default", "status": "ACTIVE",
        "schedule_type": "interval", "workflow_yaml": README_FLOW,
        "workflow_yaml_sha256": "0", "workflow_yaml_bytes": README_FLOW.len(),
        "params": {"name": "late"}, "tenant_id": null, "api_key_id": null,
        "created_at": now - 3600.0, "updated_at": now - 3600.0, "last_submitted_at": null,
        "last_run_id": null, "dispatch_count": 0, "last_error": null, "lease_until": null,
        "run_at": null, "next_run_at": now - ago, "interval_seconds": 600.0,
        "start_at": now - ago, "catch_up": catch_up})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_missed_while_no_gateway_ran_are_skipped_or_caught_up_once() {
    let app = TestApp::gateway_only().await;
    for (id, catch_up) in [("skip", "none"), ("once", "one")] {
        app.store()
            .schedules()
            .put(
                id,
                serde_json::to_vec(&overdue_record(id, 1800.0, catch_up)).unwrap(),
            )
            .await
            .unwrap();
    }
    // A one-shot as 0.7 writes it (no `catch_up`), due an hour ago: runs, however late.
    let mut once = overdue_record("once07", 3600.0, "none");
    let once = once.as_object_mut().unwrap();
    once.remove("catch_up");
    once.insert("schedule_type".into(), json!("once"));
    once.insert("run_at".into(), once["next_run_at"].clone());
    once.insert("interval_seconds".into(), Value::Null);
    once.insert("start_at".into(), Value::Null);
    app.store()
        .schedules()
        .put("once07", serde_json::to_vec(&once).unwrap())
        .await
        .unwrap();
    let caught_up = eventually(Duration::from_secs(10), "the catch-up run", || async {
        let s = schedule(&app, "once").await;
        (s["dispatch_count"] == 1).then_some(s)
    })
    .await;
    let skipped = eventually(Duration::from_secs(10), "the skip", || async {
        let s = schedule(&app, "skip").await;
        (s["next_run_at"].as_f64()? > python::time()).then_some(s)
    })
    .await;
    assert_eq!(skipped["dispatch_count"], 0, "{skipped}");
    assert!(runs_of(&app, "skip").await.is_empty());
    let runs = runs_of(&app, "once").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["params"], json!({"name": "late"}));
    let once = eventually(Duration::from_secs(10), "the late one-shot", || async {
        let s = schedule(&app, "once07").await;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    assert_eq!(once["dispatch_count"], 1, "{once}");
    assert_eq!(runs_of(&app, "once07").await.len(), 1);
    // Both continue on their 600 s grid, strictly after now.
    for s in [&skipped, &caught_up] {
        let next = s["next_run_at"].as_f64().unwrap();
        assert!(
            next > python::time() && next <= python::time() + 600.0,
            "{s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_in_a_time_zone_with_daylight_saving_time_fires_on_its_grid() {
    let app = TestApp::start(AppOptions::default()).await;
    let cron = create(
        &app,
        &[
            ("cron", "*/2 * * * * *".into()),
            ("timezone", "America/New_York".into()),
        ],
    )
    .await;
    let id = cron["schedule_id"].as_str().unwrap().to_string();
    assert_eq!(cron["timezone"], "America/New_York");
    eventually(Duration::from_secs(45), "two completed runs", || async {
        let runs = runs_of(&app, &id).await;
        (runs.iter().filter(|r| r["status"] == "COMPLETED").count() >= 2).then_some(())
    })
    .await;
    delete(&app, &id).await;
    assert_on_grid_once(&runs_of(&app, &id).await, 0.0, 2.0);
    // A daily 02:30 there is due at 02:30 New York time (06:30 or 07:30 UTC).
    let daily = create(
        &app,
        &[
            ("cron", "30 2 * * *".into()),
            ("timezone", "America/New_York".into()),
        ],
    )
    .await;
    let next = daily["next_run_at"].as_f64().unwrap() as i64;
    let utc_time = next.rem_euclid(86_400);
    assert!(
        utc_time == 6 * 3600 + 1800 || utc_time == 7 * 3600 + 1800,
        "{daily}"
    );
}

#[test]
fn iso_utc_formats() {
    assert_eq!(iso_utc(0.0), "1970-01-01T00:00:00Z");
    assert_eq!(iso_utc(1_893_456_000.0), "2030-01-01T00:00:00Z");
    assert_eq!(iso_utc(1_709_164_800.0 + 3661.0), "2024-02-29T01:01:01Z");
}
