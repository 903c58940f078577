//! A real browser (headless Chromium through chromedriver) on a web page of another origin:
//! its cross-origin submit to the local gateway is refused and nothing runs, while the same
//! page's submit to a gateway that lists its origin in `PYOCO_HTTP_ALLOWED_ORIGINS` is queued
//! (so the refusal is the gateway's doing, not a page that never sent anything).
//!
//! Needs `scripts/setup.sh --with-browser` (Debian's chromium and chromium-driver).

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder};
use pyoco_testkit::{eventually, free_port, AppOptions, TestApp, TASKS_MODULE};
use serde_json::json;

/// chromedriver, killed when dropped.
pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serve `page` to every request on `listener` (another origin than the gateways'), from a
/// thread.
fn serve_page(listener: TcpListener, page: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
}

/// A page that, once loaded, POSTs a flow.yaml to each gateway the way any web page can
/// without a CORS preflight (`no-cors` multipart), then writes `done` into its title.
fn attacking_page(gateways: &[String]) -> String {
    let flow = format!(
        "version: 1\nflow:\n  graph: |\n    hello\ntasks:\n  hello:\n    callable: {TASKS_MODULE}:hello\n"
    );
    format!(
        r#"<!doctype html><html><head><title>loading</title></head><body><script>
const gateways = {gateways};
const flow = {flow};
(async () => {{
  for (const base of gateways) {{
    const form = new FormData();
    form.append('workflow', new Blob([flow], {{ type: 'application/x-yaml' }}), 'flow.yaml');
    form.append('flow_name', 'main');
    form.append('tag', 'default');
    try {{ await fetch(base + '/runs/yaml', {{ method: 'POST', body: form, mode: 'no-cors' }}); }}
    catch (e) {{ console.log(e); }}
  }}
  document.title = 'done';
}})();
</script></body></html>"#,
        gateways = json!(gateways),
        flow = json!(flow),
    )
}

/// A chromedriver and a headless Chromium session on it (1400×1000, English).
pub(crate) async fn browser() -> (Driver, Client) {
    let driver_port = free_port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (bash scripts/setup.sh --with-browser)"),
    );
    let client = chromium(driver_port).await;
    (driver, client)
}

async fn chromium(port: u16) -> Client {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is installed (bash scripts/setup.sh --with-browser)");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                "--lang=en-US",
            ],
        },
    });
    let caps = caps.as_object().unwrap().clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return client,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("no chromedriver session: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_submit_a_flow_to_the_local_gateway() {
    // The page's address first: the second gateway lists its origin.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let guarded = TestApp::gateway_only().await;
    let allowing = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_allowed_origins = vec![origin.clone()];
    })
    .await;
    let page = attacking_page(&[
        guarded.base_url().to_string(),
        allowing.base_url().to_string(),
    ]);
    serve_page(listener, page);

    let (_driver, client) = browser().await;
    client.goto(&format!("{origin}/")).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the page to send its requests",
        || {
            let client = client.clone();
            async move { (client.title().await.ok()? == "done").then_some(()) }
        },
    )
    .await;
    client.close().await.unwrap();

    // The listing gateway got the page's submit: the browser did send it.
    eventually(
        Duration::from_secs(5),
        "the allowed submit to be queued",
        || async { (allowing.queued_jobs().await == 1).then_some(()) },
    )
    .await;
    // The guarded one refused it: nothing queued, nothing stored.
    assert_eq!(
        guarded.queued_jobs().await,
        0,
        "the cross-origin submit ran"
    );
    let (status, runs) = guarded.get_json("/runs").await;
    assert_eq!((status, runs), (200, json!([])));
}
