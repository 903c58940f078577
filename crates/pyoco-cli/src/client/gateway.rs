//! The HTTP side of `pyoco-client`: one gateway, its base URL and API key, and requests whose
//! failures are already [`CliError`]s with a reason and a hint.
//!
//! Like 0.5.1's `PyocoHttpClient`, the API key header is sent on every request when a key is
//! given, paths are appended to the `--server` URL (which may have a path prefix of its own,
//! e.g. behind a reverse proxy), and any non-2xx answer is an error. Path segments such as run
//! ids are percent-encoded (0.5.1 sends them as typed).
//!
//! Timeouts differ from 0.5.1 (httpx's 5 s for everything, which can cut a `watch` between
//! heartbeats): connecting may take [`CONNECT_TIMEOUT`], a plain request [`REQUEST_TIMEOUT`],
//! and a watch stream may stay silent for [`STREAM_IDLE_TIMEOUT`] between chunks; an upload gets
//! [`upload_timeout`] for its size. Uploads are streamed from disk ([`streamed_file_part`]), where
//! 0.5.1 reads the whole file into memory first.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use reqwest::{
    header::HeaderName, header::HeaderValue, multipart, Method, RequestBuilder, Response, Url,
};
use serde_json::Value;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::ReaderStream;

use super::error::{CliError, HttpFailure};

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The gateway sends a heartbeat at least every ~5 s on an idle watch.
pub(crate) const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Query parameters, in the order they are sent.
pub(crate) type Query = Vec<(&'static str, String)>;

/// A pyoco-server gateway.
pub(crate) struct Gateway {
    http: reqwest::Client,
    base: Url,
}

impl Gateway {
    /// A client for the gateway at `server`, sending `api_key` (when non-empty) in the header
    /// `api_key_header`.
    pub(crate) fn new(
        server: &str,
        api_key: Option<&str>,
        api_key_header: &str,
    ) -> Result<Gateway, CliError> {
        let base = parse_server(server)?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key.filter(|k| !k.is_empty()) {
            let name = HeaderName::from_bytes(api_key_header.as_bytes()).map_err(|_| {
                CliError::input(
                    format!("--api-key-header is not a valid HTTP header name: {api_key_header:?}"),
                    "pass a header name such as X-API-Key (the gateway's PYOCO_HTTP_API_KEY_HEADER)",
                )
            })?;
            let mut value = HeaderValue::from_str(key).map_err(|_| {
                CliError::input(
                    "--api-key contains characters that cannot be sent in an HTTP header",
                    "pass the key exactly as `pyoco-server-admin api-key create` printed it \
                     (pyoco_<id>.<secret>)",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("pyoco-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Unexpected(format!("cannot create the HTTP client: {e}")))?;
        Ok(Gateway { http, base })
    }

    /// The URL of `segments` (each percent-encoded) under the base URL, with `query`.
    pub(crate) fn url(&self, segments: &[&str], query: &Query) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("the base URL is http(s), which has a path")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// A request builder for `method` on `url`.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Send a request and check its status; the response body is left unread (streams).
    pub(crate) async fn send_streaming(
        &self,
        request: RequestBuilder,
    ) -> Result<Response, CliError> {
        Ok(self.execute(request).await?.2)
    }

    /// Send a request (with [`REQUEST_TIMEOUT`]), check its status and read the body as text.
    pub(crate) async fn send_text(&self, request: RequestBuilder) -> Result<String, CliError> {
        let (method, url, response) = self.execute(request.timeout(REQUEST_TIMEOUT)).await?;
        response
            .text()
            .await
            .map_err(|e| connection_error(&method, &url, &e))
    }

    /// Send a request, check its status and decode the body as JSON (Python's dialect: `NaN`
    /// and `Infinity` are read as null).
    pub(crate) async fn send_json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        self.send_json_within(request, REQUEST_TIMEOUT).await
    }

    /// [`Gateway::send_json`] with a `timeout` for the whole exchange (an upload needs longer).
    pub(crate) async fn send_json_within(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, CliError> {
        let (method, url, response) = self.execute(request.timeout(timeout)).await?;
        let text = response
            .text()
            .await
            .map_err(|e| connection_error(&method, &url, &e))?;
        pyoco_wire::value_from_python_json(text.as_bytes()).map_err(|e| {
            let excerpt: String = text.chars().take(200).collect();
            CliError::Http(HttpFailure {
                status: 200,
                method: method.to_string(),
                path: url.path().to_string(),
                body: format!("the answer is not JSON ({e}): {excerpt}"),
            })
        })
    }

    /// Send a request; a non-2xx answer becomes [`CliError::Http`] with its body.
    async fn execute(&self, request: RequestBuilder) -> Result<(Method, Url, Response), CliError> {
        let request = request
            .build()
            .map_err(|e| CliError::Unexpected(format!("cannot build the request: {e}")))?;
        let method = request.method().clone();
        let url = request.url().clone();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| connection_error(&method, &url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok((method, url, response));
        }
        let body = response.text().await.unwrap_or_default();
        Err(CliError::Http(HttpFailure {
            status: status.as_u16(),
            method: method.to_string(),
            path: url.path().to_string(),
            body,
        }))
    }

    /// `GET <segments>?<query>` as JSON.
    pub(crate) async fn get_json(
        &self,
        segments: &[&str],
        query: &Query,
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        self.send_json(self.request(Method::GET, url)).await
    }
}

/// The slowest upload rate [`upload_timeout`] allows for (bytes per second).
const MIN_UPLOAD_RATE: u64 = 64 * 1024;

/// How long an upload of `len` bytes may take in all: [`REQUEST_TIMEOUT`] plus the time to send
/// it at [`MIN_UPLOAD_RATE`] (a 50 MB wheel: about 13 minutes), so a slow link is not cut off
/// while a gateway that stopped answering still is.
pub(crate) fn upload_timeout(len: u64) -> Duration {
    REQUEST_TIMEOUT + Duration::from_secs(len / MIN_UPLOAD_RATE)
}

/// A file as a multipart part whose content is read in chunks while it is sent, never whole in
/// memory. `on_read` is called with the size of each chunk as it is read (for a progress bar);
/// if reading the file fails mid-way, the request fails and the returned [`ReadFailure`] says
/// why.
pub(crate) fn streamed_file_part(
    file: tokio::fs::File,
    len: u64,
    file_name: String,
    on_read: impl FnMut(u64) + Send + 'static,
) -> (multipart::Part, ReadFailure) {
    let failure = ReadFailure::default();
    let reader = CountingReader {
        inner: file,
        on_read: Box::new(on_read),
        failure: failure.clone(),
    };
    let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(reader, 64 * 1024));
    let part = multipart::Part::stream_with_length(body, len)
        .file_name(file_name)
        .mime_str("application/octet-stream")
        .expect("a valid MIME type");
    (part, failure)
}

/// The error that stopped a [`streamed_file_part`] from reading its file, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadFailure(Arc<Mutex<Option<String>>>);

impl ReadFailure {
    /// The I/O error's text, once reading failed.
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn set(&self, error: &io::Error) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert_with(|| error.to_string());
        }
    }
}

/// An [`AsyncRead`] that reports how many bytes went through it.
struct CountingReader<R> {
    inner: R,
    on_read: Box<dyn FnMut(u64) + Send>,
    failure: ReadFailure,
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    (this.on_read)(read as u64);
                }
            }
            Poll::Ready(Err(e)) => this.failure.set(e),
            Poll::Pending => {}
        }
        poll
    }
}

/// Parse `--server`: an absolute http(s) URL, trailing slashes ignored.
fn parse_server(server: &str) -> Result<Url, CliError> {
    let trimmed = server.trim().trim_end_matches('/');
    let invalid = |why: String| CliError::Connection {
        reason: format!("invalid --server URL {server:?}: {why}"),
        hint: "pass the gateway's base URL, e.g. --server http://127.0.0.1:8000".to_string(),
    };
    let url = Url::parse(trimmed).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => {}
        "http" | "https" => return Err(invalid("no host".to_string())),
        other => return Err(invalid(format!("unsupported scheme {other:?}"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it has a query or fragment".to_string()));
    }
    Ok(url)
}

/// A request that got no HTTP answer: say where we tried to go and what to check.
pub(crate) fn connection_error(method: &Method, url: &Url, error: &reqwest::Error) -> CliError {
    let mut server = url.clone();
    server.set_path("");
    server.set_query(None);
    let server = server.as_str().trim_end_matches('/').to_string();
    let cause = root_cause(error);
    let (what, hint) = if error.is_timeout() {
        (
            format!("timed out ({cause})"),
            format!(
                "the gateway at {server} did not answer in time: check that it is healthy \
                 (`curl {server}/health`) and that NATS is up"
            ),
        )
    } else if error.is_connect() {
        (
            cause,
            format!(
                "is the gateway running at {server}? start it with `pyoco-server up --with-nats`, \
                 or pass --server URL (or set PYOCO_SERVER_URL)"
            ),
        )
    } else {
        (
            cause,
            format!(
                "the connection to {server} broke: check the gateway and the network, then retry"
            ),
        )
    };
    CliError::Connection {
        reason: format!("{method} {url}: {what}"),
        hint,
    }
}

/// The innermost error message (e.g. `Connection refused (os error 111)`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(server: &str) -> Gateway {
        Gateway::new(server, None, "X-API-Key").unwrap()
    }

    #[test]
    fn paths_are_appended_to_the_server_url_and_segments_encoded() {
        let empty = Query::new();
        assert_eq!(
            gw("http://127.0.0.1:8000")
                .url(&["runs", "a b/c"], &empty)
                .as_str(),
            "http://127.0.0.1:8000/runs/a%20b%2Fc"
        );
        assert_eq!(
            gw("http://h:1/prefix/").url(&["runs"], &empty).as_str(),
            "http://h:1/prefix/runs"
        );
        let query: Query = vec![("include", "records".into()), ("since", "1.5".into())];
        assert_eq!(
            gw("http://h:1")
                .url(&["runs", "r", "watch"], &query)
                .as_str(),
            "http://h:1/runs/r/watch?include=records&since=1.5"
        );
    }

    #[test]
    fn a_bad_server_url_is_reported_with_an_example() {
        for bad in ["localhost:8000", "ftp://h", "http://", "http://h/?x=1"] {
            let err = Gateway::new(bad, None, "X-API-Key")
                .err()
                .expect(bad)
                .to_string();
            assert!(
                err.starts_with("ERR-PYOCO-HTTP: connection error\n"),
                "{err}"
            );
            assert!(err.contains("--server http://127.0.0.1:8000"), "{err}");
        }
    }

    #[test]
    fn uploads_get_more_time_the_larger_they_are() {
        assert_eq!(upload_timeout(0), REQUEST_TIMEOUT);
        assert_eq!(
            upload_timeout(50 * 1024 * 1024),
            REQUEST_TIMEOUT + Duration::from_secs(800)
        );
    }

    /// Reads `data` in small pieces, then fails with `fail` (when given).
    struct Source {
        data: Vec<u8>,
        fail: Option<io::ErrorKind>,
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.data.is_empty() {
                return Poll::Ready(match self.fail {
                    Some(kind) => Err(io::Error::from(kind)),
                    None => Ok(()),
                });
            }
            let n = self.data.len().min(buf.remaining()).min(1000);
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    fn counted(source: Source) -> (CountingReader<Source>, Arc<Mutex<u64>>, ReadFailure) {
        let total = Arc::new(Mutex::new(0u64));
        let seen = total.clone();
        let failure = ReadFailure::default();
        let reader = CountingReader {
            inner: source,
            on_read: Box::new(move |n| *seen.lock().unwrap() += n),
            failure: failure.clone(),
        };
        (reader, total, failure)
    }

    #[tokio::test]
    async fn the_counting_reader_reports_every_byte_and_the_read_error() {
        use tokio::io::AsyncReadExt;

        let (mut reader, total, failure) = counted(Source {
            data: vec![7; 12_345],
            fail: None,
        });
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!((out.len(), *total.lock().unwrap()), (12_345, 12_345));
        assert_eq!(failure.get(), None);

        let (mut reader, total, failure) = counted(Source {
            data: vec![1; 2_500],
            fail: Some(io::ErrorKind::UnexpectedEof),
        });
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).await.is_err());
        assert_eq!(*total.lock().unwrap(), 2_500);
        assert!(failure.get().is_some());
    }

    #[test]
    fn a_bad_api_key_header_is_an_input_error() {
        let err = Gateway::new("http://h:1", Some("k"), "bad header")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("ERR-PYOCO-0018: "), "{err}");
    }
}
