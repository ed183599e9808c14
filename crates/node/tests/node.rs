//! The node library: store, identity files, datasets, HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use concord_node::datasets::{self, Revalidation};
use concord_node::identity::{self, NodeIdentity};
use concord_node::server::{self, AppState};
use concord_node::store::{self, DatasetRecord, DatasetStatus, Store};
use concord_node::NodeError;

const SCHEMA: &str = r#"
table = "patients"
max_rows = 1000

[[column]]
name = "age"
type = "int"
min = 0
max = 120

[[column]]
name = "ward"
type = "category"
values = ["a", "b"]
"#;

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "concord-node-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(name: &str) -> DatasetRecord {
    DatasetRecord {
        name: name.into(),
        file_path: PathBuf::from("/data/x.csv"),
        schema_toml: SCHEMA.into(),
        file_sha256: "00".repeat(32),
        file_size: 10,
        file_mtime_ns: 1_700_000_000_000_000_000,
        row_count: 3,
        validated_at: 1_700_000_000,
        status: DatasetStatus::Valid,
    }
}

#[test]
fn store_migrates_and_round_trips() {
    let dir = Dir::new("store");
    let path = dir.0.join(store::STORE_FILE);
    {
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), store::SCHEMA_VERSION);
        assert!(s.list_datasets().unwrap().is_empty());
        s.add_dataset(&record("b")).unwrap();
        let mut a = record("a");
        a.status = DatasetStatus::Invalid("row 2, column age: 130 above max 120".into());
        s.add_dataset(&a).unwrap();
        assert!(matches!(s.add_dataset(&record("a")), Err(NodeError::DuplicateDataset(n)) if n == "a"));
        s.record_event("test.kind", "hello").unwrap();
    }
    // Reopening runs the migrations again: a no-op.
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), store::SCHEMA_VERSION);
    let list = s.list_datasets().unwrap();
    assert_eq!(list.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(s.get_dataset("b").unwrap(), record("b"));
    assert!(matches!(s.get_dataset("a").unwrap().status, DatasetStatus::Invalid(r) if r.contains("row 2")));
    assert_eq!(s.count_datasets().unwrap(), 2);
    assert!(matches!(s.get_dataset("zz"), Err(NodeError::UnknownDataset(n)) if n == "zz"));
    assert!(matches!(s.remove_dataset("zz"), Err(NodeError::UnknownDataset(_))));
    s.remove_dataset("b").unwrap();
    assert_eq!(s.count_datasets().unwrap(), 1);
    let events = s.recent_events(10).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["dataset.removed", "test.kind", "dataset.added", "dataset.added"]);
    assert!(events.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(s.recent_events(1).unwrap().len(), 1);
    // WAL mode.
    assert!(dir.0.join(format!("{}-wal", store::STORE_FILE)).exists());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn identity_secret_files_are_0600_and_never_overwritten() {
    let dir = Dir::new("identity");
    let id = NodeIdentity::generate("hospital-a").unwrap();
    assert!(NodeIdentity::exists_in(&dir.0).is_none());
    id.write(&dir.0).unwrap();
    let id_dir = NodeIdentity::dir_in(&dir.0);
    assert_eq!(mode(&id_dir), 0o700);
    assert_eq!(mode(&id_dir.join(identity::SIGNING_KEY_FILE)), 0o600);
    assert_eq!(mode(&id_dir.join(identity::TLS_KEY_FILE)), 0o600);
    assert_eq!(mode(&id_dir.join(identity::TLS_CERT_FILE)) & 0o600, 0o600);
    let before = std::fs::read(id_dir.join(identity::SIGNING_KEY_FILE)).unwrap();

    // A second identity is refused and nothing changes.
    let other = NodeIdentity::generate("hospital-a").unwrap();
    assert!(matches!(other.write(&dir.0), Err(NodeError::IdentityExists { .. })));
    assert_eq!(std::fs::read(id_dir.join(identity::SIGNING_KEY_FILE)).unwrap(), before);

    // Loading gives back the same public identity; secrets never show in Debug.
    let loaded = NodeIdentity::load(&dir.0, "hospital-a").unwrap();
    assert_eq!(loaded.public(), id.public());
    assert_eq!(loaded.public().ed25519_public.len(), 64);
    assert_eq!(loaded.public().tls_fingerprint.len(), 64);
    let debug = format!("{loaded:?}");
    let secret_hex = String::from_utf8(before).unwrap();
    assert!(!debug.contains(secret_hex.trim()), "{debug}");
    assert!(debug.contains("REDACTED"));
    let public: concord_node::PublicIdentity =
        serde_json::from_str(&std::fs::read_to_string(id_dir.join(identity::PUBLIC_FILE)).unwrap()).unwrap();
    assert_eq!(public, id.public());

    // A secret file readable by others is refused.
    let key = id_dir.join(identity::SIGNING_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = NodeIdentity::load(&dir.0, "hospital-a").unwrap_err().to_string();
    assert!(err.contains("signing.key") && err.contains("too open"), "{err}");
    // A malformed key is refused with its file named.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, "not hex\n").unwrap();
    let err = NodeIdentity::load(&dir.0, "hospital-a").unwrap_err().to_string();
    assert!(err.contains("signing.key") && err.contains("64 hexadecimal digits"), "{err}");
}

fn write_files(dir: &Path, csv: &str) -> (PathBuf, PathBuf) {
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let data = dir.join("patients.csv");
    std::fs::write(&data, csv).unwrap();
    (data, schema)
}

#[test]
fn dataset_add_refuses_a_bad_file_and_stores_nothing() {
    let dir = Dir::new("bad");
    let mut s = Store::open(&dir.0.join(store::STORE_FILE)).unwrap();
    let (data, schema) = write_files(&dir.0, "age,ward\n30,a\n130,b\n");
    let events_before = s.recent_events(100).unwrap();
    let err = datasets::register(&mut s, "patients", &data, &schema).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NodeError::Data(_)), "{msg}");
    assert!(msg.contains("patients.csv") && msg.contains("row 2") && msg.contains("age"), "{msg}");
    assert!(s.list_datasets().unwrap().is_empty());
    assert_eq!(s.recent_events(100).unwrap(), events_before);

    // Other refusals: bad name, missing file, bad schema, unknown column.
    assert!(matches!(datasets::register(&mut s, "../x", &data, &schema), Err(NodeError::InvalidName { .. })));
    let err = datasets::register(&mut s, "p", &dir.0.join("missing.csv"), &schema).unwrap_err().to_string();
    assert!(err.contains("missing.csv"), "{err}");
    let bad_schema = dir.0.join("bad.toml");
    std::fs::write(&bad_schema, "table = 3\n").unwrap();
    let err = datasets::register(&mut s, "p", &data, &bad_schema).unwrap_err().to_string();
    assert!(err.contains("bad.toml"), "{err}");
    std::fs::write(&data, "age,ward,extra\n30,a,1\n").unwrap();
    let err = datasets::register(&mut s, "p", &data, &schema).unwrap_err().to_string();
    assert!(err.contains("extra"), "{err}");
    assert!(s.list_datasets().unwrap().is_empty());
    assert_eq!(s.recent_events(100).unwrap(), events_before);

    // A good file registers; the same name again is refused.
    std::fs::write(&data, "age,ward\n30,a\n40,b\n").unwrap();
    let d = datasets::register(&mut s, "patients", &data, &schema).unwrap();
    assert_eq!(d.row_count, 2);
    assert_eq!(d.file_sha256, datasets::file_facts(&data).unwrap().sha256);
    assert!(matches!(datasets::register(&mut s, "patients", &data, &schema), Err(NodeError::DuplicateDataset(_))));
    assert_eq!(s.list_datasets().unwrap(), vec![d]);
}

#[test]
fn revalidation_follows_file_changes() {
    let dir = Dir::new("reval");
    let mut s = Store::open(&dir.0.join(store::STORE_FILE)).unwrap();
    let (data, schema) = write_files(&dir.0, "age,ward\n30,a\n");
    let first = datasets::register(&mut s, "patients", &data, &schema).unwrap();
    assert_eq!(datasets::revalidate(&mut s, "patients").unwrap(), Revalidation::Unchanged);

    std::fs::write(&data, "age,ward\n30,a\n31,b\n32,a\n").unwrap();
    let Revalidation::Updated { rows, sha256 } = datasets::revalidate(&mut s, "patients").unwrap() else {
        panic!("expected an update")
    };
    assert_eq!(rows, 3);
    assert_ne!(sha256, first.file_sha256);
    let now = s.get_dataset("patients").unwrap();
    assert_eq!((now.row_count, now.status.clone()), (3, DatasetStatus::Valid));
    assert_eq!(now.file_sha256, sha256);

    std::fs::write(&data, "age,ward\n30,c\n").unwrap();
    let Revalidation::Invalid(reason) = datasets::revalidate(&mut s, "patients").unwrap() else {
        panic!("expected invalid")
    };
    assert!(reason.contains("ward"), "{reason}");
    assert!(matches!(s.get_dataset("patients").unwrap().status, DatasetStatus::Invalid(_)));

    // Repaired: valid again (compared with the last valid content, it changed).
    std::fs::write(&data, "age,ward\n30,a\n").unwrap();
    assert!(matches!(datasets::revalidate(&mut s, "patients").unwrap(), Revalidation::Updated { rows: 1, .. }));
    assert_eq!(s.get_dataset("patients").unwrap().status, DatasetStatus::Valid);

    // A vanished file marks the dataset invalid, naming the file.
    std::fs::remove_file(&data).unwrap();
    let Revalidation::Invalid(reason) = datasets::revalidate(&mut s, "patients").unwrap() else {
        panic!("expected invalid")
    };
    assert!(reason.contains("patients.csv"), "{reason}");
    assert!(matches!(datasets::revalidate(&mut s, "nope"), Err(NodeError::UnknownDataset(_))));
    let kinds: Vec<_> = s.recent_events(10).unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds[..4], ["dataset.invalid", "dataset.revalidated", "dataset.invalid", "dataset.revalidated"]);
}

#[test]
fn periodic_recheck_marks_a_changed_file_invalid() {
    let dir = Dir::new("periodic");
    let mut s = Store::open(&dir.0.join(store::STORE_FILE)).unwrap();
    let (data, schema) = write_files(&dir.0, "age,ward\n30,a\n");
    datasets::register(&mut s, "patients", &data, &schema).unwrap();
    let state = AppState::new("hospital-a", "0.1.0", s);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let task = rt.spawn(datasets::revalidate_periodically(state.clone(), std::time::Duration::from_millis(20)));
    std::fs::write(&data, "age,ward\n200,a\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = state.with_store(|s| s.get_dataset("patients").unwrap().status).unwrap();
        if let DatasetStatus::Invalid(reason) = status {
            assert!(reason.contains("age"), "{reason}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not re-checked");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    task.abort();
}

/// GET `path` with HTTP/1.1; returns (status, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn server_serves_on_port_0_and_shuts_down() {
    let dir = Dir::new("server");
    let mut s = Store::open(&dir.0.join(store::STORE_FILE)).unwrap();
    let (data, schema) = write_files(&dir.0, "age,ward\n30,a\n40,b\n");
    datasets::register(&mut s, "patients", &data, &schema).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new("hospital-a", "0.1.0", s);
    let server = rt.spawn(server::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["name"], "hospital-a");

    let (status, body) = get(addr, "/api/datasets");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &v["datasets"][0];
    assert_eq!(d["name"], "patients");
    assert_eq!(d["columns"][0]["name"], "age");
    assert_eq!(d["columns"][1]["values"], serde_json::json!(["a", "b"]));
    assert_eq!(d["sha256"].as_str().unwrap().len(), 64);
    assert!(d.get("row_count").is_none() && d.get("file_path").is_none(), "{d}");
    assert!(!body.contains("patients.csv"));

    let (status, body) = get(addr, "/api/datasets/patients");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["table"], "patients");
    let (status, body) = get(addr, "/api/datasets/nope");
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unknown_dataset");
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    let (status, body) = get(addr, "/no/such/route");
    assert_eq!(status, 404);
    assert!(body.contains("no_route"));

    let (status, body) = get(addr, "/openapi.json");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["openapi"], "3.0.3");
    for p in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/api/datasets",
        "/api/datasets/{name}",
        "/api/peers",
        "/api/pair",
        "/api/sessions",
        "/api/sessions/{id}",
        "/api/sessions/{id}/cancel",
    ] {
        assert!(v["paths"].get(p).is_some(), "{p} missing");
    }

    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("concord_datasets 1\n"), "{body}");
    assert!(body.contains("concord_uptime_seconds "), "{body}");
    assert!(body.contains("concord_http_requests_total{route=\"/healthz\",status=\"200\"} 1\n"), "{body}");
    assert!(body.contains("concord_http_requests_total{route=\"/api/datasets/{name}\",status=\"404\"} 1\n"), "{body}");
    assert!(body.contains("route=\"unmatched\",status=\"404\"} 1\n"), "{body}");

    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn dashboard_page_is_html_and_escapes_what_the_store_holds() {
    let dir = Dir::new("dashboard");
    let mut s = Store::open(&dir.0.join(store::STORE_FILE)).unwrap();
    let (data, schema) = write_files(&dir.0, "age,ward\n30,a\n40,b\n");
    datasets::register(&mut s, "patients", &data, &schema).unwrap();
    s.add_peer(&store::PeerRecord {
        name: "hospital-b".into(),
        address: "127.0.0.1:7301".into(),
        api_address: String::new(),
        ed25519_public: "11".repeat(32),
        tls_fingerprint: "22".repeat(32),
        added_at: 1_700_000_000,
        revoked_at: None,
    })
    .unwrap();
    s.record_event("test.evil", "<script>alert('x')</script>").unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(server::serve(listener, AppState::new("hospital-a", "0.1.0", s), async {
        let _ = stopped.await;
    }));

    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    for text in ["hospital-a", "Peers", "Datasets", "Sessions", "Events", "No sessions yet"] {
        assert!(body.contains(text), "{text} missing: {body}");
    }
    assert!(body.contains("hospital-b") && body.contains(">unknown</span>"), "{body}");
    assert!(body.contains("patients") && body.contains("age, ward") && body.contains(">valid</span>"), "{body}");
    assert!(body.contains("dataset.added") && body.contains("test.evil"), "{body}");
    assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{body}");
    assert!(!body.contains("<script") && !body.contains("patients.csv"), "{body}");

    let (_, body) = get(addr, "/openapi.json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["paths"]["/"]["get"]["responses"]["200"]["content"].get("text/html").is_some(), "{v}");

    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
