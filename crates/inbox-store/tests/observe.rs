//! What a consumer of the engine's observations (an outbox) relies on: every event is
//! observed once, in its site's order, with the state right after it; `applied_through`
//! says up to where everything was; other writers' events come in through `take_in`; the
//! hook before a snapshot runs, and its failure writes no snapshot; `execute_with` answers
//! from the state its write made.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::*;
use inbox_core::{ConversationId, Inbox, InboxConfig, SequentialIds, SiteId};
use inbox_store::{CloseError, Engine, EngineConfig, EventLog, FileLog, MemoryLog, Snapshots};
use uuid::Uuid;

/// What the observer saw: position -> (site, messages the site held right after it).
type Seen = Arc<Mutex<BTreeMap<u64, (SiteId, usize)>>>;

fn observed_config(seen: &Seen) -> EngineConfig {
    let seen = seen.clone();
    EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16])).observe(
        move |position, envelope, inbox: &Inbox| {
            let messages = inbox.message_count();
            let before = seen
                .lock()
                .unwrap()
                .insert(position, (envelope.site.clone(), messages));
            assert!(before.is_none(), "position {position} observed twice");
        },
    )
}

/// Writes a conversation and `messages` messages on `s` (so `1 + messages` events).
fn write(engine: &Engine, s: &SiteId, messages: usize, ids: &mut SequentialIds) {
    let got = engine.execute(s, &get_or_create(1), &at(0), ids).unwrap();
    let c = engine
        .read(s, |i| i.live_conversation_of(visitor(1)))
        .unwrap()
        .expect("a conversation");
    assert!(got.events.len() <= 1);
    for m in 0..messages {
        engine
            .execute(s, &send(c, &format!("m{m}")), &at(m as i64 + 1), ids)
            .unwrap();
    }
}

#[test]
fn every_event_is_observed_once_in_order_with_the_state_after_it() {
    let seen: Seen = Arc::default();
    let (engine, _) = Engine::open(
        Arc::new(MemoryLog::default()),
        None,
        observed_config(&seen),
        &mut |_| {},
    )
    .unwrap();
    std::thread::scope(|scope| {
        for n in 0..4u8 {
            let engine = &engine;
            scope.spawn(move || {
                let mut ids = SequentialIds::starting_at(u128::from(n) << 64);
                write(engine, &site(n), 10, &mut ids);
            });
        }
    });
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=44).collect::<Vec<_>>()
    );
    assert_eq!(engine.applied_through(), 44);
    // Per site, in the site's order: the state after its k-th event holds k - 1 messages.
    for n in 0..4u8 {
        let counts: Vec<usize> = seen
            .values()
            .filter(|(s, _)| *s == site(n))
            .map(|(_, m)| *m)
            .collect();
        assert_eq!(counts, (0..=10).collect::<Vec<_>>(), "site {n}");
    }
}

#[test]
fn a_restart_observes_only_what_the_snapshot_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let open = |seen: &Seen| {
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
        Engine::open(
            Arc::new(log),
            Some(snapshots),
            observed_config(seen),
            &mut |_| {},
        )
        .unwrap()
    };
    let first: Seen = Arc::default();
    let (engine, _) = open(&first);
    let mut ids = SequentialIds::default();
    write(&engine, &site(1), 5, &mut ids);
    engine.snapshot().unwrap().expect("a snapshot");
    write(&engine, &site(2), 3, &mut ids);
    drop(engine); // no snapshot at close: the tail after the snapshot is replayed
    let second: Seen = Arc::default();
    let (engine, opened) = open(&second);
    assert_eq!(opened.snapshot_position, Some(6));
    assert_eq!(
        second.lock().unwrap().keys().copied().collect::<Vec<_>>(),
        (7..=10).collect::<Vec<_>>(),
        "the tail, once"
    );
    assert_eq!(engine.applied_through(), 10);
    // The state after each replayed event, as it was the first time.
    for p in 7..=10 {
        assert_eq!(second.lock().unwrap()[&p], first.lock().unwrap()[&p]);
    }
}

#[test]
fn take_in_observes_another_writers_events_in_log_order() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
    let seen: Seen = Arc::default();
    let config = || EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16]));
    let (writer, _) = Engine::open(log.clone(), None, config().shared(true), &mut |_| {}).unwrap();
    let (follower, _) = Engine::open(
        log.clone(),
        None,
        observed_config(&seen).shared(true),
        &mut |_| {},
    )
    .unwrap();
    let mut ids = SequentialIds::default();
    write(&writer, &site(1), 3, &mut ids);
    write(&writer, &site(2), 2, &mut ids);
    assert_eq!(follower.applied_through(), 0, "nothing taken in yet");
    assert_eq!(follower.take_in().unwrap(), 7);
    assert_eq!(follower.applied_through(), 7);
    assert_eq!(
        seen.lock().unwrap().keys().copied().collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(follower.take_in().unwrap(), 0, "nothing new");
    // The follower's own write lands after the writer's, and its watermark follows it.
    write(&follower, &site(1), 1, &mut ids);
    assert_eq!(follower.applied_through(), 8);
    assert_eq!(seen.lock().unwrap()[&8], (site(1), 4));
    // A write of the writer's to a site the follower holds, caught up by the follower's own
    // next write of that site, is observed once and moves the watermark past it.
    write(&writer, &site(2), 1, &mut ids);
    write(&follower, &site(2), 1, &mut ids);
    assert_eq!(follower.applied_through(), 10);
    assert_eq!(
        seen.lock().unwrap().keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(follower.take_in().unwrap(), 0);
}

#[test]
fn the_hook_runs_before_each_snapshot_and_its_failure_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let called = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(Mutex::new(false));
    let config = {
        let (called, fail) = (called.clone(), fail.clone());
        EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16])).before_snapshot(
            move |position| {
                called.lock().unwrap().push(position);
                if *fail.lock().unwrap() {
                    return Err(std::io::Error::other("disk full"));
                }
                Ok(())
            },
        )
    };
    let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
    let (engine, _) = Engine::open(
        Arc::new(MemoryLog::default()),
        Some(snapshots.clone()),
        config,
        &mut |_| {},
    )
    .unwrap();
    let mut ids = SequentialIds::default();
    write(&engine, &site(1), 2, &mut ids);
    engine.snapshot().unwrap().expect("a snapshot");
    *fail.lock().unwrap() = true;
    write(&engine, &site(1), 2, &mut ids);
    let got = engine.snapshot();
    assert!(
        matches!(got, Err(CloseError::BeforeSnapshot { position: 5, .. })),
        "{got:?}"
    );
    assert_eq!(*called.lock().unwrap(), vec![3, 5]);
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![format!("snapshot-{:020}.snap", 3)],
        "the failed one was not written"
    );
}

#[test]
fn execute_with_answers_from_the_state_its_write_made() {
    let (engine, _) = Engine::open(
        Arc::new(MemoryLog::default()),
        None,
        EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16])),
        &mut |_| {},
    )
    .unwrap();
    let mut ids = SequentialIds::default();
    let s = site(1);
    let (executed, (conversation, positions)) = engine
        .execute_with(&s, &get_or_create(1), &at(0), &mut ids, |inbox, events| {
            (
                inbox.live_conversation_of(visitor(1)),
                events.iter().map(|e| e.position).collect::<Vec<_>>(),
            )
        })
        .unwrap();
    assert_eq!(positions, vec![1]);
    assert_eq!(executed.events.len(), 1);
    let c = conversation.expect("the conversation the write made");
    // A no-op answers from the state as it is, with no events.
    let (executed, (again, none)) = engine
        .execute_with(&s, &get_or_create(1), &at(1), &mut ids, |inbox, events| {
            (inbox.live_conversation_of(visitor(1)), events.len())
        })
        .unwrap();
    assert_eq!((executed.events.len(), again, none), (0, Some(c), 0));
    // A refusal calls nothing.
    let refused = engine.execute_with(
        &s,
        &send(ConversationId::from_uuid(Uuid::from_u128(9)), "nowhere"),
        &at(2),
        &mut ids,
        |_, _| panic!("not called for a refusal"),
    );
    assert!(refused.is_err());
}

#[test]
fn a_snapshot_with_nothing_new_since_the_last_one_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let open = || {
        let hooked = hooked.clone();
        let config = EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16]))
            .before_snapshot(move |p| {
                hooked.lock().unwrap().push(p);
                Ok(())
            });
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
        Engine::open(Arc::new(log), Some(snapshots), config, &mut |_| {}).unwrap()
    };
    let (engine, _) = open();
    let mut ids = SequentialIds::default();
    write(&engine, &site(1), 2, &mut ids);
    let first = engine.snapshot().unwrap().expect("a snapshot");
    assert_eq!(
        engine.snapshot().unwrap(),
        Some(first.clone()),
        "the same one"
    );
    assert_eq!(engine.snapshots_taken(), 1);
    drop(engine);
    // Reopened from it and closed with no write: nothing written.
    let (engine, opened) = open();
    assert_eq!(opened.snapshot_position, Some(3));
    assert_eq!(engine.close().unwrap(), Some(first));
    assert_eq!(*hooked.lock().unwrap(), vec![3]);
    // A write after it: a new one.
    let (engine, _) = open();
    write(&engine, &site(1), 1, &mut ids);
    let second = engine.close().unwrap().expect("a snapshot");
    assert!(
        second.ends_with(format!("snapshot-{:020}.snap", 4)),
        "{second:?}"
    );
    assert_eq!(*hooked.lock().unwrap(), vec![3, 4]);
}
