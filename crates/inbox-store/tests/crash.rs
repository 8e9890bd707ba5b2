//! Crash consistency with real process kills: a child appends from four threads and reports
//! each acknowledged event; the test SIGKILLs it after a varying number of acknowledgements,
//! reopens the log, and checks that every acknowledged event is there exactly once, in order,
//! that a batch is there whole or not at all, and that the log still accepts appends. 24
//! cycles on one directory, every other one with 4 KiB segments so kills land on roll-overs.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use inbox_store::{EventLog, ExpectedVersion, FileLog};

/// The two tests run one at a time. Each spawns children while the other may hold a log
/// open: a child forked by one test's thread holds a copy of every descriptor of this process
/// until it execs, so the other test's LOCK (an flock) could still be held for that instant
/// after the other test closed it, and its next child would find the log in use.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_acknowledged_append_survives_sigkill() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut acked_total: HashSet<u128> = HashSet::new();
    let mut torn_tails = 0;
    // A fixed pseudo-random sequence of kill points: deterministic test, varied moments.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for cycle in 0..24u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let kill_after = 1 + x % 400;
        // Every other cycle runs with tiny segments, so kills also land on roll-overs.
        let segment_bytes = if cycle % 2 == 1 { 4096 } else { 64 << 20 };
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-appender"))
            .arg(dir.path())
            .arg(cycle.to_string())
            .arg(segment_bytes.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut acked = Vec::new();
        while (acked.len() as u64) < kill_after {
            let line = lines.next().expect("child ended early").unwrap();
            acked.push(line.strip_prefix("ack ").unwrap().parse::<u128>().unwrap());
        }
        child.kill().unwrap(); // SIGKILL
        // Acknowledgements already in the pipe count too.
        for line in lines {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("ack ") {
                acked.push(id.parse().unwrap());
            }
        }
        child.wait().unwrap();
        acked_total.extend(acked);

        let options = inbox_store::FileLogOptions {
            segment_bytes,
            fsync: true,
        };
        let (log, report) = FileLog::open_with(dir.path(), options).unwrap();
        torn_tails += usize::from(report.torn_tail.is_some());
        let all = log.read_all(1, usize::MAX).unwrap();
        let mut seen = HashSet::new();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1, "positions are dense and in order");
            assert!(
                seen.insert(e.envelope.event_id.as_uuid().as_u128()),
                "an event is stored twice"
            );
        }
        // The child appends batches of 1 + i % 3 events with consecutive ids: all or none.
        for e in &all {
            let id = e.envelope.event_id.as_uuid().as_u128();
            let (thread_part, n) = (id >> 64, id as u64);
            if thread_part >> 16 != u128::from(cycle) && (id >> 80) as u64 != cycle {
                continue;
            }
            let (i, k) = (n / 4, n % 4);
            let size = 1 + i % 3;
            for other in 0..size {
                let sibling = (id & !0xFFFF_FFFF_FFFF_FFFF) | u128::from(i * 4 + other);
                assert!(
                    seen.contains(&sibling),
                    "cycle {cycle}: batch of {id} is partial (event {k} of {size} stored, {other} missing)"
                );
            }
        }
        let missing: Vec<&u128> = acked_total.iter().filter(|id| !seen.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} acknowledged events lost",
            missing.len()
        );
        for t in 0..4u8 {
            let s = inbox_core::SiteId::new(format!("site-{t}"));
            let versions: Vec<u64> = log
                .read_site(&s, 1, usize::MAX)
                .unwrap()
                .iter()
                .map(|e| e.site_version)
                .collect();
            assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        }
        // The log keeps accepting appends after the crash.
        let s = site(200);
        let v = log.site_version(&s).unwrap();
        log.append(
            &s,
            ExpectedVersion::Exactly(v),
            &[envelope(
                &s,
                (1 << 120) | u128::from(cycle),
                started(conversation(cycle), 1),
            )],
        )
        .unwrap();
    }
    assert!(acked_total.len() >= 24);
    eprintln!(
        "{} acknowledged events over 24 kills; {torn_tails} torn tails cut",
        acked_total.len()
    );
}

/// The embedder's promise: a service running the durable `Engine` (file log, snapshots by
/// policy; on odd cycles a cache of two sites over six written in turn) is SIGKILLed
/// mid-write, eight times; after `Engine::open`, every message whose `execute` had returned
/// is in its site's state, and the engine writes on.
#[test]
fn what_execute_acknowledged_survives_a_kill_of_the_embedding_process() {
    use inbox_store::{Engine, EngineConfig, Snapshots};
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut from_snapshots = 0;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for cycle in 0..8u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let kill_after = 1 + x % 150;
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-embedder"))
            .arg(dir.path())
            .arg(cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ack = |line: String, acked: &mut Vec<(String, u64)>| {
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("ack"));
            let site = words.next().unwrap().to_owned();
            let id = words.next().unwrap().parse::<u64>().unwrap();
            acked.push((site, id));
        };
        let mut n = 0;
        while n < kill_after {
            let line = lines.next().expect("child ended early").unwrap();
            ack(line, &mut acked);
            n += 1;
        }
        child.kill().unwrap(); // SIGKILL
        for line in lines {
            ack(line.unwrap(), &mut acked);
        }
        child.wait().unwrap();

        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
        let config = EngineConfig::new(|s: &inbox_core::SiteId| {
            inbox_core::InboxConfig::new(s.clone(), [7; 16])
        });
        // Opened as the child ran: with a bounded cache on odd cycles.
        let config = if cycle % 2 == 1 {
            config.max_sites(2)
        } else {
            config
        };
        let (engine, opened) = Engine::open(
            std::sync::Arc::new(log),
            Some(snapshots),
            config,
            &mut |_| {},
        )
        .unwrap();
        assert!(
            opened.skipped_snapshots.is_empty(),
            "{:?}",
            opened.skipped_snapshots
        );
        from_snapshots += usize::from(opened.snapshot_position.is_some());
        let lost: Vec<&(String, u64)> = acked
            .iter()
            .filter(|(s, id)| {
                let site = inbox_core::SiteId::new(s.clone());
                !engine
                    .read(&site, |inbox| {
                        inbox.message(inbox_core::MessageId(*id)).is_some()
                    })
                    .unwrap()
            })
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: acknowledged and lost: {lost:?}"
        );
    }
    assert!(acked.len() >= 8);
    assert!(
        from_snapshots > 0,
        "no start-up used a snapshot taken by policy"
    );
    eprintln!(
        "{} acknowledged messages over 8 kills, none lost; {from_snapshots} start-ups from a snapshot",
        acked.len()
    );
}
