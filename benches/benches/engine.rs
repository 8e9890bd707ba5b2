//! The durable engine (`inbox_store::Engine`, issue 13; numbers: `docs/PERFORMANCE.md`,
//! section "Engine"), each beside a floor measured in the same run:
//!
//! * `engine_execute`: Send Message through `Engine::execute` (decide, envelope, submit,
//!   apply, wait for the fsync) from 1 and 64 threads, each thread its own site, on a
//!   `FileLog` with fsync on; beside the bare path an embedder would otherwise write: the
//!   same decision made by `Inbox::decide`, then `FileLog::append` + `Inbox::apply`, from the
//!   same threads;
//! * `engine_cache`: a cold site's first read with a bounded cache (`max_sites`) over a
//!   snapshot of many sites of 100 messages each: its image read from the snapshot and
//!   decoded, then its events after it (none here); beside a read of a site in the cache.
//!   The resident memory after touching every site once is printed, with the cache's report.
//!
//! `INBOX_BENCH_QUICK=1` shrinks the sizes; `-- --test` runs each bench once.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use inbox_benches::{bench_dir, quick_mode, time_threads};
use inbox_core::{
    Command, Context, ConversationId, Direction, EventEnvelope, EventId, IdSource, Inbox,
    InboxConfig, MessageDraft, ParticipantId, SendAs, SequentialIds, SiteId, Timestamp, VisitorId,
};
use inbox_store::{Engine, EngineConfig, EventLog, ExpectedVersion, FileLog, Snapshots};
use uuid::Uuid;

fn config() -> EngineConfig {
    EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [42; 16]))
}

fn site(i: usize) -> SiteId {
    SiteId::new(format!("engine-site-{i:06}"))
}

fn visitor(i: usize) -> ParticipantId {
    ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(0x7157 + i as u128)))
}

fn ctx(i: u64) -> Context {
    Context::at(Timestamp::from_micros(
        1_700_000_000_000_000 + i64::try_from(i).unwrap(),
    ))
}

fn send(conversation_id: ConversationId, i: u64) -> Command {
    Command::SendMessage {
        conversation_id,
        message: MessageDraft::text(format!("{i:040}"), Direction::ParticipantToBusiness),
        send_as: SendAs::Participant,
    }
}

/// Ids that never repeat across threads: thread `t` draws from its own range.
fn ids_for(thread: usize, round: u64) -> SequentialIds {
    SequentialIds::starting_at(((thread as u128 + 1) << 96) | (u128::from(round) << 48))
}

fn execute(c: &mut Criterion) {
    let dir = bench_dir();
    let mut group = c.benchmark_group("engine_execute");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if quick_mode() { 2 } else { 8 }));
    let mut round = 0u64;
    for threads in [1usize, 64] {
        group.throughput(Throughput::Elements(threads as u64));

        // The engine.
        let (log, _) = FileLog::open(dir.path().join(format!("engine-{threads}"))).unwrap();
        let (engine, _) = Engine::open(Arc::new(log), None, config(), &mut |_| {}).unwrap();
        let conversations: Vec<ConversationId> = (0..threads)
            .map(|t| {
                let mut ids = ids_for(t, 0);
                let cmd = Command::GetOrCreateConversation {
                    participant: visitor(t),
                };
                engine.execute(&site(t), &cmd, &ctx(0), &mut ids).unwrap();
                engine
                    .read(&site(t), |i| i.live_conversation_of(visitor(t)))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        group.bench_function(
            BenchmarkId::new("engine", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    round += 1;
                    let r = round;
                    time_threads(0..threads, |t, _| {
                        let (engine, c) = (&engine, conversations[t]);
                        move || {
                            let mut ids = ids_for(t, r);
                            for i in 0..iters {
                                engine
                                    .execute(&site(t), &send(c, i), &ctx(i), &mut ids)
                                    .unwrap();
                            }
                        }
                    })
                });
            },
        );

        // The floor: decide, append, apply, by hand, one `Inbox` per thread.
        let (log, _) = FileLog::open(dir.path().join(format!("bare-{threads}"))).unwrap();
        let mut states: Vec<std::sync::Mutex<(Inbox, u64, ConversationId)>> = Vec::new(); // one per thread
        for t in 0..threads {
            let mut inbox = Inbox::new(InboxConfig::new(site(t), [42; 16]));
            let mut ids = ids_for(t, 0);
            let cmd = Command::GetOrCreateConversation {
                participant: visitor(t),
            };
            let events = inbox.execute(&cmd, &ctx(0), &mut ids).unwrap();
            let done = log
                .append(&site(t), ExpectedVersion::Exactly(0), &events)
                .unwrap();
            let c = inbox.live_conversation_of(visitor(t)).unwrap();
            states.push(std::sync::Mutex::new((inbox, done.site_version, c)));
        }
        group.bench_function(
            BenchmarkId::new("floor_decide_append_apply", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    round += 1;
                    let r = round;
                    time_threads(0..threads, |t, _| {
                        let (log, state) = (&log, &states[t]);
                        move || {
                            let mut ids = ids_for(t, r);
                            let mut state = state.lock().unwrap();
                            let (inbox, version, c) = &mut *state;
                            for i in 0..iters {
                                let events = inbox.decide(&send(*c, i), &ctx(i), &mut ids).unwrap();
                                let envelopes: Vec<EventEnvelope> = events
                                    .into_iter()
                                    .map(|e| {
                                        EventEnvelope::new(
                                            site(t),
                                            EventId::from_uuid(ids.next_id()),
                                            ctx(i).now,
                                            e,
                                        )
                                    })
                                    .collect();
                                let done = log
                                    .append(
                                        &site(t),
                                        ExpectedVersion::Exactly(*version),
                                        &envelopes,
                                    )
                                    .unwrap();
                                for e in &envelopes {
                                    inbox.apply(e);
                                }
                                *version = done.site_version;
                            }
                        }
                    })
                });
            },
        );
    }
    group.finish();
}

/// Resident memory of this process, in MiB (Linux: `/proc/self/statm`).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// The cache fixture: every site with one conversation of `MESSAGES` messages, in a log and
/// a snapshot, written by a bounded engine. Built in a child process (this binary again,
/// with `ENGINE_BENCH_FIXTURE` set), so that the memory it took is not in the figures.
const MESSAGES: u64 = 100;

fn cache_sizes() -> (usize, usize) {
    if quick_mode() {
        (200, 20)
    } else {
        (100_000, 1_000)
    }
}

fn build_cache_fixture(dir: &std::path::Path) {
    let (sites, capacity) = cache_sizes();
    let (log, _) = FileLog::open_with(
        dir.join("log"),
        inbox_store::FileLogOptions {
            fsync: false,
            ..inbox_store::FileLogOptions::default()
        },
    )
    .unwrap();
    let snapshots = Snapshots::new(dir.join("snapshots")).unwrap();
    let (engine, _) = Engine::open(
        Arc::new(log),
        Some(snapshots),
        config().max_sites(capacity),
        &mut |_| {},
    )
    .unwrap();
    for s in 0..sites {
        let mut ids = ids_for(s, 0);
        let cmd = Command::GetOrCreateConversation {
            participant: visitor(s),
        };
        engine.execute(&site(s), &cmd, &ctx(0), &mut ids).unwrap();
        let c = engine
            .read(&site(s), |i| i.live_conversation_of(visitor(s)))
            .unwrap()
            .unwrap();
        for i in 0..MESSAGES {
            engine
                .execute(&site(s), &send(c, i), &ctx(i + 1), &mut ids)
                .unwrap();
        }
    }
    engine.close().unwrap();
}

/// Opens the fixture (bounded or not), reads every site once, and answers the engine and
/// the resident memory it added.
fn open_and_touch(dir: &std::path::Path, bounded: bool) -> (Engine, f64) {
    let (sites, capacity) = cache_sizes();
    let before = rss_mib();
    let (log, _) = FileLog::open(dir.join("log")).unwrap();
    let snapshots = Snapshots::new(dir.join("snapshots")).unwrap();
    let config = if bounded {
        config().max_sites(capacity)
    } else {
        config()
    };
    let (engine, _) = Engine::open(Arc::new(log), Some(snapshots), config, &mut |_| {}).unwrap();
    for s in 0..sites {
        engine.read(&site(s), |i| i.message_count()).unwrap();
    }
    (engine, rss_mib() - before)
}

fn cache(c: &mut Criterion) {
    let (sites, capacity) = cache_sizes();
    let dir = bench_dir();
    let built = std::process::Command::new(std::env::current_exe().unwrap())
        .env("ENGINE_BENCH_FIXTURE", dir.path())
        .status()
        .unwrap();
    assert!(built.success(), "building the fixture failed");
    let (engine, bounded_mib) = open_and_touch(dir.path(), true);
    println!(
        "engine_cache: {sites} sites of {MESSAGES} messages, cache {capacity}: {:?}; resident \
         memory added by opening and reading every site once: {bounded_mib:.1} MiB",
        engine.cache()
    );
    let mut group = c.benchmark_group("engine_cache");
    group.sample_size(20).throughput(Throughput::Elements(1));
    let id = format!("{sites}_sites_cache_{capacity}");
    let mut next = 0usize;
    group.bench_function(BenchmarkId::new("cold_site_read", &id), |b| {
        // Sites in order, round the ring: each was evicted `capacity` reads ago.
        b.iter(|| {
            next = (next + 1) % sites;
            engine.read(&site(next), |i| i.message_count()).unwrap()
        });
    });
    let warm = site(next);
    group.bench_function(BenchmarkId::new("floor_cached_site_read", &id), |b| {
        b.iter(|| engine.read(&warm, |i| i.message_count()).unwrap());
    });
    group.finish();
    let stats = engine.cache();
    assert!(stats.loaded <= capacity, "{stats:?}");
    drop(engine);
    // The same, every site held: what the bound saves.
    let (all, unbounded_mib) = open_and_touch(dir.path(), false);
    println!(
        "engine_cache: every site held: {:?}; resident memory added: {unbounded_mib:.1} MiB",
        all.cache()
    );
}

criterion_group!(benches, execute, cache);

fn main() {
    if let Some(dir) = std::env::var_os("ENGINE_BENCH_FIXTURE") {
        build_cache_fixture(std::path::Path::new(&dir));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
