//! Snapshots: a state read back from a snapshot equals the state written, whatever it holds
//! (messages out of order, odd sequences, merges that conflict or form cycles, erasures),
//! in one part or many; and a snapshot that is damaged, inconsistent (though its checksums
//! are good), of an older format or of another image version is skipped, reported, and the
//! log replayed instead.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use inbox_core::image::IMAGE_VERSION;
use inbox_core::message::{ChannelSet, Content, Direction, Sender, Visibility};
use inbox_core::{
    ConversationId, Event, Inbox, InboxConfig, Message, MessageId, ParticipantId, Sequence, SiteId,
    Timestamp, VisitorId,
};
use inbox_store::{
    EventLog, ExpectedVersion, FileLog, SiteState, Snapshots, recover, write_snapshot,
};
use proptest::prelude::*;
use serde::Serialize;
use uuid::Uuid;

fn config(site: &SiteId) -> InboxConfig {
    InboxConfig::new(site.clone(), [9; 16])
}

/// A message as observed from outside: any id, any sequence, any conversation.
fn observed(id: u64, seq: i64, conv: ConversationId, text: &str, app: bool) -> Event {
    Event::MessageSent {
        message: Message {
            id: MessageId(id),
            sequence: Sequence(seq),
            created_date: Timestamp::from_micros(if id.is_multiple_of(3) { seq } else { seq - 7 }),
            conversation_id: conv,
            sender: if app {
                Sender::Unknown
            } else {
                Sender::Visitor(VisitorId::from_uuid(Uuid::from_u128(u128::from(id % 2))))
            },
            target_channels: ChannelSet::EMPTY,
            source_channel: None,
            app_id: app.then(|| inbox_core::AppId::from_uuid(Uuid::from_u128(0xA0))),
            visibility: Visibility::BusinessAndParticipant,
            direction: Direction::ParticipantToBusiness,
            silent: id.is_multiple_of(5),
            content: Content::text(text),
            badges: Box::new([]),
        },
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Start(u8, u8),
    Msg {
        id: u16,
        natural: bool,
        seq: u16,
        conv: u8,
        app: bool,
    },
    Merge(Vec<u8>, u8, u16),
    Erase(u8, u16),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        1 => (0u8..8, 0u8..4).prop_map(|(c, v)| Ev::Start(c, v)),
        4 => (0u16..400, any::<bool>(), 0u16..400, 0u8..8, any::<bool>())
            .prop_map(|(id, natural, seq, conv, app)| Ev::Msg { id, natural, seq, conv, app }),
        1 => (proptest::collection::vec(0u8..8, 1..3), 0u8..8, 0u16..500)
            .prop_map(|(s, t, stamp)| Ev::Merge(s, t, stamp)),
        1 => (0u8..8, 0u16..500).prop_map(|(c, up_to)| Ev::Erase(c, up_to)),
    ]
}

fn event(e: &Ev) -> Event {
    let conv = |c: u8| conversation(u64::from(c));
    match e {
        Ev::Start(c, v) => started(conv(*c), u128::from(*v)),
        Ev::Msg {
            id,
            natural,
            seq,
            conv: c,
            app,
        } => {
            let id = u64::from(*id) + 1;
            let seq = if *natural {
                id as i64
            } else {
                i64::from(*seq) + 1
            };
            observed(id, seq, conv(*c), &format!("m{id}"), *app)
        }
        Ev::Merge(sources, target, stamp) => Event::ConversationsMerged {
            sources: sources.iter().map(|s| conv(*s)).collect(),
            target: conv(*target),
            stamp: Sequence(i64::from(*stamp)),
        },
        Ev::Erase(c, up_to) => Event::ParticipantErased {
            participant: ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(0))),
            conversations: vec![conv(*c)],
            up_to: Sequence(i64::from(*up_to)),
            contact: None,
        },
    }
}

fn fold(site: &SiteId, events: &[Ev]) -> Inbox {
    let mut inbox = Inbox::new(config(site));
    for e in events {
        inbox.apply_event(&event(e));
    }
    inbox
}

/// The state through an image of `parts` parts, each piece through postcard.
fn through_image(inbox: &Inbox, parts: usize) -> Result<Inbox, String> {
    inbox_testkit::round_trip_image(inbox, parts).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(64))]

    /// Whatever the state holds, its image (in any number of parts) rebuilds it exactly, and
    /// the rebuilt state goes on folding events like the original.
    #[test]
    fn an_image_rebuilds_the_state_it_was_taken_from(
        events in proptest::collection::vec(ev(), 0..120),
        more in proptest::collection::vec(ev(), 0..20),
        parts in 1usize..6,
    ) {
        let site = site(1);
        let inbox = fold(&site, &events);
        let mut back = through_image(&inbox, parts).map_err(TestCaseError::fail)?;
        prop_assert!(back == inbox, "image of {} parts differs", parts);
        for m in inbox.live_conversations() {
            prop_assert!(back.messages_of(m).eq(inbox.messages_of(m)));
        }
        prop_assert_eq!(back.message_count(), inbox.message_count());
        let mut resumed = inbox.clone();
        for e in &more {
            back.apply_event(&event(e));
            resumed.apply_event(&event(e));
        }
        prop_assert!(back == resumed, "the rebuilt state folds differently");
    }

    /// The states of the reference model's hard histories (contact merge claims and cycles,
    /// members on merged-away contacts, merges delivered again, erasures) through an image.
    #[test]
    fn an_image_rebuilds_the_states_of_hard_histories(
        steps in inbox_testkit::history(inbox_testkit::Population::Mixed, 60),
        parts in 1usize..4,
    ) {
        let run = inbox_testkit::Runner::run(inbox_testkit::Population::Mixed, &steps, &[])
            .map_err(|m| TestCaseError::fail(m.to_string()))?;
        let back = through_image(run.engine(), parts).map_err(TestCaseError::fail)?;
        prop_assert!(&back == run.engine(), "image of {} parts differs", parts);
    }

    /// The same through the snapshot files, for several sites.
    #[test]
    fn a_snapshot_reads_back_every_site(
        a in proptest::collection::vec(ev(), 0..80),
        b in proptest::collection::vec(ev(), 0..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::new(dir.path()).unwrap();
        let sites: BTreeMap<SiteId, SiteState> = [
            (site(1), SiteState { inbox: fold(&site(1), &a), version: 3 }),
            (site(2), SiteState { inbox: fold(&site(2), &b), version: 4 }),
        ]
        .into();
        write_snapshot(&snaps, 7, &sites).unwrap();
        let (got, skipped) = snaps.load_newest(7);
        prop_assert!(skipped.is_empty(), "{:?}", skipped);
        let (position, got) = got.unwrap();
        prop_assert_eq!(position, 7);
        prop_assert!(got == sites);
    }
}

#[test]
fn a_large_state_is_written_in_several_parts_and_reads_back() {
    // Enough messages for two parts (a part holds about 2^18), in many conversations, some
    // merged.
    let site = site(1);
    let mut inbox = Inbox::new(config(&site));
    let n = (1 << 18) + 1000;
    for c in 0..300u64 {
        inbox.apply_event(&started(conversation(c), u128::from(c)));
    }
    for i in 0..n {
        inbox.apply_owned(message(
            1_000 + i as i64,
            conversation((i * 7919) % 300),
            "hello",
        ));
    }
    inbox.apply_event(&Event::ConversationsMerged {
        sources: vec![conversation(3), conversation(4)],
        target: conversation(5),
        stamp: Sequence(1_000 + n as i64),
    });
    let dir = tempfile::tempdir().unwrap();
    let snaps = Snapshots::new(dir.path()).unwrap();
    let sites: BTreeMap<SiteId, SiteState> =
        [(site.clone(), SiteState { inbox, version: 1 })].into();
    write_snapshot(&snaps, 1, &sites).unwrap();
    let (got, skipped) = snaps.load_newest(1);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(got.unwrap().1 == sites);
}

// ---------------------------------------------------------------------------------------
// Snapshots that must be skipped.

/// A log of a few messages with a good snapshot at position `at`, and the live state.
fn log_with_snapshot(
    dir: &Path,
    n: u64,
    at: u64,
) -> (FileLog, Snapshots, BTreeMap<SiteId, SiteState>) {
    let (log, _) = FileLog::open(dir.join("log")).unwrap();
    let snaps = Snapshots::new(dir.join("snapshots")).unwrap();
    let s = site(1);
    let mut live: BTreeMap<SiteId, SiteState> = BTreeMap::new();
    for i in 0..n {
        let event = if i == 0 {
            started(conversation(1), 1)
        } else {
            message(i as i64, conversation(1), "hi")
        };
        let e = envelope(&s, u128::from(i) + 1, event);
        log.append(&s, ExpectedVersion::Exactly(i), std::slice::from_ref(&e))
            .unwrap();
        let state = live.entry(s.clone()).or_insert_with(|| SiteState {
            inbox: Inbox::new(config(&s)),
            version: 0,
        });
        state.inbox.apply(&e);
        state.version = i + 1;
        if i + 1 == at {
            write_snapshot(&snaps, at, &live).unwrap();
        }
    }
    (log, snaps, live)
}

fn only_snapshot(snaps_dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(snaps_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// Recovery skips the snapshot for a reason containing `why`, and replays the whole log.
fn assert_skipped_and_replayed(
    log: &FileLog,
    snaps: &Snapshots,
    live: &BTreeMap<SiteId, SiteState>,
    path: &Path,
    why: &str,
) {
    let got = recover(log, Some(snaps), &config).unwrap();
    assert_eq!(
        got.skipped_snapshots.len(),
        1,
        "{:?}",
        got.skipped_snapshots
    );
    assert_eq!(got.skipped_snapshots[0].path, path);
    assert!(
        got.skipped_snapshots[0].reason.contains(why),
        "{:?} does not say {why:?}",
        got.skipped_snapshots[0].reason
    );
    assert_eq!(got.snapshot_position, None);
    assert_eq!(got.replayed, log.last_position().unwrap());
    assert!(&got.sites == live);
}

#[test]
fn a_good_snapshot_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let got = recover(&log, Some(&snaps), &config).unwrap();
    assert!(got.skipped_snapshots.is_empty());
    assert_eq!((got.snapshot_position, got.replayed), (Some(8), 4));
    assert!(got.sites == live);
}

#[test]
fn a_snapshot_of_the_first_format_is_skipped_and_the_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let path = only_snapshot(&dir.path().join("snapshots"));
    // What the first format wrote: magic, position, length, CRC32C, one postcard payload.
    let payload = vec![1u8, 2, 3, 4];
    let mut bytes = b"INBXSNP1".to_vec();
    bytes.extend_from_slice(&8u64.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    fs::write(&path, bytes).unwrap();
    assert_skipped_and_replayed(&log, &snaps, &live, &path, "older format (INBXSNP1)");
}

/// The second format had no site versions (an engine could not append after loading it):
/// skipped, and the log replayed, which gives the versions.
#[test]
fn a_snapshot_of_the_second_format_is_skipped_and_the_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let path = only_snapshot(&dir.path().join("snapshots"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(b"INBXSNP2");
    fs::write(&path, bytes).unwrap();
    assert_skipped_and_replayed(
        &log,
        &snaps,
        &live,
        &path,
        "INBXSNP2, without site versions",
    );
}

#[test]
fn a_snapshot_of_another_image_version_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let path = only_snapshot(&dir.path().join("snapshots"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[16..18].copy_from_slice(&(IMAGE_VERSION + 1).to_le_bytes());
    fs::write(&path, bytes).unwrap();
    assert_skipped_and_replayed(&log, &snaps, &live, &path, "image version");
}

#[test]
fn a_truncated_or_flipped_snapshot_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let path = only_snapshot(&dir.path().join("snapshots"));
    let good = fs::read(&path).unwrap();
    // Every cut and a flipped bit at every byte are refused, never trusted (nor a panic).
    for cut in [0, 5, 20, good.len() / 2, good.len() - 1] {
        fs::write(&path, &good[..cut]).unwrap();
        let got = recover(&log, Some(&snaps), &config).unwrap();
        assert_eq!(got.snapshot_position, None, "cut at {cut}");
        assert!(got.sites == live);
    }
    for at in 0..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x04;
        fs::write(&path, &bytes).unwrap();
        let (loaded, skipped) = snaps.load_newest(100);
        assert!(loaded.is_none(), "flipped byte {at} was trusted");
        assert_eq!(skipped.len(), 1);
    }
    fs::write(&path, &good).unwrap();
    let got = recover(&log, Some(&snaps), &config).unwrap();
    assert_eq!(got.snapshot_position, Some(8));
    assert!(got.sites == live);
}

/// A snapshot's directory: each site, its version, and its blocks' lengths and checksums.
type Directory = Vec<(SiteId, u64, Vec<(u64, u32)>)>;

/// Writes a snapshot file by hand: the header, the directory, the blocks, every checksum
/// good (the layout of `docs/STORE-FORMAT.md`), each site at version `position`.
fn write_raw(path: &Path, position: u64, sites: &[(SiteId, Vec<Vec<u8>>)]) {
    let version = position;
    let directory: Directory = sites
        .iter()
        .map(|(s, blocks)| {
            (
                s.clone(),
                version,
                blocks
                    .iter()
                    .map(|b| (b.len() as u64, crc32c::crc32c(b)))
                    .collect(),
            )
        })
        .collect();
    let dir_bytes = postcard::to_allocvec(&directory).unwrap();
    let mut bytes = b"INBXSNP3".to_vec();
    bytes.extend_from_slice(&position.to_le_bytes());
    bytes.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(dir_bytes.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&dir_bytes).to_le_bytes());
    bytes.extend_from_slice(&dir_bytes);
    for (_, blocks) in sites {
        for b in blocks {
            bytes.extend_from_slice(b);
        }
    }
    fs::write(path, bytes).unwrap();
}

fn bytes(value: &impl Serialize) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

/// Checksums good, contents inconsistent: recovery must refuse the image and replay.
fn assert_inconsistent_skipped(blocks: Vec<Vec<u8>>, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let path = only_snapshot(&dir.path().join("snapshots"));
    write_raw(&path, 8, &[(site(1), blocks)]);
    assert_skipped_and_replayed(&log, &snaps, &live, &path, why);
}

fn inbox_of(events: &[Event]) -> Inbox {
    let mut inbox = Inbox::new(config(&site(1)));
    for e in events {
        inbox.apply_event(e);
    }
    inbox
}

#[test]
fn a_hand_written_consistent_snapshot_is_used() {
    // The control for the tests below: the same writer, a consistent image.
    let dir = tempfile::tempdir().unwrap();
    let (log, snaps, live) = log_with_snapshot(dir.path(), 12, 8);
    let path = only_snapshot(&dir.path().join("snapshots"));
    let at8: Vec<Event> = std::iter::once(started(conversation(1), 1))
        .chain((1..8).map(|i| message(i, conversation(1), "hi")))
        .collect();
    let state = inbox_of(&at8);
    let image = state.image(2);
    let mut blocks = vec![bytes(&image.head)];
    blocks.extend(image.parts.iter().map(bytes));
    write_raw(&path, 8, &[(site(1), blocks)]);
    let got = recover(&log, Some(&snaps), &config).unwrap();
    assert!(
        got.skipped_snapshots.is_empty(),
        "{:?}",
        got.skipped_snapshots
    );
    assert_eq!(got.snapshot_position, Some(8));
    assert!(got.sites == live);
}

#[test]
fn a_message_in_two_conversations_is_refused() {
    let a = inbox_of(&[
        started(conversation(1), 1),
        message(5, conversation(1), "x"),
    ]);
    let b = inbox_of(&[
        started(conversation(2), 2),
        message(5, conversation(2), "x"),
    ]);
    let blocks = vec![
        bytes(&a.image(1).head),
        bytes(&a.image(1).parts[0]),
        bytes(&b.image(1).parts[0]),
    ];
    assert_inconsistent_skipped(blocks, "message 5 is there twice");
}

#[test]
fn conversations_out_of_order_are_refused() {
    let a = inbox_of(&[
        started(conversation(1), 1),
        message(5, conversation(1), "x"),
    ]);
    let b = inbox_of(&[
        started(conversation(2), 2),
        message(6, conversation(2), "x"),
    ]);
    let blocks = vec![
        bytes(&b.image(1).head),
        bytes(&b.image(1).parts[0]),
        bytes(&a.image(1).parts[0]),
    ];
    assert_inconsistent_skipped(blocks, "out of order");
}

#[test]
fn messages_past_the_clock_are_refused() {
    let early = inbox_of(&[
        started(conversation(1), 1),
        message(5, conversation(1), "x"),
    ]);
    let late = inbox_of(&[
        started(conversation(1), 1),
        message(50, conversation(1), "x"),
    ]);
    let blocks = vec![bytes(&early.image(1).head), bytes(&late.image(1).parts[0])];
    assert_inconsistent_skipped(blocks, "past the clock");
}

#[test]
fn a_message_held_by_a_conversation_it_was_not_merged_into_is_refused() {
    // In `merged`, conversation 3 was merged into 1: 1 holds 3's message.
    let merged = inbox_of(&[
        started(conversation(1), 1),
        started(conversation(3), 3),
        message(5, conversation(1), "x"),
        message(6, conversation(3), "y"),
        Event::ConversationsMerged {
            sources: vec![conversation(3)],
            target: conversation(1),
            stamp: Sequence(7),
        },
    ]);
    // In `apart`, 3 is live.
    let apart = inbox_of(&[
        started(conversation(3), 3),
        message(7, conversation(3), "z"),
    ]);
    let two = merged.image(2);
    assert_eq!(two.parts.len(), 2, "conversation 1, then conversation 3");
    let blocks = vec![
        bytes(&two.head),
        bytes(&two.parts[0]),
        bytes(&apart.image(1).parts[0]),
    ];
    assert_inconsistent_skipped(blocks, "not merged into it");
}

#[test]
fn a_merged_conversation_holding_messages_is_refused() {
    let merged = inbox_of(&[
        started(conversation(1), 1),
        started(conversation(3), 3),
        message(5, conversation(1), "x"),
        Event::ConversationsMerged {
            sources: vec![conversation(3)],
            target: conversation(1),
            stamp: Sequence(7),
        },
    ]);
    // The wire form of a part: conversations of (id, participant, parent, messages), each
    // message relative to the one before (see docs/STORE-FORMAT.md).
    type Record = (
        ConversationId,
        Option<ParticipantId>,
        Option<ConversationId>,
        Vec<Packed>,
    );
    let part: Vec<Record> = vec![
        (conversation(1), None, None, vec![packed(5, None)]),
        (
            conversation(3),
            None,
            Some(conversation(1)),
            vec![packed(6, None)],
        ),
    ];
    let blocks = vec![bytes(&merged.image(1).head), bytes(&part)];
    assert_inconsistent_skipped(blocks, "merged conversation");
}

#[test]
fn messages_out_of_order_in_a_conversation_are_refused() {
    let head = inbox_of(&[
        started(conversation(1), 1),
        message(9, conversation(1), "x"),
    ]);
    // Ids 5 then 5 - 2 = 3: the second sorts before the first.
    let part = vec![(
        conversation(1),
        None::<ParticipantId>,
        None::<ConversationId>,
        vec![packed(5, None), packed(u64::MAX - 1, None)],
    )];
    assert_inconsistent_skipped(
        vec![bytes(&head.image(1).head), bytes(&part)],
        "out of order",
    );
}

#[test]
fn a_message_sent_to_a_missing_conversation_is_refused() {
    let head = inbox_of(&[
        started(conversation(1), 1),
        message(9, conversation(1), "x"),
    ]);
    let part = vec![(
        conversation(1),
        None::<ParticipantId>,
        None::<ConversationId>,
        vec![packed(5, Some(conversation(42)))],
    )];
    assert_inconsistent_skipped(
        vec![bytes(&head.image(1).head), bytes(&part)],
        "missing conversation",
    );
}

/// A message of the wire form, field for field.
#[derive(Serialize)]
struct Packed {
    id_delta: u64,
    sequence: Option<Sequence>,
    created_date: Option<Timestamp>,
    conversation_id: Option<ConversationId>,
    sender: Option<Sender>,
    target_channels: ChannelSet,
    source_channel: Option<inbox_core::message::Channel>,
    app_id: Option<Option<inbox_core::AppId>>,
    visibility: Visibility,
    direction: Direction,
    silent: bool,
    content: Content,
    badges: Vec<inbox_core::message::Badge>,
}

fn packed(id_delta: u64, conversation_id: Option<ConversationId>) -> Packed {
    Packed {
        id_delta,
        sequence: None,
        created_date: None,
        conversation_id,
        sender: Some(Sender::Unknown),
        target_channels: ChannelSet::EMPTY,
        source_channel: None,
        app_id: Some(None),
        visibility: Visibility::BusinessAndParticipant,
        direction: Direction::ParticipantToBusiness,
        silent: false,
        content: Content::text("raw"),
        badges: Vec::new(),
    }
}

#[test]
fn a_first_message_without_sender_or_id_sequence_is_refused() {
    let head = inbox_of(&[
        started(conversation(1), 1),
        message(9, conversation(1), "x"),
    ]);
    let mut no_sender = packed(5, None);
    no_sender.sender = None;
    let part = vec![(
        conversation(1),
        None::<ParticipantId>,
        None::<ConversationId>,
        vec![no_sender],
    )];
    assert_inconsistent_skipped(
        vec![bytes(&head.image(1).head), bytes(&part)],
        "has no sender or app",
    );
    // An id past i64::MAX has no natural sequence: the sequence must be given.
    let part = vec![(
        conversation(1),
        None::<ParticipantId>,
        None::<ConversationId>,
        vec![packed(u64::MAX, None)],
    )];
    assert_inconsistent_skipped(
        vec![bytes(&head.image(1).head), bytes(&part)],
        "has no sequence",
    );
}
