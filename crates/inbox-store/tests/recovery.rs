//! Recovery: torn tails are cut and reported, corruption before the tail is refused with its
//! file and offset, damaged snapshots are skipped, and replay equals the live state.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::*;
use inbox_core::{
    Command, ContactId, Context, Direction, Inbox, InboxConfig, MessageDraft, ParticipantId,
    SendAs, SequentialIds, SiteId, Timestamp, VisitorId,
};
use inbox_store::{
    EventLog, ExpectedVersion, FileLog, OpenError, SiteState, Snapshots, recover, write_snapshot,
};
use proptest::prelude::*;
use uuid::Uuid;

fn write_events(dir: &Path, n: u64) -> Vec<u64> {
    let (log, _) = FileLog::open(dir).unwrap();
    let a = site(1);
    let mut ends = Vec::new();
    for i in 0..n {
        append_nth(&log, &a, i, "hello there");
        ends.push(fs::metadata(segment(dir)).unwrap().len());
    }
    ends
}

fn segment(dir: &Path) -> PathBuf {
    dir.join("00000000000000000001.seg")
}

#[test]
fn a_record_cut_short_at_the_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_events(dir.path(), 5);
    // Given a crash in the middle of writing the sixth record...
    let seg = segment(dir.path());
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
    drop(f);
    // ...when the log is opened, then the five acknowledged events are there and the tail is gone.
    let (log, report) = FileLog::open(dir.path()).unwrap();
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(
        (torn.file, torn.offset, torn.bytes),
        (seg.clone(), ends[4], 11)
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), ends[4]);
    assert_eq!(log.last_position().unwrap(), 5);
    log.append(
        &site(1),
        ExpectedVersion::Exactly(5),
        &[envelope(
            &site(1),
            100,
            message(6, conversation(1), "after"),
        )],
    )
    .unwrap();
    drop(log);
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!((report.events, report.torn_tail), (6, None));
    assert_eq!(
        log.read_all(6, 1).unwrap()[0].envelope.event_id.as_uuid(),
        Uuid::from_u128(100)
    );
}

#[test]
fn truncating_at_every_offset_of_the_last_record_loses_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_events(dir.path(), 3);
    let full = fs::read(segment(dir.path())).unwrap();
    for cut in (ends[1] + 1)..ends[2] {
        let copy = tempfile::tempdir().unwrap();
        fs::write(segment(copy.path()), &full[..cut as usize]).unwrap();
        let (log, report) = FileLog::open(copy.path()).unwrap();
        assert_eq!(log.last_position().unwrap(), 2, "cut at {cut}");
        assert_eq!(report.torn_tail.unwrap().offset, ends[1]);
    }
}

#[test]
fn a_flipped_bit_before_the_tail_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_events(dir.path(), 5);
    let seg = segment(dir.path());
    // Flip one bit inside the payload of the third record.
    let at = ends[1] + 8 + 3;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[at as usize] ^= 0x10;
    fs::write(&seg, &bytes).unwrap();
    match FileLog::open(dir.path()) {
        Err(OpenError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!((path, offset), (seg.clone(), ends[1]));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Nothing was cut: the file is as it was.
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_events(dir.path(), 4);
    let seg = segment(dir.path());
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(ends[3] - 2)).unwrap();
    f.write_all(&[0xff]).unwrap();
    drop(f);
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!(report.torn_tail.unwrap().offset, ends[2]);
    assert_eq!(log.last_position().unwrap(), 3);
}

#[test]
fn a_batch_cut_by_a_crash_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_events(dir.path(), 2);
    let a = site(1);
    {
        let (log, _) = FileLog::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..3)
            .map(|k| {
                envelope(
                    &a,
                    50 + k,
                    message(10 + k as i64, conversation(1), "part of a batch"),
                )
            })
            .collect();
        log.append(&a, ExpectedVersion::Exactly(2), &batch).unwrap();
    }
    let seg = segment(dir.path());
    let full = fs::read(&seg).unwrap();
    // Cut the file after the batch's first record, and also in its second record: either way
    // the batch never closed, so none of it may survive.
    let first_record_end = {
        let len = u32::from_le_bytes(
            full[ends[1] as usize..ends[1] as usize + 4]
                .try_into()
                .unwrap(),
        );
        ends[1] + 8 + u64::from(len)
    };
    for cut in [first_record_end, first_record_end + 5] {
        let copy = tempfile::tempdir().unwrap();
        fs::write(segment(copy.path()), &full[..cut as usize]).unwrap();
        let (log, report) = FileLog::open(copy.path()).unwrap();
        assert_eq!(log.last_position().unwrap(), 2, "cut at {cut}");
        let torn = report.torn_tail.expect("torn");
        assert_eq!((torn.offset, torn.bytes), (ends[1], cut - ends[1]));
        assert_eq!(log.site_version(&a).unwrap(), 2);
    }
}

#[test]
fn a_damaged_length_with_good_records_after_it_is_corruption_not_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_events(dir.path(), 5);
    let seg = segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    // The third record's length now points past the end of the file.
    bytes[ends[1] as usize + 3] = 0x7f;
    fs::write(&seg, &bytes).unwrap();
    match FileLog::open(dir.path()) {
        Err(OpenError::Corrupt { offset, .. }) => assert_eq!(offset, ends[1]),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_file_that_is_not_a_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), 1);
    let mut bytes = fs::read(segment(dir.path())).unwrap();
    bytes[0] = b'X';
    fs::write(segment(dir.path()), &bytes).unwrap();
    assert!(matches!(
        FileLog::open(dir.path()),
        Err(OpenError::Corrupt { offset: 0, .. })
    ));
}

fn config(site: &SiteId) -> InboxConfig {
    InboxConfig::new(site.clone(), [3; 16])
}

#[derive(Clone, Debug)]
enum Op {
    Visitor(u8),
    Send(u8, bool),
    Contact(u8),
    Identify(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Visitor),
        (0u8..6, any::<bool>()).prop_map(|(v, b)| Op::Send(v, b)),
        (0u8..4).prop_map(Op::Contact),
        (0u8..6, 0u8..4).prop_map(|(v, c)| Op::Identify(v, c)),
    ]
}

/// Runs ops on two sites through the engine, storing every accepted command's events.
fn run(
    ops: &[(u8, Op)],
    log: &dyn EventLog,
    snapshots: Option<(&Snapshots, usize)>,
) -> BTreeMap<SiteId, SiteState> {
    let mut live: BTreeMap<SiteId, SiteState> = BTreeMap::new();
    let mut ids = SequentialIds::starting_at(1 << 64);
    for (i, (s, op)) in ops.iter().enumerate() {
        let site = site(*s % 2);
        let state = live.entry(site.clone()).or_insert_with(|| SiteState {
            inbox: Inbox::new(config(&site)),
            version: 0,
        });
        let inbox = &mut state.inbox;
        let visitor = |v: u8| VisitorId::from_uuid(Uuid::from_u128(0x100 + u128::from(v)));
        let contact = |c: u8| ContactId::from_uuid(Uuid::from_u128(0x200 + u128::from(c)));
        let command = match op {
            Op::Visitor(v) => Command::GetOrCreateConversation {
                participant: ParticipantId::Visitor(visitor(*v)),
            },
            Op::Send(v, to_business) => {
                match inbox.live_conversation_of(ParticipantId::Visitor(visitor(*v))) {
                    Some(c) => Command::SendMessage {
                        conversation_id: c,
                        message: MessageDraft::text(
                            format!("m{i}"),
                            if *to_business {
                                Direction::ParticipantToBusiness
                            } else {
                                Direction::BusinessToParticipant
                            },
                        ),
                        send_as: SendAs::Participant,
                    },
                    None => continue,
                }
            }
            Op::Contact(c) => Command::CreateContact {
                contact_id: contact(*c),
                draft: inbox_core::contacts::ContactDraft {
                    name: inbox_core::contacts::ContactName {
                        first: Some(format!("C{c}")),
                        last: None,
                    },
                    ..Default::default()
                },
            },
            Op::Identify(v, c) => Command::IdentifyVisitor {
                visitor: visitor(*v),
                contact: contact(*c),
            },
        };
        let ctx = Context::at(Timestamp::from_micros(1_000_000 + i as i64 * 1_000));
        let Ok(events) = inbox.execute(&command, &ctx, &mut ids) else {
            continue;
        };
        if events.is_empty() {
            continue;
        }
        let version = log.site_version(&site).unwrap();
        let appended = log
            .append(&site, ExpectedVersion::Exactly(version), &events)
            .unwrap();
        state.version = appended.site_version;
        if let Some((snaps, every)) = snapshots
            && i % every == every - 1
        {
            write_snapshot(snaps, log.last_position().unwrap(), &live).unwrap();
        }
    }
    live
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(24))]

    /// Invariant 6 at the store: rebuilding from the file log, with or without snapshots,
    /// gives the live state.
    #[test]
    fn replay_from_disk_equals_the_live_state(ops in proptest::collection::vec((0u8..2, op()), 1..80), every in 3usize..20) {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::new(dir.path().join("snapshots")).unwrap();
        let live = {
            let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
            run(&ops, &log, Some((&snaps, every)))
        };
        let live: BTreeMap<SiteId, SiteState> = live.into_iter().filter(|(s, _)| !s.0.is_empty()).collect();
        let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
        let without = recover(&log, None, &config).unwrap();
        let with = recover(&log, Some(&snaps), &config).unwrap();
        prop_assert_eq!(without.position, log.last_position().unwrap());
        prop_assert_eq!(with.position, log.last_position().unwrap());
        prop_assert!(with.skipped_snapshots.is_empty());
        for (site, state) in &live {
            if log.site_version(site).unwrap() == 0 {
                continue;
            }
            prop_assert!(without.sites.get(site) == Some(state), "replay without snapshot differs for {}", site);
            prop_assert!(with.sites.get(site) == Some(state), "replay with snapshot differs for {}", site);
        }
    }
}

#[test]
fn a_damaged_snapshot_is_skipped_and_the_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = Snapshots::new(dir.path().join("snapshots")).unwrap();
    let (log, _) = FileLog::open(dir.path().join("log")).unwrap();
    let ops: Vec<(u8, Op)> = (0..30u8)
        .map(|i| {
            (
                0,
                if i % 3 == 0 {
                    Op::Visitor(i % 5)
                } else {
                    Op::Send(i % 5, i % 2 == 0)
                },
            )
        })
        .collect();
    let live = run(&ops, &log, Some((&snaps, 10)));
    // Damage the newest snapshot.
    let mut files: Vec<PathBuf> = fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let newest = files.last().unwrap().clone();
    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&newest, bytes).unwrap();
    let got = recover(&log, Some(&snaps), &config).unwrap();
    assert_eq!(got.skipped_snapshots.len(), 1);
    assert_eq!(got.skipped_snapshots[0].path, newest);
    assert!(
        got.snapshot_position.is_some(),
        "the older snapshot is used"
    );
    assert!(got.sites.get(&site(0)) == live.get(&site(0)));
}

fn copy_dir(from: &Path, to: &Path, skip: &str) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_str() == Some(skip) || name.to_str() == Some("LOCK") {
            continue;
        }
        fs::copy(entry.path(), to.join(name)).unwrap();
    }
}

fn append_n(log: &FileLog, sites: u8, from: u64, n: u64) {
    for i in from..from + n {
        let s = site((i % u64::from(sites)) as u8);
        let v = log.site_version(&s).unwrap();
        let batch: Vec<_> = (0..1 + i % 3)
            .map(|k| {
                envelope(
                    &s,
                    (u128::from(i) << 8) | u128::from(k),
                    message((i * 4 + k) as i64 + 1, conversation(i % 5), "checkpointed"),
                )
            })
            .collect();
        log.append(&s, ExpectedVersion::Exactly(v), &batch).unwrap();
    }
}

#[test]
fn a_checkpoint_spares_the_scan_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = inbox_store::FileLogOptions {
        segment_bytes: 2048,
        fsync: true,
    };
    let covered = {
        let (log, _) = FileLog::open_with(dir.path(), options.clone()).unwrap();
        append_n(&log, 3, 0, 60);
        let covered = log.checkpoint().unwrap();
        assert_eq!(covered, log.last_position().unwrap());
        append_n(&log, 3, 60, 25); // after the checkpoint, across more roll-overs
        covered
    };
    let full = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), full.path(), "CHECKPOINT");
    let (with, report) = FileLog::open_with(dir.path(), options.clone()).unwrap();
    let (without, full_report) = FileLog::open_with(full.path(), options).unwrap();
    assert_eq!(report.checkpoint_position, covered);
    assert_eq!(report.checkpoint_ignored, None);
    assert_eq!(full_report.checkpoint_position, 0);
    assert_eq!(
        with.read_all(1, usize::MAX).unwrap(),
        without.read_all(1, usize::MAX).unwrap()
    );
    assert_eq!(report.events, full_report.events);
    for s in 0..3 {
        assert_eq!(
            with.site_version(&site(s)).unwrap(),
            without.site_version(&site(s)).unwrap()
        );
        assert_eq!(
            with.read_site(&site(s), 2, 7).unwrap(),
            without.read_site(&site(s), 2, 7).unwrap()
        );
    }
    // And it goes on appending as a log opened the slow way would.
    append_n(&with, 3, 85, 5);
    append_n(&without, 3, 85, 5);
    assert_eq!(
        with.read_all(1, usize::MAX).unwrap(),
        without.read_all(1, usize::MAX).unwrap()
    );
}

#[test]
fn a_damaged_or_stale_checkpoint_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = FileLog::open(dir.path()).unwrap();
        append_n(&log, 2, 0, 20);
        log.checkpoint().unwrap();
    }
    let cp = dir.path().join("CHECKPOINT");
    let mut bytes = fs::read(&cp).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 4;
    fs::write(&cp, &bytes).unwrap();
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!(report.checkpoint_position, 0);
    assert!(report.checkpoint_ignored.unwrap().contains("checksum"));
    assert_eq!(
        log.read_all(1, usize::MAX).unwrap().len() as u64,
        log.last_position().unwrap()
    );
    drop(log);

    // A checkpoint that covers more than the segments hold (say, a segment was replaced by an
    // older copy) is stale: ignored, and the log is scanned.
    {
        let (log, _) = FileLog::open(dir.path()).unwrap();
        append_n(&log, 2, 20, 10);
        log.checkpoint().unwrap();
    }
    let seg = segment(dir.path());
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert!(report.checkpoint_ignored.is_some());
    assert!(
        report.torn_tail.is_some(),
        "the cut record is a torn tail of the full scan"
    );
    assert!(log.last_position().unwrap() > 0);
}
