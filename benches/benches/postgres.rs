//! The PostgreSQL log's benchmark (issue 6; numbers: `docs/PERFORMANCE.md`, section
//! "PostgreSQL store"): durable appends, one event each, from 64 concurrent appenders (each
//! its own site, `ExpectedVersion::Exactly`), beside a floor measured in the same run:
//!
//! * `postgres_1_process`: one `PostgresLog`, 64 threads;
//! * `postgres_2_processes`: two `PostgresLog`s on the same database, 32 threads each. Each
//!   log has its own connections and its own appender thread, and the two contend for the
//!   head row lock exactly as two `inboxd` processes do: the server cannot tell them from two
//!   processes (the two-process correctness test, with real processes, is
//!   `crates/inbox-server/tests/postgres_procs.rs`);
//! * `floor_insert_autocommit`: what PostgreSQL does without the log's ordering: 64
//!   connections, each `INSERT`ing one row of the same size per autocommit transaction into
//!   an unindexed table (no head lock, no version check; concurrent commits still share WAL
//!   flushes inside the server).
//!
//! The SQLite baseline for durable appends is in the `append` group of `store.rs` (a file
//! database cannot be shared by processes on several machines, which is why this store
//! exists). Everything is durable: the server from `scripts/throwaway-postgres.sh` runs with
//! `fsync=on` and `synchronous_commit=on`.
//!
//! Needs `INBOX_TEST_POSTGRES` (skipped with a message without it; a failure under
//! `CI=true`). `cargo bench -p inbox-benches --bench postgres -- --test` runs each once.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use inbox_benches::{conversation, quick_mode, text_message, time_threads};
use inbox_core::{Event, EventEnvelope, EventId, SiteId, Timestamp};
use inbox_store::{EventLog, ExpectedVersion, PostgresLog};
use uuid::Uuid;

const APPENDERS: usize = 64;

fn site(t: usize) -> SiteId {
    SiteId::new(format!("bench-site-{t}"))
}

fn envelope(site: &SiteId, i: u64) -> EventEnvelope {
    EventEnvelope::new(
        site.clone(),
        EventId::from_uuid(Uuid::from_u128(
            (u128::from(i) << 32) ^ u128::from(site.0.len() as u64),
        )),
        Timestamp::from_micros(1_700_000_000_000_000),
        Event::MessageSent {
            message: text_message(i as i64 + 1, conversation(0), i),
        },
    )
}

/// `APPENDERS` threads, spread over `logs`, each appending `iters` events to its own site.
fn run_appenders(logs: &[&PostgresLog], iters: u64) -> Duration {
    time_threads(0..APPENDERS, |t, _| {
        let log = logs[t % logs.len()];
        let site = site(t);
        let mut version = log.site_version(&site).unwrap();
        let events: Vec<EventEnvelope> = (0..iters).map(|k| envelope(&site, version + k)).collect();
        move || {
            for e in &events {
                version = log
                    .append(
                        &site,
                        ExpectedVersion::Exactly(version),
                        std::slice::from_ref(e),
                    )
                    .unwrap()
                    .site_version;
            }
        }
    })
}

/// The floor: `APPENDERS` connections, one autocommit `INSERT` each per iteration.
fn run_floor(url: &str, iters: u64) -> Duration {
    let body = inbox_store::encode_event(&envelope(&site(0), 0).event).unwrap();
    time_threads(0..APPENDERS, |t, _| {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let insert = c
            .prepare("INSERT INTO floor_events (site, version, body) VALUES ($1, $2, $3)")
            .unwrap();
        let name = site(t).0;
        let body = body.clone();
        move || {
            for i in 0..iters {
                c.execute(&insert, &[&name, &(i as i64), &body]).unwrap();
            }
        }
    })
}

fn append_postgres(c: &mut Criterion) {
    // Off the async-free main thread anyway; creates a fresh database per run.
    let Some(url) = inbox_store::postgres::testing::fresh_database("bench append_postgres") else {
        return;
    };
    let mut group = c.benchmark_group("append_postgres");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(if quick_mode() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        })
        .throughput(Throughput::Elements(APPENDERS as u64));

    let one = PostgresLog::connect(&url).unwrap();
    group.bench_function(
        BenchmarkId::new("postgres_1_process", format!("{APPENDERS}_appenders")),
        |b| b.iter_custom(|iters| run_appenders(&[&one], iters)),
    );
    let two = PostgresLog::connect(&url).unwrap();
    group.bench_function(
        BenchmarkId::new("postgres_2_processes", format!("{APPENDERS}_appenders")),
        |b| b.iter_custom(|iters| run_appenders(&[&one, &two], iters)),
    );

    {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .batch_execute(
                "CREATE TABLE floor_events (site text NOT NULL, version bigint NOT NULL, \
                 body bytea NOT NULL)",
            )
            .unwrap();
    }
    group.bench_function(
        BenchmarkId::new(
            "floor_insert_autocommit",
            format!("{APPENDERS}_connections"),
        ),
        |b| b.iter_custom(|iters| run_floor(&url, iters)),
    );
    group.finish();

    // Checked once, outside the timing: every acknowledged append is there, each site's
    // versions dense, the positions dense.
    let last = one.last_position().unwrap();
    let all = one.read_all(1, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, last);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position == i as u64 + 1)
    );
    let mut total = 0;
    for t in 0..APPENDERS {
        let v = one.site_version(&site(t)).unwrap();
        total += v;
        assert_eq!(
            one.read_site(&site(t), 1, usize::MAX).unwrap().len() as u64,
            v
        );
    }
    assert_eq!(total, last);
    println!("append_postgres: {last} events appended and read back, positions dense");
}

criterion_group!(benches, append_postgres);
criterion_main!(benches);
