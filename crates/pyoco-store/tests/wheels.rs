//! The wheel registry writes and reads the JetStream object store exactly as nats-py 2.12 does:
//! round trips, replacement and deletion, header format, and — against the real Python stack
//! of pyoco-server 0.5.1 — both directions of interop plus the Python gateway's `GET /wheels`.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream::{self, object_store, stream::DirectGetErrorKind};
use base64::{engine::general_purpose::URL_SAFE, Engine};
use bytes::Bytes;
use futures::StreamExt;
use pyoco_store::{wheels::CHUNK_SIZE, PutError, Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_testkit::TestNats;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BUCKET: &str = "pyoco_wheels";
const WHEEL: &str = "demo_pkg-0.1.0-py3-none-any.whl";

async fn store_with(nats: &TestNats, cfg: StoreConfig) -> Store {
    Store::connect(&nats.url(), "test", cfg, DEFAULT_CONNECT_TIMEOUT)
        .await
        .expect("store connects")
}

async fn store(nats: &TestNats) -> Store {
    store_with(nats, StoreConfig::default()).await
}

/// Deterministic pseudo-random bytes (xorshift64*), so no chunk repeats another.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn digest_of(data: &[u8]) -> String {
    format!("SHA-256={}", URL_SAFE.encode(Sha256::digest(data)))
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

async fn object_stream(store: &Store) -> jetstream::stream::Stream {
    store
        .jetstream()
        .get_stream(format!("OBJ_{BUCKET}"))
        .await
        .expect("the object stream exists")
}

async fn stream_messages(store: &Store) -> u64 {
    object_stream(store)
        .await
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn subject_is_empty(store: &Store, subject: &str) -> bool {
    match object_stream(store)
        .await
        .direct_get_last_for_subject(subject)
        .await
    {
        Ok(_) => false,
        Err(err) if err.kind() == DirectGetErrorKind::NotFound => true,
        Err(err) => panic!("direct get {subject}: {err}"),
    }
}

/// The raw meta message of `name` as JSON, and its NATS headers.
async fn raw_meta(store: &Store, name: &str) -> (Value, async_nats::HeaderMap) {
    let subject = store.wheels().objects().meta_subject(name);
    let msg = object_stream(store)
        .await
        .direct_get_last_for_subject(subject)
        .await
        .expect("meta message exists");
    (serde_json::from_slice(&msg.payload).unwrap(), msg.headers)
}

#[tokio::test]
async fn object_stream_is_created_with_the_contract_config() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let stream = object_stream(&store).await;
    let cfg = &stream.cached_info().config;
    assert_eq!(
        cfg.subjects,
        vec![format!("$O.{BUCKET}.C.>"), format!("$O.{BUCKET}.M.>")]
    );
    assert_eq!(cfg.max_bytes, 536_870_912);
    assert_eq!(
        cfg.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    assert!(cfg.allow_rollup && cfg.allow_direct);
    assert_eq!(cfg.max_age, Duration::ZERO);
}

#[tokio::test]
async fn put_then_info_list_and_get_round_trip_a_5_mb_object() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let data = random_bytes(5_000_000, 7);
    let wheels = store.wheels();

    let info = wheels
        .upload(WHEEL, None, &tags(&["cpu", "linux"]), &data[..])
        .await
        .unwrap();
    let expected_chunks = data.len().div_ceil(CHUNK_SIZE) as u64;
    assert_eq!(expected_chunks, 39);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.chunks, expected_chunks);
    assert_eq!(info.digest, digest_of(&data));
    assert_eq!(info.sha256_hex(), Some(hex(&data)));
    assert_eq!(info.wheel_tags(), tags(&["cpu", "linux"]));
    assert_eq!(info.content_type(), Some("application/octet-stream"));
    assert_eq!(stream_messages(&store).await, expected_chunks + 1);

    let read = wheels.info(WHEEL).await.unwrap().expect("stored");
    assert_eq!(read, info);
    let listed = wheels.list().await.unwrap();
    assert_eq!(listed, vec![info.clone()]);

    let reader = wheels.download(WHEEL).await.unwrap().expect("stored");
    assert_eq!(reader.info(), &info);
    let mut chunks = 0;
    let mut got = Vec::new();
    let mut reader = reader;
    while let Some(chunk) = reader.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= CHUNK_SIZE);
        got.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert_eq!(chunks, expected_chunks);
    assert!(got == data, "downloaded bytes differ from the upload");
}

#[tokio::test]
async fn pieces_of_any_size_make_the_same_chunks() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let data = random_bytes(3 * CHUNK_SIZE + 12_345, 11);
    // Uneven pieces: small, larger than a chunk, exactly a chunk, the rest.
    let cuts = [1_000, 200_000, CHUNK_SIZE, 7];
    let mut pieces = Vec::new();
    let mut rest = Bytes::from(data.clone());
    for cut in cuts {
        pieces.push(Ok::<_, std::io::Error>(rest.split_to(cut)));
    }
    pieces.push(Ok(rest));
    let objects = store.wheels().objects();
    let info = objects
        .put_stream("a.whl", BTreeMap::new(), futures::stream::iter(pieces))
        .await
        .unwrap();
    assert_eq!(info.chunks, 4);
    assert_eq!(info.digest, digest_of(&data));
    let got = objects
        .get("a.whl")
        .await
        .unwrap()
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert!(got == data);

    let empty = objects
        .put_bytes("empty.whl", BTreeMap::new(), Bytes::new())
        .await
        .unwrap();
    assert_eq!((empty.size, empty.chunks), (0, 0));
    assert_eq!(empty.digest, digest_of(b""));
    let got = objects.get("empty.whl").await.unwrap().unwrap();
    assert!(got.read_to_end().await.unwrap().is_empty());
}

#[tokio::test]
async fn replacing_an_object_purges_the_old_chunks() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let wheels = store.wheels();
    let first = random_bytes(3 * CHUNK_SIZE, 1);
    let old = wheels.upload(WHEEL, None, &[], &first[..]).await.unwrap();
    assert_eq!(stream_messages(&store).await, 3 + 1);

    let second = random_bytes(CHUNK_SIZE + 10, 2);
    let new = wheels
        .upload(WHEEL, Some("application/zip"), &tags(&["gpu"]), &second[..])
        .await
        .unwrap();
    assert_ne!(old.nuid, new.nuid, "a new NUID on every put");
    assert_eq!(
        stream_messages(&store).await,
        2 + 1,
        "old chunks purged, old meta rolled up"
    );
    assert!(subject_is_empty(&store, &wheels.objects().chunk_subject(&old.nuid)).await);

    let listed = wheels.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].nuid, new.nuid);
    assert_eq!(listed[0].content_type(), Some("application/zip"));
    assert_eq!(listed[0].wheel_tags(), tags(&["gpu"]));
    let got = wheels
        .download(WHEEL)
        .await
        .unwrap()
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert!(got == second);
}

#[tokio::test]
async fn deleted_object_is_gone_from_list_info_and_get() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let wheels = store.wheels();
    let data = random_bytes(2 * CHUNK_SIZE + 1, 3);
    let stored = wheels
        .upload(WHEEL, None, &tags(&["cpu"]), &data[..])
        .await
        .unwrap();
    wheels
        .upload("other-1.0-py3-none-any.whl", None, &[], &b"x"[..])
        .await
        .unwrap();

    let before = wheels.delete(WHEEL).await.unwrap().expect("it existed");
    assert_eq!(before, stored, "delete hands back the meta it had");
    assert!(wheels.info(WHEEL).await.unwrap().is_none());
    assert!(wheels.download(WHEEL).await.unwrap().is_none());
    let names: Vec<String> = wheels
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["other-1.0-py3-none-any.whl".to_string()]);
    assert!(subject_is_empty(&store, &wheels.objects().chunk_subject(&stored.nuid)).await);

    // The meta says deleted, as nats-py writes it: size/chunks 0, digest/mtime empty.
    let tomb = wheels
        .objects()
        .info_with_deleted(WHEEL)
        .await
        .unwrap()
        .unwrap();
    assert!(tomb.deleted);
    assert_eq!((tomb.size, tomb.chunks), (0, 0));
    assert_eq!((tomb.digest.as_str(), tomb.mtime.as_str()), ("", ""));
    assert_eq!(tomb.nuid, stored.nuid);
    assert_eq!(
        tomb.wheel_tags(),
        tags(&["cpu"]),
        "headers kept, like nats-py"
    );
    assert!(
        wheels.delete(WHEEL).await.unwrap().is_none(),
        "deleting twice"
    );

    // A deleted name can be uploaded again.
    wheels
        .upload(WHEEL, None, &[], &b"again"[..])
        .await
        .unwrap();
    assert_eq!(wheels.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn empty_store_lists_as_empty() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let wheels = store.wheels();
    assert!(wheels.list().await.unwrap().is_empty());
    assert!(wheels.info(WHEEL).await.unwrap().is_none());
    assert!(wheels.download(WHEEL).await.unwrap().is_none());
    assert!(wheels.delete(WHEEL).await.unwrap().is_none());

    wheels.upload(WHEEL, None, &[], &b"x"[..]).await.unwrap();
    wheels.delete(WHEEL).await.unwrap();
    assert!(
        wheels.list().await.unwrap().is_empty(),
        "after the last wheel is deleted"
    );
}

#[tokio::test]
async fn meta_headers_are_stored_as_plain_strings() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let data = b"wheel bytes".to_vec();
    let info = store
        .wheels()
        .upload(
            WHEEL,
            Some("application/zip"),
            &tags(&["cpu", "linux"]),
            &data[..],
        )
        .await
        .unwrap();

    let (meta, nats_headers) = raw_meta(&store, WHEEL).await;
    assert_eq!(
        nats_headers.get("Nats-Rollup").map(|v| v.as_str()),
        Some("sub")
    );
    let headers = meta["headers"].as_object().expect("headers is an object");
    assert_eq!(
        headers.keys().collect::<Vec<_>>(),
        vec!["content-type", "sha256", "x-pyoco-wheel-tags"]
    );
    for (name, value) in headers {
        assert!(value.is_string(), "header {name} is {value}, not a string");
    }
    assert_eq!(headers["x-pyoco-wheel-tags"], "cpu,linux");
    assert_eq!(headers["sha256"], hex(&data).as_str());
    assert_eq!(headers["content-type"], "application/zip");

    let keys: Vec<&str> = meta
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "name", "bucket", "nuid", "size", "mtime", "chunks", "digest", "deleted", "headers",
            "options"
        ]
    );
    assert_eq!(
        meta["options"],
        serde_json::json!({"max_chunk_size": 131072})
    );
    assert_eq!(meta["bucket"], BUCKET);
    assert_eq!(meta["deleted"], false);
    let mtime = meta["mtime"].as_str().unwrap();
    assert!(
        mtime.ends_with("+00:00") && mtime.len() == "2024-05-01T12:34:56.123456+00:00".len()
            || mtime.len() == "2024-05-01T12:34:56+00:00".len(),
        "mtime {mtime:?} is Python isoformat"
    );
    assert_eq!(meta["mtime"], info.mtime.as_str());
}

#[tokio::test]
async fn too_large_uploads_leave_nothing_behind() {
    let nats = TestNats::start().await;
    let cfg = StoreConfig {
        wheel_max_bytes: 300_000,
        ..StoreConfig::default()
    };
    let store = store_with(&nats, cfg).await;
    let data = random_bytes(300_001, 5);
    let err = store
        .wheels()
        .upload(WHEEL, None, &[], &data[..])
        .await
        .unwrap_err();
    assert!(
        matches!(err, PutError::TooLarge { limit: 300_000, .. }),
        "{err}"
    );
    assert_eq!(stream_messages(&store).await, 0);
    assert!(store.wheels().list().await.unwrap().is_empty());
    // Exactly at the limit is allowed (0.5.1 rejects only `len > max`)… up to what the
    // stream itself (same cap, including meta) still accepts.
    let ok = random_bytes(200_000, 6);
    store
        .wheels()
        .upload(WHEEL, None, &[], &ok[..])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failing_source_leaves_no_chunks() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let pieces = vec![
        Ok(Bytes::from(random_bytes(CHUNK_SIZE * 2, 9))),
        Err(std::io::Error::other("client went away")),
    ];
    let err = store
        .wheels()
        .upload_stream(WHEEL, None, &[], futures::stream::iter(pieces))
        .await
        .unwrap_err();
    assert!(matches!(err, PutError::Source { .. }), "{err}");
    assert_eq!(stream_messages(&store).await, 0);
}

#[tokio::test]
async fn data_not_matching_its_digest_is_an_error_at_the_end() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let objects = store.wheels().objects();
    let data = random_bytes(CHUNK_SIZE + 5, 4);
    let info = objects
        .put_bytes(WHEEL, BTreeMap::new(), data.clone())
        .await
        .unwrap();
    // Rewrite the meta with a wrong digest (another writer's bug, or bit rot).
    let mut bad = info.clone();
    bad.digest = digest_of(b"something else");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    store
        .jetstream()
        .publish_with_headers(objects.meta_subject(WHEEL), headers, bad.to_json().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut reader = objects.get(WHEEL).await.unwrap().unwrap();
    let first = reader.next().await.unwrap();
    assert_eq!(first.unwrap().len(), CHUNK_SIZE);
    let last = reader.next().await.unwrap();
    assert!(
        matches!(&last, Err(pyoco_store::StoreError::Corrupt { message, .. }) if message.contains("digest")),
        "{last:?}"
    );
    assert!(reader.next().await.is_none());
}

/// async-nats' own object store writes header values as lists; we read them (joined).
#[tokio::test]
async fn objects_written_by_async_nats_are_read_with_their_tags() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let os = store
        .jetstream()
        .get_object_store(BUCKET)
        .await
        .expect("async-nats opens our bucket");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("x-pyoco-wheel-tags", "cpu,linux");
    headers.insert("sha256", hex(b"go style").as_str());
    os.put(
        object_store::ObjectMetadata {
            name: WHEEL.to_string(),
            headers: Some(headers),
            ..Default::default()
        },
        &mut &b"go style"[..],
    )
    .await
    .unwrap();

    let (meta, _) = raw_meta(&store, WHEEL).await;
    assert!(
        meta["headers"]["x-pyoco-wheel-tags"].is_array(),
        "async-nats writes lists: {meta}"
    );
    let info = store.wheels().info(WHEEL).await.unwrap().unwrap();
    assert_eq!(info.wheel_tags(), tags(&["cpu", "linux"]));
    assert_eq!(info.sha256_hex(), Some(hex(b"go style")));
    let got = store
        .wheels()
        .download(WHEEL)
        .await
        .unwrap()
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert_eq!(got, b"go style");

    // The reverse does not work: async-nats 0.51 only parses list-valued headers, so it
    // cannot read objects in nats-py's format (ours included). Rust readers use this crate.
}

// ---------------------------------------------------------------------------------------------
// Interop with the real Python stack (nats-py 2.12, pyoco-server 0.5.1)

fn interop_python() -> std::path::PathBuf {
    pyoco_testkit::interop_venv().join("bin").join("python")
}

/// Run `script` with the interop venv's Python; its last stdout line is JSON.
fn run_python(script: &str, args: &[&str]) -> Value {
    let out = Command::new(interop_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYOCO_LOAD_DOTENV", "0")
        .output()
        .expect("running the interop python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("python printed {stdout:?}: {e}"))
}

const PY_INTEROP: &str = r#"
import asyncio, hashlib, json, sys
import nats
from nats.js import api
from pyoco_server.http_api import _read_wheel_tags_from_headers, _read_wheel_sha256_from_headers
from pyoco_server.worker import _read_wheel_tags_from_info

url, bucket, ours, theirs = sys.argv[1:5]

async def main():
    nc = await nats.connect(url)
    js = nc.jetstream()
    obs = await js.object_store(bucket)
    res = await obs.get(ours)
    listed = await obs.list(ignore_deletes=True)
    out = {
        "headers": res.info.headers,
        "gateway_tags": _read_wheel_tags_from_headers(res.info.headers),
        "worker_tags": sorted(_read_wheel_tags_from_info(res.info)),
        "sha256_header": _read_wheel_sha256_from_headers(res.info.headers),
        "data_sha256": hashlib.sha256(res.data).hexdigest(),
        "size": res.info.size,
        "chunks": res.info.chunks,
        "digest": res.info.digest,
        "listed": sorted(i.name for i in listed),
    }
    data = bytes(range(256)) * 1500 + b"tail"
    await obs.put(theirs, data, meta=api.ObjectMeta(name=theirs, headers={
        "content-type": "application/octet-stream",
        "sha256": hashlib.sha256(data).hexdigest(),
        "x-pyoco-wheel-tags": "gpu,linux",
    }))
    out["theirs_sha256"] = hashlib.sha256(data).hexdigest()
    out["theirs_len"] = len(data)
    await nc.close()
    print(json.dumps(out))

asyncio.run(main())
"#;

#[tokio::test]
async fn nats_py_reads_what_we_write_and_we_read_what_it_writes() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let data = random_bytes(700_000, 21);
    let ours = WHEEL;
    let theirs = "py_pkg-2.0.0-py3-none-any.whl";
    let info = store
        .wheels()
        .upload(ours, None, &tags(&["cpu", "linux"]), &data[..])
        .await
        .unwrap();

    let url = nats.url();
    let out =
        tokio::task::spawn_blocking(move || run_python(PY_INTEROP, &[&url, BUCKET, ours, theirs]))
            .await
            .unwrap();

    // (1) Python reads ours: string headers, tags for the gateway and the worker, same bytes.
    assert_eq!(out["headers"]["x-pyoco-wheel-tags"], "cpu,linux");
    assert_eq!(out["gateway_tags"], serde_json::json!(["cpu", "linux"]));
    assert_eq!(out["worker_tags"], serde_json::json!(["cpu", "linux"]));
    assert_eq!(out["sha256_header"], hex(&data).as_str());
    assert_eq!(out["data_sha256"], hex(&data).as_str());
    assert_eq!(out["size"], data.len() as u64);
    assert_eq!(out["chunks"], info.chunks);
    assert_eq!(out["digest"], info.digest.as_str());
    assert_eq!(out["listed"], serde_json::json!([ours]));

    // (2) We read what nats-py wrote: tags, sha256, bytes.
    let theirs_info = store.wheels().info(theirs).await.unwrap().expect("written");
    assert_eq!(theirs_info.wheel_tags(), tags(&["gpu", "linux"]));
    assert_eq!(
        theirs_info.sha256_hex().as_deref(),
        out["theirs_sha256"].as_str()
    );
    assert_eq!(theirs_info.size, out["theirs_len"].as_u64().unwrap());
    let got = store
        .wheels()
        .download(theirs)
        .await
        .unwrap()
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert_eq!(hex(&got), out["theirs_sha256"].as_str().unwrap());
    let names: Vec<String> = store
        .wheels()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec![ours.to_string(), theirs.to_string()]);

    // Our writer and nats-py's produce the same meta bytes for the same record.
    let subject = store.wheels().objects().meta_subject(theirs);
    let raw = object_stream(&store)
        .await
        .direct_get_last_for_subject(subject)
        .await
        .unwrap()
        .payload;
    assert_eq!(
        String::from_utf8(theirs_info.to_json()).unwrap(),
        String::from_utf8(raw.to_vec()).unwrap(),
        "meta re-serialized by us is byte-identical to nats-py's"
    );

    // We delete theirs; Python no longer lists it.
    store.wheels().delete(theirs).await.unwrap().unwrap();
    let url = nats.url();
    let listed = tokio::task::spawn_blocking(move || {
        run_python(
            r#"
import asyncio, json, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    obs = await nc.jetstream().object_store(sys.argv[2])
    print(json.dumps(sorted(i.name for i in await obs.list(ignore_deletes=True))))
    await nc.close()
asyncio.run(main())
"#,
            &[&url, BUCKET],
        )
    })
    .await
    .unwrap();
    assert_eq!(listed, serde_json::json!([ours]));
}

#[tokio::test]
async fn our_object_stream_config_equals_nats_py_create_object_store() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let url = nats.url();
    tokio::task::spawn_blocking(move || {
        run_python(
            r#"
import asyncio, json, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    await nc.jetstream().create_object_store(bucket="py_made", max_bytes=536870912)
    await nc.close()
    print("{}")
asyncio.run(main())
"#,
            &[&url],
        )
    })
    .await
    .unwrap();

    // Compare the stream configs as the server reports them (raw JSON, every field).
    let config = |stream: String| {
        let client = store.client().clone();
        async move {
            let reply = client
                .request(format!("$JS.API.STREAM.INFO.{stream}"), Bytes::new())
                .await
                .unwrap();
            let mut v: Value = serde_json::from_slice(&reply.payload).unwrap();
            v["config"].take()
        }
    };
    let mut ours = config(format!("OBJ_{BUCKET}")).await;
    let mut theirs = config("OBJ_py_made".to_string()).await;
    for cfg in [&mut ours, &mut theirs] {
        let obj = cfg.as_object_mut().unwrap();
        obj.remove("name");
        obj.remove("subjects");
    }
    assert_eq!(ours, theirs);
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.0: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let response = String::from_utf8_lossy(&raw);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn python_gateway_lists_our_upload_with_tags_and_digest() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let data = random_bytes(300_000, 33);
    let info = store
        .wheels()
        .upload(WHEEL, None, &tags(&["cpu", "linux"]), &data[..])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let port = free_port();
    let mut cmd = Command::new(pyoco_testkit::interop_venv().join("bin/pyoco-server"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PYOCO_") {
            cmd.env_remove(name);
        }
    }
    let gateway = cmd
        .args(["up", "--nats-url", &nats.url(), "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .env("PYOCO_LOAD_DOTENV", "0")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the Python gateway");
    let _gateway = Killed(gateway);
    let gateway_log = || read_log(&dir.path().join("gateway.log"));

    let body = pyoco_testkit::eventually(
        Duration::from_secs(30),
        "the Python gateway answers GET /wheels",
        || async {
            match tokio::task::spawn_blocking(move || http_get(port, "/wheels"))
                .await
                .unwrap()
            {
                Ok((200, body)) => Some(body),
                _ => None,
            }
        },
    )
    .await;
    let wheels: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET /wheels body {body:?}: {e}\n{}", gateway_log()));
    let item = &wheels[0];
    assert_eq!(wheels.as_array().unwrap().len(), 1, "{wheels}");
    assert_eq!(item["name"], WHEEL);
    assert_eq!(item["size_bytes"], data.len() as u64);
    assert_eq!(item["tags"], serde_json::json!(["cpu", "linux"]));
    assert_eq!(item["digest"], info.digest.as_str());
    assert_eq!(item["sha256_b64"], info.sha256_b64().unwrap());
    assert_eq!(item["nuid"], info.nuid.as_str());
    assert_eq!(item["mtime"], info.mtime.as_str());

    // And it serves our bytes.
    let (status, _) =
        tokio::task::spawn_blocking(move || http_get(port, &format!("/wheels/{WHEEL}")))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 200, "{}", gateway_log());
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The gateway calls these from axum handlers and streams the reader as a response body:
/// every future must be `Send`, and the reader `Send + 'static`.
#[allow(dead_code)]
fn registry_futures_are_send(store: &Store) {
    fn send<T: Send>(_: T) {}
    fn send_static<T: Send + 'static>() {}
    let wheels = store.wheels();
    send(wheels.upload(WHEEL, None, &[], &b""[..]));
    send(wheels.upload_stream(
        WHEEL,
        None,
        &[],
        futures::stream::empty::<Result<Bytes, std::io::Error>>(),
    ));
    send(wheels.list());
    send(wheels.info(WHEEL));
    send(wheels.download(WHEEL));
    send(wheels.delete(WHEEL));
    send_static::<pyoco_store::ObjectReader>();
}
