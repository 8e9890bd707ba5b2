//! inboxd's start-up (issue 13; numbers in `docs/PERFORMANCE.md`, section "inboxd start-up"):
//! the time from `inbox_server::start` on a data directory to the first answered request (a
//! Get Conversation over loopback HTTP, for the first site), with the log holding 10^5, 10^6
//! and 10^7 events (sites of 100 events each: a conversation and 99 messages of 40
//! characters) and a snapshot at its end, with the file log's checkpoint beside it, as
//! inboxd writes them:
//!
//! * `snapshot_every_site_held`: the default, and what inboxd does with webhook URLs: the
//!   whole snapshot is decoded into every site's state;
//! * `snapshot_cache_1000`: `--max-sites 1000` (no webhooks): start-up reads the snapshot's
//!   directory, and the first request loads its site;
//! * `baseline_full_replay`: the same log without the snapshot: every event folded, what
//!   every start cost before snapshots were wired in (at 10^5 and 10^6 only: at 10^7 one
//!   iteration takes longer than the rest of the run).
//!
//! Each iteration starts a server, asks, and shuts it down (untimed; with nothing written
//! since the snapshot, no new one is written). The fixture is built once per size by this
//! same executable in a child process (`STARTUP_BENCH_FIXTURE`), so its memory is gone
//! before the measurement. `INBOX_BENCH_QUICK=1` uses 10^3 and 10^4 events;
//! `STARTUP_BENCH_SIZES=5,6` picks the powers of ten.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group};
use inbox_benches::{BASE_SEQUENCE, bench_dir, conversation, pow10, quick_mode, text_message};
use inbox_core::{Event, EventEnvelope, EventId, ParticipantId, SiteId, Timestamp, VisitorId};
use inbox_store::{Engine, EngineConfig, FileLog, FileLogOptions, Snapshots};
use uuid::Uuid;

/// Events per site: the conversation and its messages.
const PER_SITE: u64 = 100;
/// The cursor key the fixture's states are built with, and the server reads.
const CURSOR_KEY: [u8; 16] = [42; 16];

fn site(i: u64) -> SiteId {
    SiteId::new(format!("startup-site-{i:06}"))
}

/// Site `s`'s events: its conversation, then `PER_SITE - 1` messages in it.
fn site_events(s: u64) -> Vec<EventEnvelope> {
    let id = site(s);
    (0..PER_SITE)
        .map(|i| {
            let seq = BASE_SEQUENCE + i64::try_from(i).unwrap();
            let event = if i == 0 {
                Event::ConversationStarted {
                    conversation_id: conversation(s),
                    participant: ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(
                        (0x71_u128 << 64) | u128::from(s),
                    ))),
                }
            } else {
                Event::MessageSent {
                    message: text_message(seq, conversation(s), s * PER_SITE + i),
                }
            };
            EventEnvelope::new(
                id.clone(),
                EventId::from_uuid(Uuid::from_u128(
                    (0xE5_u128 << 96) | (u128::from(s) << 32) | u128::from(i),
                )),
                Timestamp::from_micros(seq),
                event,
            )
        })
        .collect()
}

/// Writes `events` events (in sites of [`PER_SITE`]) into `data/log` with fsync off, a
/// snapshot at the end into `data/snapshots`, the log's checkpoint, and the cursor key.
fn build_fixture(data: &Path, events: u64) {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("cursor-key"), CURSOR_KEY).unwrap();
    let (log, _) = FileLog::open_with(
        data.join("log"),
        FileLogOptions {
            fsync: false,
            ..FileLogOptions::default()
        },
    )
    .unwrap();
    let log = Arc::new(log);
    let snapshots = Snapshots::new(data.join("snapshots")).unwrap();
    let config =
        EngineConfig::new(|s: &SiteId| inbox_core::InboxConfig::new(s.clone(), CURSOR_KEY))
            .max_sites(1000);
    let (engine, _) = Engine::open(log.clone(), Some(snapshots), config, &mut |_| {}).unwrap();
    for s in 0..events / PER_SITE {
        let got = engine.ingest(&site(s), site_events(s)).unwrap();
        assert_eq!(got.events.len() as u64, PER_SITE);
    }
    let snapshot = engine.close().unwrap().expect("a snapshot");
    assert_eq!(log.checkpoint().unwrap(), events);
    println!(
        "startup fixture: {events} events in {} sites, snapshot {} bytes",
        events / PER_SITE,
        std::fs::metadata(snapshot).unwrap().len()
    );
}

fn sizes() -> Vec<u32> {
    if let Ok(list) = std::env::var("STARTUP_BENCH_SIZES") {
        return list
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect();
    }
    if quick_mode() {
        vec![3, 4]
    } else {
        vec![5, 6, 7]
    }
}

/// Starts a server on `data`, answers the time until its first Get Conversation is a 200,
/// and shuts it down.
async fn first_answer(data: &Path, max_sites: Option<usize>, http: &reqwest::Client) -> Duration {
    let started = Instant::now();
    let running = inbox_server::start(inbox_server::ServeOptions {
        snapshot_every: None,
        max_sites,
        ..inbox_server::ServeOptions::new("127.0.0.1:0".parse().unwrap(), data.to_path_buf())
    })
    .await
    .unwrap();
    let url = format!(
        "http://{}/inbox/v2/conversations/{}",
        running.addr,
        conversation(0)
    );
    let answer = http
        .get(&url)
        .header("wix-site-id", site(0).0)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    running.shutdown().await;
    elapsed
}

/// Snapshots in `dir` (their file names).
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn startup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let mut group = c.benchmark_group("inboxd_startup");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let dirs: Vec<_> = sizes().into_iter().map(|p| (p, bench_dir())).collect();
    for (power, dir) in &dirs {
        let events = 10u64.pow(*power);
        let data = dir.path().join("inboxd");
        let built = std::process::Command::new(std::env::current_exe().unwrap())
            .env("STARTUP_BENCH_FIXTURE", &data)
            .env("STARTUP_BENCH_EVENTS", events.to_string())
            .status()
            .unwrap();
        assert!(built.success(), "building the fixture failed");
        // The first start generates the signing key: not part of what is measured.
        runtime.block_on(first_answer(&data, None, &http));
        let label = pow10(events);
        for (name, max_sites) in [
            ("snapshot_every_site_held", None),
            ("snapshot_cache_1000", Some(1000)),
        ] {
            group.bench_function(BenchmarkId::new(name, &label), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| runtime.block_on(first_answer(&data, max_sites, &http)))
                        .sum()
                });
            });
        }
        if *power <= 6 {
            let snapshots = data.join("snapshots");
            let aside = dir.path().join("snapshots-aside");
            std::fs::rename(&snapshots, &aside).unwrap();
            group.bench_function(BenchmarkId::new("baseline_full_replay", &label), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let took = runtime.block_on(first_answer(&data, None, &http));
                            // The shutdown wrote a snapshot: the next start must replay again.
                            for f in snapshot_files(&snapshots) {
                                std::fs::remove_file(f).unwrap();
                            }
                            took
                        })
                        .sum()
                });
            });
            std::fs::remove_dir_all(&snapshots).unwrap();
            std::fs::rename(&aside, &snapshots).unwrap();
        }
    }
    group.finish();
}

criterion_group!(benches, startup);

fn main() {
    if let Some(dir) = std::env::var_os("STARTUP_BENCH_FIXTURE") {
        let events = std::env::var("STARTUP_BENCH_EVENTS")
            .ok()
            .and_then(|e| e.parse().ok())
            .unwrap_or(1000);
        build_fixture(Path::new(&dir), events);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
