//! Connection limits (issue 13: connections that never finish their headers, and idle ones,
//! were kept open until the process ran out of file descriptors): the header read timeout,
//! the keep-alive timeout, and the connection cap with its 503 — on raw sockets, so the test
//! controls every byte.

use std::time::{Duration, Instant};

use pyoco_testkit::{AppOptions, TestApp};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn app_with(adjust: impl FnOnce(&mut pyoco_config::Settings)) -> TestApp {
    TestApp::start_with(AppOptions::gateway_only(), adjust).await
}

/// Waits until the server closes `stream` (EOF or reset) and returns how long that took;
/// panics if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end)
        .await
        .unwrap_or_else(|_| panic!("the connection is still open after {within:?}"));
    started.elapsed()
}

/// `GET /health` on a fresh connection; panics unless it answers 200 within `within`.
async fn health_within(app: &TestApp, within: Duration) -> Duration {
    let started = Instant::now();
    let response = tokio::time::timeout(within, app.get("/health"))
        .await
        .unwrap_or_else(|_| panic!("/health did not answer within {within:?}"));
    assert_eq!(response.status(), 200);
    started.elapsed()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr()).await.expect("connect")
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_at_the_header_read_timeout() {
    let app = app_with(|s| {
        s.http_header_read_timeout_sec = 1.0;
        s.http_keep_alive_timeout_sec = 60.0;
    })
    .await;
    // 200 slowloris connections: a byte of the head every 200 ms, never the blank line.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = connect(&app).await;
        c.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        conns.push(c);
    }
    let trickle = async {
        for i in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for c in conns.iter_mut() {
                let _ = c.write_all(format!("x-{i}: y\r\n").as_bytes()).await;
            }
        }
    };
    let (_, health) = tokio::join!(trickle, health_within(&app, Duration::from_secs(1)));
    assert!(
        health < Duration::from_millis(500),
        "/health took {health:?}"
    );
    for c in conns.iter_mut() {
        // Cut ~1 s after the first byte, whatever keeps arriving.
        closed_within(c, Duration::from_secs(3)).await;
    }
    // And a complete request on a new connection is served as usual.
    health_within(&app, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_keep_alive_timeout_but_requests_in_flight_are_not() {
    let app = app_with(|s| {
        s.http_header_read_timeout_sec = 10.0;
        s.http_keep_alive_timeout_sec = 1.0;
    })
    .await;
    // A connection that never sends a byte.
    let mut silent = connect(&app).await;
    // A kept-alive connection after one answered request.
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // An SSE watch (a request in flight) that lasts longer than the keep-alive timeout.
    let run_id = app
        .submit_yaml(crate::helpers::FLOW_YAML, "main", "default")
        .await;
    let watch_started = Instant::now();
    let mut watch = app
        .http()
        .get(app.url(&format!("/runs/{run_id}/watch?timeout_sec=3")))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);

    let silent_for = closed_within(&mut silent, Duration::from_secs(4)).await;
    let kept_for = closed_within(&mut kept, Duration::from_secs(4)).await;
    assert!(silent_for < Duration::from_secs(3), "{silent_for:?}");
    assert!(kept_for < Duration::from_secs(3), "{kept_for:?}");
    while watch.chunk().await.expect("the watch is not cut").is_some() {}
    let lasted = watch_started.elapsed();
    assert!(
        lasted >= Duration::from_millis(2_500),
        "the watch ended after {lasted:?}: cut by the keep-alive timeout"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_get_a_clean_503_and_the_cap_frees_up() {
    let app = app_with(|s| {
        s.http_max_connections = 20;
        s.http_keep_alive_timeout_sec = 60.0;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(&app).await);
    }
    // Give the gateway a moment to accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect(&app).await;
    over.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), over.read_to_end(&mut answer))
        .await
        .expect("the refusal arrives at once")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body["detail"],
        "too many connections: the gateway serves at most 20 at once \
         (PYOCO_HTTP_MAX_CONNECTIONS); retry later"
    );
    // An HTTP client sees an ordinary JSON 503 (a new client: the app's own may hold a
    // pooled connection that is one of the 20).
    let response = reqwest::Client::new()
        .get(app.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let response = reqwest::Client::new()
            .get(app.url("/health"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the held connections closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
