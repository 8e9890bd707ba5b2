//! The bounded site cache: at most `max_sites` sites in memory, every site reading as if all
//! were held, across evictions, snapshots (which carry the sites not in memory over as their
//! blocks are) and restarts; and snapshots written so still recover every site exactly.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use inbox_core::{
    Command, Context, Direction, Inbox, InboxConfig, MessageDraft, ParticipantId, SendAs,
    SequentialIds, SiteId, Timestamp, VisitorId,
};
use inbox_store::{Engine, EngineConfig, EventLog, FileLog, Snapshots, recover};
use proptest::prelude::*;
use uuid::Uuid;

fn config() -> EngineConfig {
    EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16]))
}

fn site(n: u8) -> SiteId {
    SiteId::new(format!("site-{n:02}"))
}

fn visitor(n: u8) -> ParticipantId {
    ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(0x100 + u128::from(n))))
}

fn at(t: u64) -> Context {
    Context::at(Timestamp::from_micros(1_700_000_000_000_000 + t as i64))
}

#[derive(Clone, Debug)]
enum Op {
    /// Open a conversation for a visitor of a site, then write a message to it.
    Write {
        site: u8,
        visitor: u8,
    },
    /// Read a site.
    Read {
        site: u8,
    },
    Snapshot,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..12, 0u8..3).prop_map(|(site, visitor)| Op::Write { site, visitor }),
        3 => (0u8..14).prop_map(|site| Op::Read { site }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
    ]
}

/// Every site's state, by a full replay of the log, with no snapshot.
fn replayed(log: &dyn EventLog) -> BTreeMap<SiteId, Inbox> {
    let config = |s: &SiteId| InboxConfig::new(s.clone(), [7; 16]);
    recover(log, None, &config)
        .unwrap()
        .sites
        .into_iter()
        .map(|(s, state)| (s, state.inbox))
        .collect()
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(32))]
    #[test]
    fn a_bounded_cache_reads_every_site_as_if_all_were_held(
        ops in proptest::collection::vec(op(), 1..60),
        capacity in 1usize..4,
        with_snapshots in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let open = |bounded: bool| {
            let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
            let snapshots =
                with_snapshots.then(|| Snapshots::new(dir.path().join("snapshots")).unwrap());
            let config = if bounded { config().max_sites(capacity) } else { config() };
            Engine::open(Arc::new(log), snapshots, config, &mut |_| {}).unwrap()
        };
        let (mut engine, _) = open(true);
        let mut ids = SequentialIds::default();
        for (t, op) in ops.iter().enumerate() {
            match op {
                Op::Write { site: s, visitor: v } => {
                    let started = engine
                        .execute(
                            &site(*s),
                            &Command::GetOrCreateConversation { participant: visitor(*v) },
                            &at(t as u64),
                            &mut ids,
                        )
                        .unwrap();
                    let c = engine
                        .read(&site(*s), |i| i.live_conversation_of(visitor(*v)))
                        .unwrap()
                        .expect("a conversation");
                    let before = started.events.len();
                    let sent = engine
                        .execute(
                            &site(*s),
                            &Command::SendMessage {
                                conversation_id: c,
                                message: MessageDraft::text(
                                    format!("{t}"),
                                    Direction::ParticipantToBusiness,
                                ),
                                send_as: SendAs::Participant,
                            },
                            &at(t as u64),
                            &mut ids,
                        )
                        .unwrap();
                    prop_assert_eq!(sent.events.len(), 1, "{}", before);
                }
                Op::Read { site: s } => {
                    engine.read(&site(*s), |i| i.message_count()).unwrap();
                }
                Op::Snapshot => {
                    engine.snapshot().unwrap();
                }
                Op::Restart => {
                    drop(engine); // the log's lock goes with it
                    engine = open(true).0;
                }
            }
            let cache = engine.cache();
            prop_assert!(cache.loaded <= capacity, "{cache:?}");
        }
        // Every site reads as a full replay of the log says, however often it was evicted.
        let expected = replayed(&**engine.log());
        let with_events: Vec<SiteId> =
            engine.site_ids().into_iter().filter(|s| expected.contains_key(s)).collect();
        prop_assert_eq!(&with_events, &expected.keys().cloned().collect::<Vec<_>>());
        for (s, inbox) in &expected {
            prop_assert!(engine.read(s, |i| i == inbox).unwrap(), "site {}", s);
            prop_assert!(engine.cache().loaded <= capacity);
        }
        // A snapshot written by the bounded engine (sites not in memory carried over as they
        // were) recovers every site exactly, lazily and eagerly.
        let written = engine.close().unwrap();
        prop_assert_eq!(written.is_some(), with_snapshots);
        for bounded in [true, false] {
            let (reopened, opened) = open(bounded);
            if with_snapshots && !bounded {
                prop_assert_eq!(opened.replayed, 0, "started from the snapshot");
            }
            for (s, inbox) in &expected {
                prop_assert!(reopened.read(s, |i| i == inbox).unwrap(), "site {} ({})", s, bounded);
            }
        }
    }
}

/// An engine over `dir` with snapshots and a cache of `capacity` sites.
fn open_bounded(dir: &std::path::Path, capacity: usize) -> (Engine, inbox_store::Opened) {
    let (log, _) = FileLog::open(dir.join("log")).unwrap();
    let snapshots = Snapshots::new(dir.join("snapshots")).unwrap();
    Engine::open(
        Arc::new(log),
        Some(snapshots),
        config().max_sites(capacity),
        &mut |_| {},
    )
    .unwrap()
}

/// Opens a conversation for visitor `v(s)` on each of `sites` sites.
fn start_sites(engine: &Engine, sites: u8, v: impl Fn(u8) -> u8, ids: &mut SequentialIds) {
    for s in 0..sites {
        let cmd = Command::GetOrCreateConversation {
            participant: visitor(v(s)),
        };
        engine
            .execute(&site(s), &cmd, &at(u64::from(s)), ids)
            .unwrap();
    }
}

#[test]
fn a_cold_site_loads_from_the_snapshot_and_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_bounded(dir.path(), 2);
    let (engine, _) = open();
    let mut ids = SequentialIds::default();
    start_sites(&engine, 10, |_| 0, &mut ids);
    engine.snapshot().unwrap().expect("a snapshot");
    // One more event for site 0, after the snapshot.
    let c = engine
        .read(&site(0), |i| i.live_conversation_of(visitor(0)))
        .unwrap()
        .unwrap();
    engine
        .execute(
            &site(0),
            &Command::SendMessage {
                conversation_id: c,
                message: MessageDraft::text("after", Direction::ParticipantToBusiness),
                send_as: SendAs::Participant,
            },
            &at(20),
            &mut ids,
        )
        .unwrap();
    let cache = engine.cache();
    assert_eq!(
        (cache.loaded, cache.sites, cache.capacity),
        (2, 10, Some(2))
    );
    assert!(cache.evictions >= 8, "{cache:?}");
    drop(engine);
    // Start-up reads the directory and scans one event; nothing is loaded until used.
    let (engine, opened) = open();
    assert_eq!((opened.replayed, opened.sites), (1, 10));
    assert_eq!(engine.cache().loaded, 0);
    assert_eq!(engine.site_version(&site(0)).unwrap(), 2);
    assert_eq!(engine.read(&site(0), |i| i.message_count()).unwrap(), 1);
    assert_eq!(engine.site_version(&site(9)).unwrap(), 1);
    assert_eq!(engine.cache().loaded, 2);
    assert_eq!(engine.cache().loads, 2);
}

#[test]
fn a_site_whose_snapshot_blocks_are_damaged_loads_from_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_bounded(dir.path(), 1);
    let (engine, _) = open();
    let mut ids = SequentialIds::default();
    start_sites(&engine, 3, |s| s, &mut ids);
    let path = engine.close().unwrap().expect("a snapshot");
    // The last byte of the file is in the last site's last block.
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let (engine, opened) = open();
    assert_eq!(opened.snapshot_position, Some(3), "the directory is sound");
    for s in 0..3 {
        let c = engine
            .read(&site(s), |i| i.live_conversation_of(visitor(s)))
            .unwrap();
        assert!(c.is_some(), "site {s}");
    }
}

/// Eight writers over sixteen sites through a cache of three, with snapshots taken while
/// they run: every acknowledged message is in its site, as a full replay of the log has it,
/// and once they are done the cache is within its bound.
#[test]
fn writers_of_many_sites_through_a_small_cache_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
    let snapshots = Snapshots::new(dir.path().join("snapshots")).unwrap();
    let (engine, _) = Engine::open(
        Arc::new(log),
        Some(snapshots),
        config().max_sites(3),
        &mut |_| {},
    )
    .unwrap();
    let acked: Vec<Vec<(SiteId, inbox_core::MessageId)>> = std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..5 {
                // Each call writes one, or answers the newest if nothing was applied since.
                assert!(engine.snapshot().unwrap().is_some());
            }
        });
        let writers: Vec<_> = (0..8u8)
            .map(|t| {
                let engine = &engine;
                scope.spawn(move || {
                    let mut ids = SequentialIds::starting_at((u128::from(t) + 1) << 64);
                    let mut acked = Vec::new();
                    for i in 0..40u64 {
                        let s = site(((u64::from(t) * 7 + i) % 16) as u8);
                        let v = visitor(t);
                        let get = Command::GetOrCreateConversation { participant: v };
                        engine.execute(&s, &get, &at(i), &mut ids).unwrap();
                        let c = engine
                            .read(&s, |inbox| inbox.live_conversation_of(v))
                            .unwrap()
                            .unwrap();
                        let send = Command::SendMessage {
                            conversation_id: c,
                            message: MessageDraft::text(
                                format!("{t} {i}"),
                                Direction::ParticipantToBusiness,
                            ),
                            send_as: SendAs::Participant,
                        };
                        for e in engine.execute(&s, &send, &at(i), &mut ids).unwrap().events {
                            if let inbox_core::Event::MessageSent { message } = e.envelope.event {
                                acked.push((s.clone(), message.id));
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let expected = replayed(&**engine.log());
    for (s, id) in acked.iter().flatten() {
        assert!(
            engine.read(s, |i| i.message(*id).is_some()).unwrap(),
            "{s}: {id:?}"
        );
    }
    for (s, inbox) in &expected {
        assert!(engine.read(s, |i| i == inbox).unwrap(), "site {s}");
    }
    assert_eq!(acked.iter().map(Vec::len).sum::<usize>(), 320);
    assert!(engine.cache().loaded <= 3, "{:?}", engine.cache());
    assert!(engine.snapshots_taken() >= 1);
}
