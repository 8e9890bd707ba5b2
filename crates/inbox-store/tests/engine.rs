//! The durable engine: open, execute, read; conflicts between two writers of one log; the
//! feed; snapshots taken while writers run, and start-up from them.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use inbox_core::contacts::{ContactDraft, ContactName};
use inbox_core::{
    Command, ContactId, ConversationId, EventEnvelope, Inbox, InboxConfig, ParticipantId,
    Rejection, SequentialIds, SiteId,
};
use inbox_store::{
    Engine, EngineConfig, EventLog, ExecuteError, FileLog, IngestError, MemoryLog, Snapshots,
    recover,
};
use uuid::Uuid;

fn conversation_of(engine: &Engine, s: &SiteId, v: u128) -> ConversationId {
    engine
        .read(s, |inbox| inbox.live_conversation_of(visitor(v)))
        .unwrap()
        .expect("a conversation")
}

#[test]
fn open_execute_read_and_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
        Engine::open(Arc::new(log), Some(snapshots), config(), &mut |_| {}).unwrap()
    };
    let mut ids = SequentialIds::default();
    let (engine, opened) = open();
    assert_eq!((opened.position, opened.sites), (0, 0));
    let started = engine
        .execute(&site(1), &get_or_create(1), &at(1), &mut ids)
        .unwrap();
    assert_eq!(started.events.len(), 1);
    assert_eq!(
        (started.events[0].position, started.events[0].site_version),
        (1, 1)
    );
    // Asked again: nothing new, nothing appended.
    let again = engine
        .execute(&site(1), &get_or_create(1), &at(2), &mut ids)
        .unwrap();
    assert!(again.events.is_empty());
    let c = conversation_of(&engine, &site(1), 1);
    let sent = engine
        .execute(&site(1), &send(c, "hi"), &at(3), &mut ids)
        .unwrap();
    assert_eq!(sent.events[0].position, 2);
    // A refusal is typed and appends nothing.
    let nowhere = ConversationId::from_uuid(Uuid::from_u128(0xdead));
    let refused = engine.execute(&site(1), &send(nowhere, "x"), &at(4), &mut ids);
    assert!(matches!(
        refused,
        Err(ExecuteError::Rejected(Rejection::ConversationNotFound(id))) if id == nowhere
    ));
    assert_eq!(engine.log().last_position().unwrap(), 2);
    drop(engine);

    // After a restart: the same state, and the next write appends right after.
    let (engine, opened) = open();
    assert_eq!((opened.position, opened.replayed, opened.sites), (2, 2, 1));
    assert_eq!(engine.site_version(&site(1)).unwrap(), 2);
    assert_eq!(
        engine.read(&site(1), |i| i.messages_of(c).count()).unwrap(),
        1
    );
    let more = engine
        .execute(&site(1), &send(c, "again"), &at(5), &mut ids)
        .unwrap();
    assert_eq!(
        (more.events[0].position, more.events[0].site_version),
        (3, 3)
    );
    // Closing takes a snapshot; the next start-up starts from it.
    engine.close().unwrap().expect("a snapshot");
    let (engine, opened) = open();
    assert_eq!((opened.snapshot_position, opened.replayed), (Some(3), 0));
    assert_eq!(
        engine.read(&site(1), |i| i.messages_of(c).count()).unwrap(),
        2
    );
}

#[test]
fn a_write_that_conflicts_with_another_writer_catches_up_and_decides_again() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let (a, _) = Engine::open(log.clone(), None, config(), &mut |_| {}).unwrap();
    let (b, _) = Engine::open(log.clone(), None, config().shared(true), &mut |_| {}).unwrap();
    let mut ids = SequentialIds::default();
    a.execute(&site(1), &get_or_create(1), &at(1), &mut ids)
        .unwrap();
    // B has not seen A's conversation: its get-or-create for the same visitor is a no-op once
    // it has caught up (a shared engine takes the site's new events in before a no-op or a
    // refusal)...
    let none = b
        .execute(&site(1), &get_or_create(1), &at(2), &mut ids)
        .unwrap();
    assert!(none.events.is_empty());
    // ...and a write of its own appends after A's.
    let c = conversation_of(&b, &site(1), 1);
    a.execute(&site(1), &send(c, "from a"), &at(3), &mut ids)
        .unwrap();
    let from_b = b
        .execute(&site(1), &send(c, "from b"), &at(4), &mut ids)
        .unwrap();
    assert_eq!(
        from_b.events[0].site_version, 3,
        "decided again after A's message"
    );
    assert_eq!(b.read(&site(1), |i| i.messages_of(c).count()).unwrap(), 2);
    assert_eq!(log.site_version(&site(1)).unwrap(), 3);
    // B's get-or-create (decided against its empty state) and its message each conflicted.
    assert_eq!((a.conflicts(), b.conflicts()), (0, 2));
}

#[test]
fn a_writer_that_keeps_conflicting_gives_up_after_the_bound() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let (a, _) = Engine::open(log.clone(), None, config(), &mut |_| {}).unwrap();
    let (b, _) = Engine::open(log.clone(), None, config().max_conflicts(0), &mut |_| {}).unwrap();
    let mut ids = SequentialIds::default();
    a.execute(&site(1), &get_or_create(1), &at(1), &mut ids)
        .unwrap();
    let got = b.execute(&site(1), &get_or_create(2), &at(2), &mut ids);
    assert!(matches!(got, Err(ExecuteError::Contended(1))), "{got:?}");
    assert_eq!(log.last_position().unwrap(), 1);
}

#[test]
fn the_feed_gives_what_was_written_after_a_position() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let (engine, _) = Engine::open(log, None, config(), &mut |_| {}).unwrap();
    let feed = engine.subscribe();
    assert_eq!(feed.wait_past(0, Duration::ZERO), 0, "nothing yet");
    let mut ids = SequentialIds::default();
    engine
        .execute(&site(1), &get_or_create(1), &at(1), &mut ids)
        .unwrap();
    engine
        .execute(&site(2), &get_or_create(1), &at(2), &mut ids)
        .unwrap();
    // Already past: returns at once, whatever the timeout.
    assert_eq!(feed.wait_past(0, Duration::from_secs(3600)), 2);
    let after = engine.events_after(1, 10).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].position, &after[0].envelope.site), (2, &site(2)));
    // A write on another thread wakes a waiter.
    let writer = engine.clone();
    let handle = std::thread::spawn(move || {
        let mut ids = SequentialIds::starting_at(1 << 32);
        writer
            .execute(&site(3), &get_or_create(1), &at(3), &mut ids)
            .unwrap();
    });
    assert_eq!(feed.wait_past(2, Duration::from_secs(3600)), 3);
    handle.join().unwrap();
}

/// Snapshots taken while eight writers run (by policy, and by hand), and a second engine
/// opened over the same log from the newest of them: every site's state and version is what
/// the writers left, and what a replay of the whole log gives.
#[test]
fn snapshots_taken_while_writers_run_recover_every_site_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let snapshots = || Snapshots::new(dir.path().join("snapshots")).unwrap();
    let (engine, _) = Engine::open(
        log.clone(),
        Some(snapshots()),
        config().snapshot_every(40),
        &mut |_| {},
    )
    .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..8u8)
        .map(|w| {
            let engine = engine.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut ids = SequentialIds::starting_at(u128::from(w) << 64);
                let s = site(w % 4);
                for i in 0..30i64 {
                    let v = u128::from(w) * 100 + (i % 3) as u128;
                    engine
                        .execute(&s, &get_or_create(v), &at(i), &mut ids)
                        .unwrap();
                    let c = conversation_of(&engine, &s, v);
                    engine
                        .execute(&s, &send(c, &format!("{w}/{i}")), &at(i), &mut ids)
                        .unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    // Snapshots by hand for as long as the writers run (and at least one).
    loop {
        engine.snapshot().unwrap().expect("a snapshot");
        if done.load(std::sync::atomic::Ordering::SeqCst) == 8 {
            break;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(engine.snapshot_errors(), 0);
    let config_of = |s: &SiteId| InboxConfig::new(s.clone(), [7; 16]);
    let replayed = recover(&*log, None, &config_of).unwrap();
    let (reopened, opened) =
        Engine::open(log.clone(), Some(snapshots()), config(), &mut |_| {}).unwrap();
    assert!(
        opened.skipped_snapshots.is_empty(),
        "{:?}",
        opened.skipped_snapshots
    );
    assert!(opened.snapshot_position.is_some());
    assert_eq!(engine.site_ids(), reopened.site_ids());
    for s in engine.site_ids() {
        let version = engine.site_version(&s).unwrap();
        assert_eq!(reopened.site_version(&s).unwrap(), version, "{s}");
        assert_eq!(replayed.sites[&s].version, version, "{s}");
        let live = engine.read(&s, Clone::clone).unwrap();
        assert!(
            live == replayed.sites[&s].inbox,
            "{s}: the live state is not the log's"
        );
        assert!(
            reopened.read(&s, |i| *i == live).unwrap(),
            "{s}: the state from the snapshot is not the live one"
        );
    }
}

/// What a real site recorded, as a replica receives it: a source `Inbox` runs a small
/// history (two visitors, messages, one identified as a contact, which merges its
/// conversation), and its envelopes, with their ids, are the observed events.
fn observed_history(s: &SiteId) -> (Inbox, Vec<EventEnvelope>) {
    let mut source = Inbox::new(InboxConfig::new(s.clone(), [7; 16]));
    let mut ids = SequentialIds::starting_at(1 << 40);
    let mut out = Vec::new();
    let mut run = |source: &mut Inbox, command: Command, t: i64| {
        out.extend(source.execute(&command, &at(t), &mut ids).unwrap());
    };
    run(&mut source, get_or_create(1), 1);
    run(&mut source, get_or_create(2), 2);
    let c1 = source.live_conversation_of(visitor(1)).unwrap();
    let c2 = source.live_conversation_of(visitor(2)).unwrap();
    for t in 0..4 {
        run(&mut source, send(c1, &format!("one {t}")), 10 + t);
        run(&mut source, send(c2, &format!("two {t}")), 20 + t);
    }
    let ParticipantId::Visitor(v1) = visitor(1) else {
        unreachable!()
    };
    let contact = ContactId::from_uuid(Uuid::from_u128(0xc1));
    run(
        &mut source,
        Command::CreateContact {
            contact_id: contact,
            draft: ContactDraft {
                name: ContactName {
                    first: Some("Ada".into()),
                    last: None,
                },
                ..ContactDraft::default()
            },
        },
        29,
    );
    run(
        &mut source,
        Command::IdentifyVisitor {
            visitor: v1,
            contact,
        },
        30,
    );
    let c = source
        .live_conversation_of(ParticipantId::Contact(contact))
        .unwrap();
    run(&mut source, send(c, "as a contact"), 31);
    (source, out)
}

#[test]
fn ingest_appends_what_is_new_and_drops_redeliveries_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        Engine::open(Arc::new(log), None, config(), &mut |_| {})
            .unwrap()
            .0
    };
    let s = site(1);
    let (source, observed) = observed_history(&s);
    let n = observed.len();
    let engine = open();
    // Given the first half delivered, when the whole history arrives (the first half again
    // among it), then only the second half is appended.
    let first = engine.ingest(&s, observed[..n / 2].to_vec()).unwrap();
    assert_eq!((first.events.len(), first.duplicates), (n / 2, 0));
    let all = engine.ingest(&s, observed.clone()).unwrap();
    assert_eq!((all.events.len(), all.duplicates), (n - n / 2, n / 2));
    assert_eq!(
        all.events
            .iter()
            .map(|e| e.site_version)
            .collect::<Vec<_>>(),
        ((n / 2 + 1) as u64..=n as u64).collect::<Vec<_>>()
    );
    assert!(engine.read(&s, |i| i == &source).unwrap());
    drop(engine);
    // After a restart the window is rebuilt from the log: a redelivery is still dropped.
    let engine = open();
    let again = engine.ingest(&s, observed.clone()).unwrap();
    assert_eq!((again.events.len(), again.duplicates), (0, n));
    assert_eq!(engine.log().last_position().unwrap(), n as u64);
    assert!(engine.read(&s, |i| i == &source).unwrap());
}

#[test]
fn a_replica_started_from_a_snapshot_still_drops_what_came_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
        Engine::open(Arc::new(log), Some(snapshots), config(), &mut |_| {}).unwrap()
    };
    let s = site(1);
    let (source, observed) = observed_history(&s);
    let (engine, _) = open();
    engine.ingest(&s, observed.clone()).unwrap();
    engine.close().unwrap().expect("a snapshot");
    let (engine, opened) = open();
    assert_eq!(opened.replayed, 0, "started from the snapshot");
    let again = engine.ingest(&s, observed.clone()).unwrap();
    assert_eq!((again.events.len(), again.duplicates), (0, observed.len()));
    assert_eq!(engine.log().last_position().unwrap(), observed.len() as u64);
    assert!(engine.read(&s, |i| i == &source).unwrap());
}

#[test]
fn ingest_refuses_a_batch_with_another_sites_event_and_appends_none_of_it() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let (engine, _) = Engine::open(log.clone(), None, config(), &mut |_| {}).unwrap();
    let (_, mut observed) = observed_history(&site(1));
    let (_, foreign) = observed_history(&site(2));
    observed.push(foreign[0].clone());
    let got = engine.ingest(&site(1), observed);
    assert!(
        matches!(&got, Err(IngestError::ForeignSite { found, .. }) if *found == site(2)),
        "{got:?}"
    );
    let mut old = foreign[1].clone();
    old.schema_version = 1;
    let got = engine.ingest(&site(2), vec![old]);
    assert!(
        matches!(got, Err(IngestError::SchemaVersion { found: 1, .. })),
        "{got:?}"
    );
    assert_eq!(log.last_position().unwrap(), 0);
}

#[test]
fn a_redelivery_older_than_the_window_is_appended_again_and_changes_nothing() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let (engine, _) =
        Engine::open(log.clone(), None, config().dedupe_window(4), &mut |_| {}).unwrap();
    let s = site(1);
    let (source, observed) = observed_history(&s);
    for e in &observed {
        engine.ingest(&s, vec![e.clone()]).unwrap();
    }
    // The last four are remembered, the first is not.
    let recent = engine
        .ingest(&s, observed[observed.len() - 4..].to_vec())
        .unwrap();
    assert_eq!((recent.events.len(), recent.duplicates), (0, 4));
    let old = engine.ingest(&s, vec![observed[0].clone()]).unwrap();
    assert_eq!((old.events.len(), old.duplicates), (1, 0));
    assert!(engine.read(&s, |i| i == &source).unwrap());
}

#[test]
fn two_replicas_of_one_shared_log_ingest_the_same_deliveries_once() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let (a, _) = Engine::open(log.clone(), None, config().shared(true), &mut |_| {}).unwrap();
    let (b, _) = Engine::open(log.clone(), None, config().shared(true), &mut |_| {}).unwrap();
    let s = site(1);
    let (source, observed) = observed_history(&s);
    a.ingest(&s, observed[..5].to_vec()).unwrap();
    // B has not seen A's appends: its submit conflicts, it catches up and drops A's five.
    let got = b.ingest(&s, observed.clone()).unwrap();
    assert_eq!((got.events.len(), got.duplicates), (observed.len() - 5, 5));
    assert_eq!(log.last_position().unwrap(), observed.len() as u64);
    assert!(b.read(&s, |i| i == &source).unwrap());
    assert!(a.read(&s, |i| i == &source).unwrap());
}

proptest::proptest! {
    #![proptest_config(inbox_testkit::proptest_config(24))]
    /// Deliveries in any order, with repeats, in batches of any size, over restarts: the
    /// replica holds what the source holds, and the log holds each event once.
    #[test]
    fn a_replica_converges_whatever_the_order_repeats_and_batches(
        seed in proptest::prelude::any::<u64>(),
        batch in 1usize..8,
        restart_every in 1usize..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
            Engine::open(Arc::new(log), None, config(), &mut |_| {}).unwrap().0
        };
        let s = site(1);
        let (source, observed) = observed_history(&s);
        let arrived = inbox_testkit::shuffled_with_duplicates(&observed, seed);
        let mut engine = open();
        for (i, chunk) in arrived.chunks(batch).enumerate() {
            if i % restart_every == restart_every - 1 {
                drop(engine); // the log's lock goes with it
                engine = open();
            }
            engine.ingest(&s, chunk.to_vec()).unwrap();
        }
        proptest::prop_assert_eq!(engine.log().last_position().unwrap(), observed.len() as u64);
        proptest::prop_assert!(engine.read(&s, |i| i == &source).unwrap());
    }
}

/// Two engines over one PostgreSQL database stand for two processes of a service: writers on
/// both append to the same conversation, each engine catching up on conflicts; both read
/// every message; a delivery ingested by both lands once; and a third engine with a bounded
/// cache loads the site from the database. (Skipped loudly without `INBOX_TEST_POSTGRES`, a
/// failure under `CI=true`.)
#[test]
fn two_engines_over_one_postgres_database_share_every_site() {
    use inbox_store::PostgresLog;
    let Some(url) = inbox_store::postgres::testing::fresh_database("engine_two_processes") else {
        return;
    };
    let open = |config: EngineConfig| {
        let log: Arc<dyn EventLog> = Arc::new(PostgresLog::connect(&url).unwrap());
        Engine::open(log, None, config.shared(true), &mut |_| {})
            .unwrap()
            .0
    };
    let (a, b) = (open(config()), open(config()));
    let s = site(1);
    let mut ids = SequentialIds::starting_at(1 << 100);
    a.execute(&s, &get_or_create(1), &at(1), &mut ids).unwrap();
    // B decides against its own (empty) state, conflicts or finds the conversation, and
    // either way ends on A's.
    b.execute(&s, &get_or_create(1), &at(2), &mut ids).unwrap();
    let c = conversation_of(&a, &s, 1);
    assert_eq!(conversation_of(&b, &s, 1), c);
    std::thread::scope(|scope| {
        for (n, engine) in [&a, &b, &a, &b].into_iter().enumerate() {
            let s = &s;
            scope.spawn(move || {
                let mut ids = SequentialIds::starting_at((n as u128 + 2) << 100);
                for i in 0..15 {
                    engine
                        .execute(s, &send(c, &format!("{n} {i}")), &at(10 + i), &mut ids)
                        .unwrap();
                }
            });
        }
    });
    for engine in [&a, &b] {
        assert_eq!(engine.read(&s, |i| i.messages_of(c).count()).unwrap(), 60);
    }
    // A delivery of another site, ingested by both: appended once.
    let (source, observed) = observed_history(&site(2));
    let first = a.ingest(&site(2), observed.clone()).unwrap();
    let second = b.ingest(&site(2), observed.clone()).unwrap();
    assert_eq!(first.events.len() + second.events.len(), observed.len());
    assert!(b.read(&site(2), |i| i == &source).unwrap());
    // A bounded cache of one site loads each from the database on use.
    let bounded = open(config().max_sites(1));
    assert_eq!(bounded.read(&s, |i| i.messages_of(c).count()).unwrap(), 60);
    assert!(bounded.read(&site(2), |i| i == &source).unwrap());
    assert_eq!(bounded.cache().loaded, 1);
    assert_eq!(bounded.site_count(), 2);
}

/// Each snapshot is followed by the log's checkpoint: the next open of the file log reads
/// its index up to the snapshot instead of scanning the segments.
#[test]
fn a_snapshot_checkpoints_the_file_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = SequentialIds::default();
    {
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
        let (engine, _) =
            Engine::open(Arc::new(log), Some(snapshots), config(), &mut |_| {}).unwrap();
        engine
            .execute(&site(1), &get_or_create(1), &at(1), &mut ids)
            .unwrap();
        let c = conversation_of(&engine, &site(1), 1);
        engine
            .execute(&site(1), &send(c, "hello"), &at(2), &mut ids)
            .unwrap();
        engine.close().unwrap().expect("a snapshot");
    }
    let (_, report) = FileLog::open(dir.path().join("log")).unwrap();
    assert_eq!(
        (report.checkpoint_position, report.checkpoint_ignored),
        (2, None)
    );
}
