//! The gateway's accept loop: what `axum::serve` does (HTTP/1.1 through hyper, graceful
//! shutdown, the peer address for `ConnectInfo`), plus the connection limits it lacks
//! (issue 13: 1,000 connections that never finished their headers and ~20,000 idle ones were
//! kept open until the process ran out of file descriptors and stopped answering `/health`).
//!
//! - **Header read timeout** (`PYOCO_HTTP_HEADER_READ_TIMEOUT_SEC`): once the first byte of a
//!   request has arrived, its whole head must arrive within this time, or the connection is
//!   closed (slowloris). The clock does not restart with each byte.
//! - **Keep-alive timeout** (`PYOCO_HTTP_KEEP_ALIVE_TIMEOUT_SEC`): a connection with no request
//!   in flight and no byte received for this long is closed (a new one, too). A request in
//!   flight (an SSE watch, a long download) is never cut by it.
//! - **Connection cap** (`PYOCO_HTTP_MAX_CONNECTIONS`): beyond it a new connection gets a short
//!   `503 {"detail": "too many connections: …"}` with `Retry-After` and `Connection: close`
//!   (at most [`REJECTING_AT_ONCE`] such answers are being written at a time; beyond that a
//!   connection is closed at once), and the connections already open are not slowed down.
//!   The process's open-file limit is raised to its hard limit at start, and the cap is
//!   lowered (with a warning) when the limit cannot hold it.
//!
//! One timer per connection: it sleeps until the connection's next deadline and is woken by
//! the first byte of a request head, so 10,000 idle connections cost no periodic wake-ups.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1, Request};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify, Semaphore},
    time::Instant,
};
use tower::ServiceExt;

/// How many `503 too many connections` answers are written at once; beyond that a connection
/// over the cap is closed without an answer (a flood must not cost more than the cap itself).
pub const REJECTING_AT_ONCE: usize = 256;

/// File descriptors kept free beside the connections (NATS, wheel files, the runner pipes).
const RESERVED_FDS: u64 = 256;

/// The connection limits (settings rows in the HTTP gateway group).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// At most this many connections are served at once.
    pub max_connections: usize,
    /// A request's head must arrive within this time of its first byte (`None`: no limit).
    pub header_read_timeout: Option<Duration>,
    /// A connection with nothing in flight is closed after this long without a byte
    /// (`None`: kept open).
    pub keep_alive_timeout: Option<Duration>,
}

impl ConnLimits {
    pub fn from_settings(settings: &pyoco_config::Settings) -> ConnLimits {
        let secs = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s));
        ConnLimits {
            max_connections: usize::try_from(settings.http_max_connections).unwrap_or(usize::MAX),
            header_read_timeout: secs(settings.http_header_read_timeout_sec),
            keep_alive_timeout: secs(settings.http_keep_alive_timeout_sec),
        }
    }
}

/// Accept connections on `listener` and serve `app` on each until `shutdown` resolves; then
/// stop accepting, run `on_shutdown`, let each connection finish its request in flight, and
/// return once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    let cap = effective_cap(limits.max_connections);
    let open = Arc::new(Semaphore::new(cap));
    let rejecting = Arc::new(Semaphore::new(REJECTING_AT_ONCE));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut refusals = RateLimitedWarning::new(Duration::from_secs(10));
    let mut accept_errors = RateLimitedWarning::new(Duration::from_secs(10));
    let closed = Arc::new(AtomicU64::new(0));
    let trimmer = tokio::spawn(return_freed_memory(closed.clone()));
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE/ENFILE and aborted handshakes: keep serving the connections we
                    // have, try again shortly.
                    accept_errors.warn(|n| {
                        tracing::warn!(error = %err, repeated = n, "accepting a connection failed")
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true); // small JSON answers: don't let Nagle hold them back
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refusals.warn(|n| {
                tracing::warn!(
                    max_connections = cap,
                    refused = n,
                    "connection refused with 503: the gateway already serves \
                     PYOCO_HTTP_MAX_CONNECTIONS connections"
                )
            });
            if let Ok(slot) = rejecting.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = tokio::time::timeout(Duration::from_secs(2), refuse(stream, cap)).await;
                });
            }
            continue;
        };
        let app = app.clone();
        let closing = closing_rx.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            serve_one(stream, remote, app, limits, closing).await;
            drop(permit);
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    trimmer.abort();
    on_shutdown();
    let _ = closing_tx.send(true);
    // Every connection holds a permit until it is closed.
    let _ = open.acquire_many(cap as u32).await;
    Ok(())
}

/// Connections closed since the last trim that make a trim worth its cost.
const TRIM_AFTER_CLOSED: u64 = 1000;

/// Give the memory of many closed connections back to the system: glibc keeps freed memory
/// in its arenas (10,000 closed SSE watches left the gateway at 150 MiB), so after at least
/// [`TRIM_AFTER_CLOSED`] closes, and at most every 10 s, `malloc_trim(0)` runs on a blocking
/// thread. Elsewhere (musl, macOS) a no-op.
async fn return_freed_memory(closed: Arc<AtomicU64>) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = closed.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TRIM_AFTER_CLOSED {
            continue;
        }
        last = now;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: malloc_trim only walks the allocator's own arenas.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

/// The cap the open-file limit allows: raises the soft limit to the hard one (Linux, macOS)
/// and lowers the cap with a warning when even that cannot hold it.
fn effective_cap(wanted: usize) -> usize {
    let wanted = wanted.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let mut limit = soft;
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                limit = hard;
            }
            let room = limit.saturating_sub(RESERVED_FDS).max(1);
            if (wanted as u64) > room {
                tracing::warn!(
                    max_connections = wanted,
                    open_file_limit = limit,
                    "PYOCO_HTTP_MAX_CONNECTIONS is more than the open-file limit allows; serving \
                     at most {room} connections (raise the limit with `ulimit -n` or systemd's \
                     LimitNOFILE=)"
                );
                return room as usize;
            }
        }
    }
    wanted
}

/// Answer a connection over the cap with a 503 and close it. The request head is read first
/// (up to 16 KiB, briefly) so the client sees the answer instead of a reset.
async fn refuse(mut stream: TcpStream, cap: usize) {
    let mut buf = [0u8; 4096];
    let mut seen = 0usize;
    let read_head = async {
        let mut tail = [0u8; 4];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    seen += n;
                    for &b in &buf[..n] {
                        tail = [tail[1], tail[2], tail[3], b];
                        if &tail == b"\r\n\r\n" {
                            return;
                        }
                    }
                    if seen >= 16 * 1024 {
                        return;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), read_head).await;
    let body = format!(
        "{{\"detail\":\"too many connections: the gateway serves at most {cap} at once \
         (PYOCO_HTTP_MAX_CONNECTIONS); retry later\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// Serve one connection until it closes, times out, or the gateway stops.
async fn serve_one(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut closing: watch::Receiver<bool>,
) {
    let clock = Arc::new(ConnClock::new());
    let io = TokioIo::new(ClockedIo {
        inner: stream,
        clock: clock.clone(),
    });
    let service_clock = clock.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        let in_flight = InFlight::enter(service_clock.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(TrackedBody {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        let deadline = clock.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%remote, "connection ended: {err}");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if clock.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%remote, "closing a connection: header read or keep-alive timeout");
                    return; // dropping the connection closes the socket
                }
            }
            () = clock.head_started.notified() => {} // a new deadline: recompute
            changed = closing.changed(), if !graceful => {
                graceful = true;
                let _ = changed;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a connection's timer needs: requests in flight, when the connection last became idle,
/// and when the head of the request being read started (milliseconds since `epoch`, 0 = none).
struct ConnClock {
    epoch: Instant,
    in_flight: AtomicU32,
    idle_since_ms: AtomicU64,
    head_started_ms: AtomicU64,
    head_started: Notify,
}

impl ConnClock {
    fn new() -> ConnClock {
        ConnClock {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            head_started: Notify::new(),
        }
    }

    /// Milliseconds since the epoch, at least 1 (0 means "not set").
    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// When the connection must be closed if nothing changes; `None` while a request is in
    /// flight (or the limits are off).
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head != 0 {
            return limits.header_read_timeout.map(|t| self.at(head) + t);
        }
        let idle = self.idle_since_ms.load(Ordering::Acquire);
        limits.keep_alive_timeout.map(|t| self.at(idle) + t)
    }

    /// Bytes arrived: with nothing in flight they start a request head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == 0
            && self
                .head_started_ms
                .compare_exchange(0, self.now_ms(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }
}

/// A request in flight on a connection, from its head being parsed until its response body is
/// finished (dropped by hyper).
struct InFlight(Arc<ConnClock>);

impl InFlight {
    fn enter(clock: Arc<ConnClock>) -> InFlight {
        clock.in_flight.fetch_add(1, Ordering::AcqRel);
        clock.head_started_ms.store(0, Ordering::Release);
        InFlight(clock)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        clock.idle_since_ms.store(clock.now_ms(), Ordering::Release);
        clock.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The TCP stream, telling the connection's clock when bytes arrive.
struct ClockedIo {
    inner: TcpStream,
    clock: Arc<ConnClock>,
}

impl AsyncRead for ClockedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        result
    }
}

impl AsyncWrite for ClockedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A warning logged at most once per `every`, saying how often it happened in between (the
/// issue's "one warning line per refusal" flood).
pub(crate) struct RateLimitedWarning {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    pub(crate) fn new(every: Duration) -> RateLimitedWarning {
        RateLimitedWarning {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Call `log` with the number of occurrences it stands for, unless one was logged within
    /// `every`.
    pub(crate) fn warn(&mut self, log: impl FnOnce(u64)) {
        self.suppressed += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= self.every)
        {
            log(self.suppressed);
            self.suppressed = 0;
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_logged_once_per_period_with_the_count_it_stands_for() {
        let mut w = RateLimitedWarning::new(Duration::from_secs(3600));
        let mut logged = Vec::new();
        for _ in 0..5 {
            w.warn(|n| logged.push(n));
        }
        assert_eq!(logged, vec![1]);
        w.last = Some(Instant::now() - Duration::from_secs(3601));
        w.warn(|n| logged.push(n));
        assert_eq!(logged, vec![1, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_idle_head_and_in_flight() {
        let limits = ConnLimits {
            max_connections: 10,
            header_read_timeout: Some(Duration::from_secs(10)),
            keep_alive_timeout: Some(Duration::from_secs(30)),
        };
        let clock = Arc::new(ConnClock::new());
        let start = clock.epoch;
        // Fresh connection: the keep-alive timeout.
        assert_eq!(
            clock.deadline(&limits),
            Some(start + Duration::from_secs(30))
        );
        // First byte at t=5: the head must be complete by t=15.
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.bytes_read();
        let head_deadline = clock.deadline(&limits).unwrap();
        assert!(head_deadline <= start + Duration::from_millis(15_010));
        // More bytes don't move it.
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.bytes_read();
        assert_eq!(clock.deadline(&limits), Some(head_deadline));
        // Head complete: no deadline while the request is in flight.
        let flight = InFlight::enter(clock.clone());
        assert_eq!(clock.deadline(&limits), None);
        clock.bytes_read(); // body bytes: not a head
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(clock.deadline(&limits), None);
        // Response done at t=110: idle again, keep-alive from then on.
        drop(flight);
        let d = clock.deadline(&limits).unwrap();
        assert!(d >= start + Duration::from_secs(140));
        let off = ConnLimits {
            header_read_timeout: None,
            keep_alive_timeout: None,
            ..limits
        };
        assert_eq!(clock.deadline(&off), None);
    }
}
