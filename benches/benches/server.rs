//! The server under load (DESIGN.md's performance list; numbers in `docs/PERFORMANCE.md`):
//! durable Send Message over loopback HTTP from 64 concurrent clients, all into one
//! conversation, beside two baselines measured in the same run, each behind the same axum
//! and the same HTTP client:
//!
//! * `inboxd_send_message`: `inbox_server::start` on a temporary data directory (the
//!   embedded file store, fsync on); every 200 is answered after its events are durable;
//! * `floor_http_json`: an axum handler that parses the same body into
//!   `serde_json::Value` and answers a fixed message: the HTTP round trip and the JSON, with
//!   no engine and nothing durable (what no server can avoid);
//! * `sqlite_insert_per_request`: what a user would otherwise write: an axum handler that
//!   parses the body and `INSERT`s the message into the obvious SQLite schema
//!   (`inbox_benches::sqlite`) on a file database in WAL mode with `synchronous=FULL`,
//!   through one connection behind a mutex (SQLite takes one writer at a time), one
//!   transaction per request, off the async workers.
//!
//! One iteration: each of the 64 clients sends one request and waits for its answer; the
//! throughput is requests per second. Clients and servers share the machine's cores, as
//! with `benches/load/send-message.sh` (oha), which also measures latency at a fixed rate.
//! Each baseline checks once, outside the timing, that it did the work (every message
//! acknowledged is stored). `INBOX_BENCH_QUICK=1` shortens the measurement.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use inbox_benches::{bench_dir, quick_mode, sqlite};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const SITE: &str = "bench-site";
const TEXT: &str = "Hi! Do you open on Sundays? I would like to book a table for four.";

/// The body every client sends, for `conversation`.
fn body(conversation: &str) -> Value {
    json!({
        "conversationId": conversation,
        "sendAs": "PARTICIPANT",
        "message": {
            "direction": "PARTICIPANT_TO_BUSINESS",
            "content": {"basic": {"items": [{"text": TEXT}]}},
        },
    })
}

/// `CLIENTS` tasks, each sending `iters` requests one after the other; the time until the
/// last answer. Every answer must be a 200.
async fn run_clients(http: &reqwest::Client, url: &str, body: &Value, iters: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let http = http.clone();
            let url = url.to_owned();
            let body = serde_json::to_vec(body).unwrap();
            tokio::spawn(async move {
                for _ in 0..iters {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("wix-site-id", SITE)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                    let _ = r.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Serves `app` on a free loopback port; the base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn floor_handler(body: axum::body::Bytes) -> (StatusCode, axum::Json<Value>) {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, axum::Json(Value::Null)),
    };
    let text = v["message"]["content"]["basic"]["items"][0]["text"].clone();
    (
        StatusCode::OK,
        axum::Json(
            json!({"message": {"id": "1", "content": {"basic": {"items": [{"text": text}]}}}}),
        ),
    )
}

struct Sqlite {
    conn: Mutex<rusqlite::Connection>,
    next: AtomicI64,
}

async fn sqlite_handler(
    State(db): State<Arc<Sqlite>>,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, axum::Json(Value::Null)),
    };
    let text = v["message"]["content"]["basic"]["items"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let conversation = uuid::Uuid::parse_str(v["conversationId"].as_str().unwrap_or_default())
        .map(|u| *u.as_bytes())
        .unwrap_or_default();
    let id = db.next.fetch_add(1, Ordering::Relaxed);
    let stored = tokio::task::spawn_blocking(move || {
        let conn = db.conn.lock().unwrap();
        sqlite::insert_one(
            &conn,
            &sqlite::Row {
                conversation,
                sequence: id,
                id,
                body: text,
            },
        )
    })
    .await;
    match stored {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(json!({"message": {"id": id.to_string()}})),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(Value::Null)),
    }
}

fn server(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = bench_dir();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    // The engine.
    let running = runtime.block_on(async {
        inbox_server::start(inbox_server::ServeOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("inboxd"),
        ))
        .await
        .unwrap()
    });
    let base = format!("http://{}", running.addr);
    let conversation = runtime.block_on(async {
        let r: Value = http
            .post(format!("{base}/inbox/v2/conversations"))
            .header("wix-site-id", SITE)
            .json(&json!({"participantId": {"anonymousVisitorId": "6fa459ea-ee8a-3ca4-894e-db77e160355e"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["conversation"]["id"].as_str().unwrap().to_owned()
    });
    let send = body(&conversation);

    // The baselines.
    let floor = runtime.block_on(serve(
        axum::Router::new().route("/inbox/v2/messages", axum::routing::post(floor_handler)),
    ));
    let db = Arc::new(Sqlite {
        conn: Mutex::new(sqlite::open_file(&dir.path().join("server.db")).unwrap()),
        next: AtomicI64::new(1),
    });
    let sqlite_base = runtime.block_on(serve(
        axum::Router::new()
            .route("/inbox/v2/messages", axum::routing::post(sqlite_handler))
            .with_state(db.clone()),
    ));

    let mut group = c.benchmark_group("server");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(if quick_mode() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        })
        .throughput(Throughput::Elements(CLIENTS as u64));
    let value = format!("{CLIENTS}_connections");
    for (name, url) in [
        ("inboxd_send_message", format!("{base}/inbox/v2/messages")),
        ("floor_http_json", format!("{floor}/inbox/v2/messages")),
        (
            "sqlite_insert_per_request",
            format!("{sqlite_base}/inbox/v2/messages"),
        ),
    ] {
        group.bench_function(BenchmarkId::new(name, &value), |b| {
            b.iter_custom(|iters| runtime.block_on(run_clients(&http, &url, &send, iters)));
        });
    }
    group.finish();

    // Checked once, outside the timing: every acknowledged send is stored.
    let acknowledged = running.engine.writes();
    let listed = running
        .engine
        .read(&inbox_core::SiteId::new(SITE), |inbox| {
            inbox.message_count()
        })
        .unwrap();
    assert_eq!(
        listed as u64,
        acknowledged - 1,
        "one write was the conversation"
    );
    let rows = sqlite::count_all(&db.conn.lock().unwrap()).unwrap();
    assert_eq!(rows as i64, db.next.load(Ordering::Relaxed) - 1);
    println!(
        "server: {acknowledged} writes acknowledged and stored by inboxd, {rows} rows in SQLite"
    );
    runtime.block_on(running.shutdown());
}

criterion_group!(benches, server);
criterion_main!(benches);
