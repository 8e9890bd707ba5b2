//! The benchmarks of `inbox-store` (issue 4; numbers and targets: `docs/PERFORMANCE.md`,
//! section "Store"), each beside a floor measured in the same run:
//!
//! * `append`: durable appends, one event each, from 1, 8 and 64 threads (each its own
//!   site, `ExpectedVersion::Exactly`) on a `FileLog` with fsync on; beside the same appends
//!   with fsync off and a plain `write_all` + `sync_data` per event from one thread (what
//!   every append would cost without group commit);
//! * `replay`: `recover` of a 10^6-event log from its segment files into an `Inbox`;
//!   beside reading the same files with `std::fs::read` and decoding every record without
//!   applying it (`EventLog::replay` with a counting closure);
//! * `startup`: `FileLog::open` + `recover` with a snapshot at 10^6 events and 10^3 events
//!   of tail.
//!
//! Beside each, the obvious SQLite schema (`inbox_benches::sqlite`) in a file database in WAL
//! mode with `synchronous=FULL`: one `INSERT` per transaction from 1, 8 and 64 threads, each
//! thread with its own connection and a busy timeout, counted like the appenders (`append`);
//! opening the database and reading every message back into memory (`replay`); opening it and
//! reading the first page of a conversation (`startup`: SQLite has nothing to replay).
//!
//! The logs live in a temporary directory under the workspace's `target/` (a real disk, not
//! a tmpfs; `INBOX_BENCH_DIR` overrides it), removed when the group ends. Big fixtures are
//! built once, outside the timing, with fsync off. `INBOX_BENCH_QUICK=1` shrinks the sizes;
//! `cargo bench -p inbox-benches --bench store -- --test` runs each bench once.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use inbox_benches::{
    BASE_SEQUENCE, bench_dir, conversation, pow10, quick_mode, sqlite, start_event, text_message,
    time_threads,
};
use inbox_core::{Event, EventEnvelope, EventId, InboxConfig, SiteId, Timestamp};
use inbox_store::{
    EventLog, ExpectedVersion, FileLog, FileLogOptions, SiteState, Snapshots, recover,
    write_snapshot,
};
use rusqlite::Connection;
use tempfile::TempDir;
use uuid::Uuid;

struct Sizes {
    /// Events in the replayed log (conversation starts included).
    log_events: u64,
    /// Conversations they go to.
    conversations: u64,
    /// Events after the snapshot in `startup`.
    tail: u64,
    /// How long each append bench measures.
    append_time: Duration,
}

fn sizes() -> Sizes {
    if quick_mode() {
        Sizes {
            log_events: 10_000,
            conversations: 100,
            tail: 100,
            append_time: Duration::from_millis(500),
        }
    } else {
        Sizes {
            log_events: 1_000_000,
            conversations: 10_000,
            tail: 1_000,
            append_time: Duration::from_secs(4),
        }
    }
}

fn config(site: &SiteId) -> InboxConfig {
    InboxConfig::new(site.clone(), [42; 16])
}

fn site(i: usize) -> SiteId {
    SiteId::new(format!("bench-site-{i}"))
}

/// The envelope of event number `i` of a site.
fn envelope(site: &SiteId, i: u64, event: Event) -> EventEnvelope {
    EventEnvelope::new(
        site.clone(),
        EventId::from_uuid(Uuid::from_u128((0xE0_u128 << 64) | u128::from(i))),
        Timestamp::from_micros(BASE_SEQUENCE + i64::try_from(i).unwrap()),
        event,
    )
}

/// The `i`-th message event of a site: a 40-character text to one of `conversations`.
fn message_event(i: u64, conversations: u64) -> Event {
    let seq = BASE_SEQUENCE + i64::try_from(i).unwrap();
    Event::MessageSent {
        message: text_message(seq, conversation(inbox_benches::mix(i) % conversations), i),
    }
}

/// Bytes of the segment files of a log directory.
fn segment_files(dir: &Path) -> (Vec<PathBuf>, u64) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let bytes = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    (files, bytes)
}

/// Whether a bench with one of these ids may pass the command line's filter (criterion
/// calls a bench's closure only if it does, but a group's throughput is set before that).
/// Errs on the side of yes.
fn may_run(ids: &[&str]) -> bool {
    const TAKES_VALUE: &[&str] = &[
        "--color",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--format",
        "--profile-time",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !TAKES_VALUE.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a)
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            f.contains(|c: char| "\\^$.|?*+()[]{}".contains(c))
                || ids.iter().any(|id| id.contains(f.as_str()))
        })
}

// ---------------------------------------------------------------------------------------
// 1. durable appends

/// `threads` threads each append `iters` events, one per append, to their own site; returns
/// the time from their common start until the last one finished.
fn run_appenders(log: &FileLog, threads: usize, iters: u64) -> Duration {
    time_threads(0..threads, |t, _| {
        let site = site(t);
        let mut version = log.site_version(&site).unwrap();
        // Build the events before the start: the bench times the log, not this.
        let events: Vec<EventEnvelope> = (0..iters)
            .map(|k| {
                let i = version + k;
                envelope(&site, i, message_event(i, 100))
            })
            .collect();
        move || {
            for e in &events {
                let done = log
                    .append(
                        &site,
                        ExpectedVersion::Exactly(version),
                        std::slice::from_ref(e),
                    )
                    .unwrap();
                version = done.site_version;
            }
        }
    })
}

fn append(c: &mut Criterion) {
    let s = sizes();
    let dir = bench_dir();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(s.append_time);

    for fsync in [true, false] {
        let name = if fsync {
            "filelog_fsync"
        } else {
            "filelog_no_fsync"
        };
        for threads in [1usize, 8, 64] {
            // One iteration: every thread appends one event.
            group.throughput(Throughput::Elements(threads as u64));
            let log_dir = dir.path().join(format!("{name}-{threads}"));
            let log: OnceCell<FileLog> = OnceCell::new();
            group.bench_function(
                BenchmarkId::new(name, format!("{threads}_appenders")),
                |b| {
                    let log = log.get_or_init(|| {
                        FileLog::open_with(
                            &log_dir,
                            FileLogOptions {
                                fsync,
                                ..FileLogOptions::default()
                            },
                        )
                        .unwrap()
                        .0
                    });
                    b.iter_custom(|iters| run_appenders(log, threads, iters));
                },
            );
            if let Some(log) = log.get() {
                let st = log.stats();
                println!(
                    "{name}/{threads}: {} appends in {} write rounds ({:.1} events per write round)",
                    st.appends,
                    st.flushes,
                    st.events as f64 / st.flushes.max(1) as f64
                );
                // Everything acknowledged is there, in order per site.
                for t in 0..threads {
                    let v = log.site_version(&site(t)).unwrap();
                    if v > 0 {
                        let last = log.read_site(&site(t), v, 1).unwrap();
                        assert_eq!(last[0].site_version, v);
                    }
                }
            }
        }
    }

    // The no-group-commit floor: each event written and fdatasynced on its own, one thread,
    // the same bytes an event takes in a record (the encoded event, padded by a header).
    group.throughput(Throughput::Elements(1));
    let path = dir.path().join("plain.dat");
    let mut record = inbox_store::encode_event(&message_event(0, 100)).unwrap();
    record.extend_from_slice(&[0u8; 60]);
    group.bench_function(
        BenchmarkId::new("floor_write_all_sync_data", "1_thread"),
        |b| {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    file.write_all(black_box(&record)).unwrap();
                    file.sync_data().unwrap();
                }
                start.elapsed()
            });
        },
    );

    // SQLite, durable: a file database in WAL mode with `synchronous=FULL`, one `INSERT` of a
    // 40-character message per (autocommit) transaction, from one thread.
    let db_path = dir.path().join("sqlite-append.db");
    group.bench_function(BenchmarkId::new("sqlite_wal_full", "1_thread"), |b| {
        let db = sqlite::open_file(&db_path).unwrap();
        let mut next = sqlite::count_all(&db).unwrap();
        b.iter_custom(|iters| {
            // Built before the start: the bench times the database, not this.
            let rows =
                sqlite::send_rows(next + iters, 100).split_off(usize::try_from(next).unwrap());
            let start = Instant::now();
            for r in &rows {
                sqlite::insert_one(&db, black_box(r)).unwrap();
            }
            let elapsed = start.elapsed();
            next += iters;
            elapsed
        });
        // Every acknowledged insert is there.
        assert_eq!(sqlite::count_all(&db).unwrap(), next);
    });

    // SQLite, durable, from many threads, the obvious way: a connection per thread (WAL,
    // `synchronous=FULL`, a busy timeout so writers wait for the lock instead of failing),
    // one `INSERT` per (autocommit) transaction; counted like the `FileLog` appenders. SQLite
    // lets one writer in at a time and its busy handler sleeps between retries (1 ms growing
    // to 100 ms), so under contention the lock often sits free while the writers sleep: that
    // is what this setup gets, and what the numbers show.
    for threads in [8usize, 64] {
        group.throughput(Throughput::Elements(threads as u64));
        let db_path = dir.path().join(format!("sqlite-append-{threads}.db"));
        // Opened once, on the first call (criterion calls the closure several times).
        let mut conns: Vec<Connection> = Vec::new();
        let mut next = 0u64;
        group.bench_function(
            BenchmarkId::new("sqlite_wal_full", format!("{threads}_threads")),
            |b| {
                if conns.is_empty() {
                    conns = (0..threads)
                        .map(|_| sqlite::open_writer(&db_path).unwrap())
                        .collect();
                }
                b.iter_custom(|iters| {
                    let elapsed = run_sqlite_appenders(&mut conns, next, iters);
                    next += iters;
                    elapsed
                });
                // Every acknowledged insert is there.
                assert_eq!(sqlite::count_all(&conns[0]).unwrap(), next * threads as u64);
            },
        );
    }
    group.finish();
}

/// Each connection's thread inserts `iters` rows, one per transaction, into its own
/// conversation (rows `next..next + iters` of it); returns the time from their common start
/// until the last one finished.
fn run_sqlite_appenders(conns: &mut [Connection], next: u64, iters: u64) -> Duration {
    time_threads(conns.iter_mut(), |t, conn| {
        let conversation = sqlite::key(conversation(1_000_000 + t as u64));
        // Built before the start: the bench times the database, not this.
        let rows: Vec<sqlite::Row> = (next..next + iters)
            .map(|k| {
                let seq = BASE_SEQUENCE + i64::try_from(k).unwrap();
                sqlite::Row {
                    conversation,
                    sequence: seq,
                    id: seq,
                    body: inbox_benches::text40(k),
                }
            })
            .collect();
        move || {
            for r in &rows {
                sqlite::insert_one(conn, black_box(r)).unwrap();
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// 2. replay and 3. start-up

struct ReplayFixture {
    _dir: TempDir,
    log: FileLog,
    segments: Vec<PathBuf>,
    bytes: u64,
}

/// A log of `events` events of one site: `conversations` conversation starts, then messages
/// of 40-character texts to them. Written with fsync off, in batches of 1000 (to save time:
/// the bench reads it, and the bytes are the same).
fn build_log(log_dir: &Path, events: u64, conversations: u64) -> FileLog {
    let (log, _) = FileLog::open_with(
        log_dir,
        FileLogOptions {
            fsync: false,
            ..FileLogOptions::default()
        },
    )
    .unwrap();
    let site = site(0);
    let mut batch = Vec::with_capacity(1000);
    for i in 0..events {
        let event = if i < conversations {
            start_event(i)
        } else {
            message_event(i, conversations)
        };
        batch.push(envelope(&site, i, event));
        if batch.len() == 1000 || i + 1 == events {
            log.append(&site, ExpectedVersion::Any, &batch).unwrap();
            batch.clear();
        }
    }
    assert_eq!(log.last_position().unwrap(), events);
    log
}

impl ReplayFixture {
    fn new(s: &Sizes) -> Self {
        let dir = bench_dir();
        let log_dir = dir.path().join("log");
        let log = build_log(&log_dir, s.log_events, s.conversations);
        let (segments, bytes) = segment_files(&log_dir);
        println!(
            "replay fixture: {} events, {} segments, {bytes} bytes ({:.1} bytes/event)",
            s.log_events,
            segments.len(),
            bytes as f64 / s.log_events as f64
        );
        ReplayFixture {
            _dir: dir,
            log,
            segments,
            bytes,
        }
    }
}

/// Times `routine` once per iteration; the output is dropped outside the timing, and the
/// allocator settled after it (see `time_each` in `core.rs`: glibc would otherwise charge
/// consolidating the freed state to the next timed iteration).
fn time_each<O>(iters: u64, mut routine: impl FnMut() -> O) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let output = routine();
        total += start.elapsed();
        drop(black_box(output));
        drop(black_box(Vec::<u8>::with_capacity(4096)));
    }
    total
}

fn messages_in(sites: &BTreeMap<SiteId, SiteState>, conversations: u64) -> usize {
    sites
        .values()
        .map(|SiteState { inbox, .. }| {
            (0..conversations)
                .map(|i| inbox.messages_of(conversation(i)).count())
                .sum::<usize>()
        })
        .sum()
}

struct StartupFixture {
    _dir: TempDir,
    log_dir: PathBuf,
    snapshot_dir: PathBuf,
}

impl StartupFixture {
    /// A copy of the replay log with a snapshot at its end, then `tail` more events.
    fn new(s: &Sizes, replay: &ReplayFixture) -> Self {
        let dir = bench_dir();
        let log_dir = dir.path().join("log");
        let snapshot_dir = dir.path().join("snapshots");
        std::fs::create_dir_all(&log_dir).unwrap();
        for seg in &replay.segments {
            std::fs::copy(seg, log_dir.join(seg.file_name().unwrap())).unwrap();
        }
        let (log, _) = FileLog::open(&log_dir).unwrap();
        let state = recover(&log, None, &config).unwrap();
        assert_eq!(state.position, s.log_events);
        let snapshots = Snapshots::new(&snapshot_dir).unwrap();
        let snap = write_snapshot(&snapshots, state.position, &state.sites).unwrap();
        // With the snapshot, a checkpoint of the log's own index: open then scans the tail only.
        assert_eq!(log.checkpoint().unwrap(), state.position);
        drop(state);
        let site = site(0);
        for k in 0..s.tail {
            let i = s.log_events + k;
            log.append(
                &site,
                ExpectedVersion::Exactly(i),
                &[envelope(&site, i, message_event(i, s.conversations))],
            )
            .unwrap();
        }
        println!(
            "startup fixture: snapshot at {} ({} bytes), {} events of tail",
            s.log_events,
            std::fs::metadata(snap).unwrap().len(),
            s.tail
        );
        StartupFixture {
            _dir: dir,
            log_dir,
            snapshot_dir,
        }
    }
}

/// The messages of the replay log (10^4 conversations' worth of 40-character texts) as rows of
/// a file database in WAL mode: written in one transaction with `synchronous=OFF` (to save
/// time; the bytes are the same), then reopened with `synchronous=FULL` by the benches.
struct SqliteFixture {
    _dir: TempDir,
    path: PathBuf,
    rows: u64,
}

impl SqliteFixture {
    fn new(s: &Sizes) -> Self {
        let dir = bench_dir();
        let path = dir.path().join("messages.db");
        let mut db = sqlite::open_file(&path).unwrap();
        db.pragma_update(None, "synchronous", "OFF").unwrap();
        // The log's `MessageSent` events: event i is message i, for i past the conversation
        // starts.
        let rows: Vec<sqlite::Row> = sqlite::send_rows(s.log_events, s.conversations)
            .split_off(usize::try_from(s.conversations).unwrap());
        sqlite::insert_all(&mut db, &rows).unwrap();
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let n = sqlite::count_all(&db).unwrap();
        assert_eq!(n, s.log_events - s.conversations);
        drop(db);
        println!(
            "sqlite fixture: {n} messages, {} bytes",
            std::fs::metadata(&path).unwrap().len()
        );
        SqliteFixture {
            _dir: dir,
            path,
            rows: n,
        }
    }
}

fn replay_and_startup(c: &mut Criterion) {
    let s = sizes();
    let size = pow10(s.log_events);
    let replay: OnceCell<ReplayFixture> = OnceCell::new();
    let build = || ReplayFixture::new(&s);

    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if quick_mode() { 1 } else { 15 }));
    // Events/s and MB/s. The segment bytes are only known once the log is built, so it is
    // built here, before the benches, unless the command line filters them all out.
    let ids = [
        "replay/recover_into_inbox",
        "replay/floor_decode_only",
        "replay/floor_fs_read",
    ];
    if may_run(&ids) {
        group.throughput(Throughput::ElementsAndBytes {
            elements: s.log_events,
            bytes: replay.get_or_init(build).bytes,
        });
    } else {
        group.throughput(Throughput::Elements(s.log_events));
    }

    group.bench_function(BenchmarkId::new("recover_into_inbox", &size), |b| {
        let fx = replay.get_or_init(build);
        // Once, outside the timing: recovery rebuilds every message.
        let state = recover(&fx.log, None, &config).unwrap();
        assert_eq!(state.replayed, s.log_events);
        assert_eq!(
            messages_in(&state.sites, s.conversations) as u64,
            s.log_events - s.conversations
        );
        drop(state);
        b.iter_custom(|iters| time_each(iters, || recover(&fx.log, None, &config).unwrap()));
    });

    group.bench_function(BenchmarkId::new("floor_decode_only", &size), |b| {
        let fx = replay.get_or_init(build);
        b.iter_custom(|iters| {
            time_each(iters, || {
                let mut n = 0u64;
                fx.log
                    .replay(1, &mut |e| {
                        black_box(&e);
                        n += 1;
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert_eq!(n, s.log_events);
                n
            })
        });
    });

    group.bench_function(BenchmarkId::new("floor_fs_read", &size), |b| {
        let fx = replay.get_or_init(build);
        b.iter_custom(|iters| {
            time_each(iters, || {
                let mut total = 0usize;
                for seg in &fx.segments {
                    total += black_box(std::fs::read(seg).unwrap()).len();
                }
                assert_eq!(total as u64, fx.bytes);
                total
            })
        });
    });

    // SQLite: open the database and read every message back into memory.
    let sql: OnceCell<SqliteFixture> = OnceCell::new();
    group.bench_function(BenchmarkId::new("sqlite_read_all", &size), |b| {
        let fx = sql.get_or_init(|| SqliteFixture::new(&s));
        b.iter_custom(|iters| {
            time_each(iters, || {
                let db = sqlite::open_file(&fx.path).unwrap();
                let rows = sqlite::read_all(&db).unwrap();
                assert_eq!(rows.len() as u64, fx.rows);
                (db, rows)
            })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("startup");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if quick_mode() { 1 } else { 10 }));
    let startup: OnceCell<StartupFixture> = OnceCell::new();
    let id = format!("snapshot_at_{size}_tail_{}", pow10(s.tail));
    group.bench_function(BenchmarkId::new("open_and_recover", &id), |b| {
        let fx = startup.get_or_init(|| StartupFixture::new(&s, replay.get_or_init(build)));
        let snapshots = Snapshots::new(&fx.snapshot_dir).unwrap();
        {
            // Once, outside the timing: the snapshot is used and only the tail replayed.
            let (log, _) = FileLog::open(&fx.log_dir).unwrap();
            let state = recover(&log, Some(&snapshots), &config).unwrap();
            assert_eq!(state.snapshot_position, Some(s.log_events));
            assert_eq!(state.replayed, s.tail);
            assert!(state.skipped_snapshots.is_empty());
        }
        b.iter_custom(|iters| {
            time_each(iters, || {
                let (log, _) = FileLog::open(&fx.log_dir).unwrap();
                let state = recover(&log, Some(&snapshots), &config).unwrap();
                (log, state)
            })
        });
    });
    // The two parts apart: opening (which scans every segment) and recovering alone.
    group.bench_function(BenchmarkId::new("open_only", &id), |b| {
        let fx = startup.get_or_init(|| StartupFixture::new(&s, replay.get_or_init(build)));
        b.iter_custom(|iters| time_each(iters, || FileLog::open(&fx.log_dir).unwrap()));
    });
    group.bench_function(BenchmarkId::new("recover_only", &id), |b| {
        let fx = startup.get_or_init(|| StartupFixture::new(&s, replay.get_or_init(build)));
        let snapshots = Snapshots::new(&fx.snapshot_dir).unwrap();
        let (log, _) = FileLog::open(&fx.log_dir).unwrap();
        b.iter_custom(|iters| {
            time_each(iters, || recover(&log, Some(&snapshots), &config).unwrap())
        });
    });
    // SQLite has nothing to replay: ready once opened. Open the database of the same messages
    // and read the first page (newest 30) of one conversation.
    group.bench_function(BenchmarkId::new("sqlite_open_first_page", &id), |b| {
        let fx = sql.get_or_init(|| SqliteFixture::new(&s));
        b.iter_custom(|iters| {
            time_each(iters, || {
                let db = sqlite::open_file(&fx.path).unwrap();
                let page = sqlite::page(&db, conversation(0), None, true, 30).unwrap();
                assert_eq!(page.len(), 30);
                (db, page)
            })
        });
    });
    group.finish();
}

criterion_group!(benches, append, replay_and_startup);
criterion_main!(benches);
