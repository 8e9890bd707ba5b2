//! One contract, every implementation: the same suite runs against the memory and file logs.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use inbox_store::{AppendError, EventLog, ExpectedVersion, FileLog, MemoryLog, PostgresLog};

fn contract(log: &dyn EventLog) {
    let a = site(1);
    let b = site(2);
    assert_eq!(log.last_position().unwrap(), 0);
    assert_eq!(log.site_version(&a).unwrap(), 0);

    // Given an empty site, when appending at version 0, then positions and versions start at 1.
    let first = log
        .append(
            &a,
            ExpectedVersion::Exactly(0),
            &[
                envelope(&a, 1, started(conversation(1), 1)),
                envelope(&a, 2, message(10, conversation(1), "hi")),
            ],
        )
        .unwrap();
    assert_eq!(
        (
            first.first_position,
            first.last_position,
            first.site_version
        ),
        (1, 2, 2)
    );

    // A stale expected version is a conflict carrying both versions, and stores nothing.
    match log.append(
        &a,
        ExpectedVersion::Exactly(1),
        &[envelope(&a, 3, message(11, conversation(1), "x"))],
    ) {
        Err(AppendError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (1, 2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.last_position().unwrap(), 2);

    // Sites have their own versions and share the global positions.
    let other = log
        .append(
            &b,
            ExpectedVersion::Exactly(0),
            &[envelope(&b, 4, started(conversation(2), 2))],
        )
        .unwrap();
    assert_eq!((other.first_position, other.site_version), (3, 1));
    let any = log
        .append(
            &a,
            ExpectedVersion::Any,
            &[envelope(&a, 5, message(12, conversation(1), "again"))],
        )
        .unwrap();
    assert_eq!((any.first_position, any.site_version), (4, 3));

    // Bad batches are refused whole.
    assert!(matches!(
        log.append(&a, ExpectedVersion::Any, &[]),
        Err(AppendError::EmptyBatch)
    ));
    assert!(matches!(
        log.append(
            &a,
            ExpectedVersion::Any,
            &[
                envelope(&a, 6, started(conversation(3), 3)),
                envelope(&b, 7, started(conversation(4), 4))
            ]
        ),
        Err(AppendError::WrongSite { index: 1, .. })
    ));
    assert_eq!(log.last_position().unwrap(), 4);

    // Reads: a site from a version, everything from a position, in order.
    let site_a = log.read_site(&a, 2, 10).unwrap();
    assert_eq!(
        site_a
            .iter()
            .map(|e| (e.position, e.site_version))
            .collect::<Vec<_>>(),
        vec![(2, 2), (4, 3)]
    );
    assert_eq!(
        site_a[0].envelope,
        envelope(&a, 2, message(10, conversation(1), "hi"))
    );
    assert_eq!(log.read_site(&a, 1, 1).unwrap().len(), 1);
    assert!(log.read_site(&site(9), 1, 10).unwrap().is_empty());
    let all = log.read_all(2, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(log.read_all(5, 100).unwrap(), vec![]);
    assert_eq!(log.read_all(1, 2).unwrap().len(), 2);
    assert_eq!(log.site_version(&a).unwrap(), 3);
    assert_eq!(log.site_version(&b).unwrap(), 1);

    // Submitting fixes a batch's place at once; a second submit to the same site goes after
    // it, and each is durable (and visible) once waited on, in either order of waiting.
    let t1 = log
        .submit(
            &a,
            ExpectedVersion::Exactly(3),
            &[envelope(&a, 20, message(20, conversation(1), "x"))],
        )
        .unwrap();
    let t2 = log
        .submit(
            &a,
            ExpectedVersion::Exactly(4),
            &[envelope(&a, 21, message(21, conversation(1), "y"))],
        )
        .unwrap();
    assert_eq!(
        (t1.appended().last_position, t2.appended().last_position),
        (5, 6)
    );
    let stale = log.submit(
        &a,
        ExpectedVersion::Exactly(4),
        &[envelope(&a, 22, message(22, conversation(1), "z"))],
    );
    assert!(
        matches!(
            stale,
            Err(AppendError::Conflict {
                expected: 4,
                actual: 5,
                ..
            })
        ),
        "{stale:?}"
    );
    assert_eq!(log.wait(t2).unwrap().site_version, 5);
    assert_eq!(log.wait(t1).unwrap().site_version, 4);
    assert_eq!(log.last_position().unwrap(), 6);
    assert_eq!(
        log.read_site(&a, 4, 10)
            .unwrap()
            .iter()
            .map(|e| e.envelope.event_id)
            .collect::<Vec<_>>(),
        [
            envelope(&a, 20, started(conversation(1), 1)).event_id,
            envelope(&a, 21, started(conversation(1), 1)).event_id
        ]
    );
}

#[test]
fn memory_log_keeps_the_contract() {
    contract(&MemoryLog::new());
}

#[test]
fn file_log_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!(report.events, 0);
    contract(&log);
}

#[test]
fn file_log_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (log, _) = FileLog::open(dir.path()).unwrap();
        contract(&log);
        log.read_all(1, 100).unwrap()
    };
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!(report.events, 6);
    assert_eq!(report.torn_tail, None);
    assert_eq!(log.read_all(1, 100).unwrap(), before);
    assert_eq!(log.site_version(&site(1)).unwrap(), 5);
    // And it goes on from where it was.
    let next = log
        .append(
            &site(2),
            ExpectedVersion::Exactly(1),
            &[envelope(&site(2), 99, started(conversation(9), 9))],
        )
        .unwrap();
    assert_eq!((next.first_position, next.site_version), (7, 2));
}

/// The PostgreSQL log, on a fresh database of the server `INBOX_TEST_POSTGRES` names (skipped
/// loudly without one, a failure under `CI=true`).
fn postgres(test: &str) -> Option<(String, PostgresLog)> {
    let url = inbox_store::postgres::testing::fresh_database(test)?;
    let log = PostgresLog::connect(&url).unwrap();
    Some((url, log))
}

#[test]
fn postgres_log_keeps_the_contract() {
    let Some((_, log)) = postgres("postgres_log_keeps_the_contract") else {
        return;
    };
    contract(&log);
}

#[test]
fn postgres_log_keeps_everything_across_reconnect() {
    let Some((url, log)) = postgres("postgres_log_keeps_everything_across_reconnect") else {
        return;
    };
    contract(&log);
    let before = log.read_all(1, 100).unwrap();
    drop(log);
    // Connecting again runs no migration twice and finds everything.
    let log = PostgresLog::connect(&url).unwrap();
    assert_eq!(log.read_all(1, 100).unwrap(), before);
    assert_eq!(
        (
            log.last_position().unwrap(),
            log.site_version(&site(1)).unwrap()
        ),
        (6, 5)
    );
    let next = log
        .append(
            &site(2),
            ExpectedVersion::Exactly(1),
            &[envelope(&site(2), 99, started(conversation(9), 9))],
        )
        .unwrap();
    assert_eq!((next.first_position, next.site_version), (7, 2));
}

/// Two logs on one database stand for two processes: each has its own connections and its
/// own appender thread, and they share nothing but the server.
#[test]
fn postgres_appenders_of_two_processes_on_the_same_sites_land_exactly_once() {
    let Some((url, first)) = postgres("postgres_appenders_of_two_processes") else {
        return;
    };
    let logs = [
        std::sync::Arc::new(first),
        std::sync::Arc::new(PostgresLog::connect(&url).unwrap()),
    ];
    const SITES: u8 = 4;
    const PER_THREAD: u64 = 30;
    let conflicts = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..16u8 {
            let log = logs[usize::from(t % 2)].clone();
            let conflicts = &conflicts;
            scope.spawn(move || {
                // Every site gets writers from both "processes": optimistic appends that
                // re-read the version and retry on a conflict.
                let s = site(t % SITES);
                for i in 0..PER_THREAD {
                    let id = u128::from(t) << 32 | u128::from(i);
                    loop {
                        let version = log.site_version(&s).unwrap();
                        match log.append(
                            &s,
                            ExpectedVersion::Exactly(version),
                            &[envelope(
                                &s,
                                id,
                                message(1, conversation(u64::from(t)), "m"),
                            )],
                        ) {
                            Ok(_) => break,
                            Err(AppendError::Conflict { .. }) => {
                                conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    let all = logs[1].read_all(1, 10_000).unwrap();
    assert_eq!(all.len(), 16 * PER_THREAD as usize);
    // Dense positions, in order, each event once.
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position == i as u64 + 1)
    );
    let mut ids: Vec<_> = all.iter().map(|e| e.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
    // Each site's versions are 1..=n with no gap, in position order.
    for s in 0..SITES {
        let versions: Vec<u64> = all
            .iter()
            .filter(|e| e.envelope.site == site(s))
            .map(|e| e.site_version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            logs[0].site_version(&site(s)).unwrap(),
            versions.len() as u64
        );
    }
    // 16 threads on 4 sites: the optimistic check really was exercised.
    assert!(
        conflicts.into_inner() > 0,
        "no conflict at all: the test proves nothing"
    );
}

/// The bug CI found: the versions read in the statement that waited for the head lock were
/// those of before the wait (READ COMMITTED's statement snapshot), so an append queued
/// behind another process's commit accepted a stale version and hit the unique key. Made
/// deterministic here: another session holds the lock, the append queues behind it, the
/// holder commits a newer version of the site; the append must see it and be a conflict.
#[test]
fn postgres_an_append_queued_behind_another_commit_sees_its_versions() {
    let Some((url, log)) = postgres("postgres_append_behind_another_commit") else {
        return;
    };
    let a = site(1);
    append_nth(&log, &a, 0, "first");
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    holder
        .batch_execute("BEGIN; SELECT position FROM inbox_head FOR UPDATE")
        .unwrap();
    let log = std::sync::Arc::new(log);
    let queued = {
        let log = log.clone();
        let a = a.clone();
        std::thread::spawn(move || {
            log.append(
                &a,
                ExpectedVersion::Exactly(1),
                &[envelope(&a, 50, message(50, conversation(1), "queued"))],
            )
        })
    };
    // Wait (bounded) until the append is blocked on the head lock.
    let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the append never queued for the head lock"
        );
        std::thread::yield_now();
    }
    // The holder commits version 2 of the site, as another process's append would.
    let body = inbox_store::encode_event(&message(60, conversation(1), "other")).unwrap();
    holder
        .execute(
            "INSERT INTO inbox_events (position, site_version, site, event_id, schema_version, \
             recorded_at, body) VALUES (2, 2, $1, $2, $3, 0, $4)",
            &[
                &a.0,
                &uuid::Uuid::from_u128(60),
                &i16::try_from(inbox_core::SCHEMA_VERSION).unwrap(),
                &body,
            ],
        )
        .unwrap();
    holder
        .batch_execute(
            "UPDATE inbox_sites SET version = 2; UPDATE inbox_head SET position = 2; COMMIT",
        )
        .unwrap();
    match queued.join().unwrap() {
        Err(AppendError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (1, 2)),
        other => panic!("expected a conflict at version 2, got {other:?}"),
    }
    // And the log goes on.
    let next = log
        .append(
            &a,
            ExpectedVersion::Exactly(2),
            &[envelope(&a, 70, message(70, conversation(1), "after"))],
        )
        .unwrap();
    assert_eq!((next.first_position, next.site_version), (3, 3));
}

#[test]
fn postgres_listener_wakes_on_another_process_commit_and_misses_none() {
    let Some((url, writer)) = postgres("postgres_listener_wakes") else {
        return;
    };
    let reader = PostgresLog::connect(&url).unwrap();
    let mut listener = reader.listen().unwrap();
    let a = site(1);
    // Nothing committed: the wait times out.
    assert!(!listener.wait(std::time::Duration::from_millis(50)).unwrap());
    // A commit between the reader's read and its wait is not missed.
    assert!(reader.read_all(1, 10).unwrap().is_empty());
    append_nth(&writer, &a, 0, "one");
    append_nth(&writer, &a, 1, "two");
    assert!(listener.wait(std::time::Duration::from_secs(30)).unwrap());
    // Woken after the commits: both are there to read (a wait never wakes early).
    assert_eq!(reader.read_all(1, 10).unwrap().len(), 2);
}

#[test]
fn postgres_refuses_a_database_from_a_newer_build() {
    let Some((url, log)) = postgres("postgres_refuses_a_newer_schema") else {
        return;
    };
    drop(log);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute("INSERT INTO inbox_migrations (version) VALUES (999)")
        .unwrap();
    match PostgresLog::connect(&url) {
        Err(inbox_store::PostgresError::NewerSchema { found: 999, .. }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn postgres_processes_starting_together_migrate_once() {
    let Some(url) = inbox_store::postgres::testing::fresh_database("postgres_migrate_once") else {
        return;
    };
    let logs: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| PostgresLog::connect(&url)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(logs.iter().all(Result::is_ok), "{logs:?}");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM inbox_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, inbox_store::postgres::SCHEMA_VERSION as i64);
}

#[test]
fn a_second_real_process_is_refused_while_the_log_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = FileLog::open(dir.path()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crash-appender"))
        .arg(dir.path())
        .arg("0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = FileLog::open(dir.path()).unwrap();
    // flock is per open file description, so a second open in this process stands in for
    // a second process (the crash test uses real processes).
    match FileLog::open(dir.path()) {
        Err(inbox_store::OpenError::Locked(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn small_segments_roll_over_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = inbox_store::FileLogOptions {
        segment_bytes: 600,
        fsync: true,
    };
    let a = site(1);
    {
        let (log, _) = FileLog::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..50u64 {
            append_nth(&log, &a, i, "a message of some length");
        }
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments > 5, "only {segments} segments");
    let (log, report) = FileLog::open_with(dir.path(), options).unwrap();
    assert_eq!((report.events, report.segments), (50, segments));
    let all = log.read_all(1, 1000).unwrap();
    assert_eq!(all.len(), 50);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position == i as u64 + 1 && e.site_version == i as u64 + 1)
    );
    assert_eq!(
        log.read_site(&a, 37, 5)
            .unwrap()
            .iter()
            .map(|e| e.site_version)
            .collect::<Vec<_>>(),
        vec![37, 38, 39, 40, 41]
    );
}

#[test]
fn concurrent_appenders_all_land_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path()).unwrap();
    let log = std::sync::Arc::new(log);
    let threads: Vec<_> = (0..16u8)
        .map(|t| {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let s = site(t);
                for i in 0..25u64 {
                    let id = u128::from(t) << 32 | u128::from(i);
                    log.append(
                        &s,
                        ExpectedVersion::Exactly(i),
                        &[envelope(
                            &s,
                            id,
                            message(i as i64 + 1, conversation(u64::from(t)), "m"),
                        )],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = log.read_all(1, 10_000).unwrap();
    assert_eq!(all.len(), 16 * 25);
    let stats = log.stats();
    assert_eq!((stats.appends, stats.events), (16 * 25, 16 * 25));
    assert!(
        stats.flushes >= 1 && stats.flushes <= stats.appends,
        "{stats:?}"
    );
    let mut ids: Vec<_> = all.iter().map(|e| e.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16 * 25);
    for t in 0..16u8 {
        let versions: Vec<u64> = log
            .read_site(&site(t), 1, 100)
            .unwrap()
            .iter()
            .map(|e| e.site_version)
            .collect();
        assert_eq!(versions, (1..=25).collect::<Vec<_>>());
    }
}
