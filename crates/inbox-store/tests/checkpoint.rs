//! The file log's checkpoint keeps what it covers on disk (`file_index`): a log opened from
//! checkpoints taken at any points of its history, and appended to and checkpointed again
//! after, answers every read exactly as the same log scanned from nothing, across the
//! sparse index's steps (one location in 4,096) and segment roll-overs.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::Path;

use common::*;
use inbox_store::{EventLog, ExpectedVersion, FileLog, FileLogOptions};
use proptest::prelude::*;

const SITES: u8 = 7;

fn options() -> FileLogOptions {
    FileLogOptions {
        segment_bytes: 64 * 1024,
        fsync: false,
    }
}

/// Appends events `from..from + n`, in batches of one to three, over `SITES` sites.
fn append(log: &FileLog, from: u64, n: u64) {
    let mut i = from;
    while i < from + n {
        let s = site((i.wrapping_mul(2_654_435_761) % u64::from(SITES)) as u8);
        let v = log.site_version(&s).unwrap();
        let k = (1 + i % 3).min(from + n - i);
        let batch: Vec<_> = (0..k)
            .map(|j| {
                let e = i + j;
                envelope(
                    &s,
                    u128::from(e) + 1,
                    message(e as i64 + 1, conversation(e % 5), "indexed"),
                )
            })
            .collect();
        log.append(&s, ExpectedVersion::Exactly(v), &batch).unwrap();
        i += k;
    }
}

/// A copy of the log's directory without its checkpoint (a scan from nothing opens it).
fn scanned(from: &Path, to: &Path) -> FileLog {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if matches!(name.to_str(), Some("CHECKPOINT" | "LOCK")) {
            continue;
        }
        fs::copy(entry.path(), to.join(name)).unwrap();
    }
    FileLog::open_with(to, options()).unwrap().0
}

/// Every read the two logs answer is the same.
fn same(a: &FileLog, b: &FileLog, probes: &[u64]) {
    let last = b.last_position().unwrap();
    assert_eq!(a.last_position().unwrap(), last);
    for &p in probes {
        let p = p % (last + 2);
        assert_eq!(
            a.read_all(p, 37).unwrap(),
            b.read_all(p, 37).unwrap(),
            "from {p}"
        );
    }
    for s in 0..SITES {
        let s = site(s);
        let v = b.site_version(&s).unwrap();
        assert_eq!(a.site_version(&s).unwrap(), v, "{s}");
        for from in [1, v / 3 + 1, v / 2, v, v + 1] {
            assert_eq!(
                a.read_site(&s, from, 50).unwrap(),
                b.read_site(&s, from, 50).unwrap(),
                "{s} from version {from}"
            );
        }
    }
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(6))]

    #[test]
    fn a_log_opened_from_checkpoints_reads_like_one_scanned_from_nothing(
        cuts in proptest::collection::vec(1u64..6000, 1..4),
        probes in proptest::collection::vec(any::<u64>(), 12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut written = 0u64;
        // Appends, a checkpoint after each cut, and a reopen (from it) after every other one.
        let mut log = FileLog::open_with(&path, options()).unwrap().0;
        for (i, n) in cuts.iter().enumerate() {
            append(&log, written, *n);
            written += n;
            prop_assert_eq!(log.checkpoint().unwrap(), written);
            if i % 2 == 0 {
                drop(log);
                let (reopened, report) = FileLog::open_with(&path, options()).unwrap();
                prop_assert_eq!(report.checkpoint_position, written);
                prop_assert_eq!(report.checkpoint_ignored, None);
                log = reopened;
            }
        }
        // A tail after the last checkpoint.
        append(&log, written, 333);
        let probes: Vec<u64> = probes
            .into_iter()
            .chain([1, 4096, 4097, 4098, 8192, 8193, written, written + 1])
            .collect();
        let other = tempfile::tempdir().unwrap();
        let fresh = scanned(&path, other.path());
        same(&log, &fresh, &probes);
        drop(log);
        let (reopened, report) = FileLog::open_with(&path, options()).unwrap();
        prop_assert_eq!(report.checkpoint_position, written);
        same(&reopened, &fresh, &probes);
        // Appending goes on the same way.
        append(&reopened, written + 333, 50);
        append(&fresh, written + 333, 50);
        same(&reopened, &fresh, &probes);
    }
}

#[test]
fn an_index_entry_that_points_at_another_record_is_a_corrupt_read_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let (log, _) = FileLog::open_with(&path, options()).unwrap();
        append(&log, 0, 40);
        log.checkpoint().unwrap();
    }
    // The first block's first entry (after the 8-byte magic): its offset now points at the
    // segment's second record.
    let cp = path.join("CHECKPOINT");
    let mut bytes = fs::read(&cp).unwrap();
    let first = u64::from_le_bytes(bytes[20..28].try_into().unwrap());
    let moved = (first + 1).to_le_bytes();
    bytes[20..28].copy_from_slice(&moved);
    fs::write(&cp, &bytes).unwrap();
    let (log, report) = FileLog::open_with(&path, options()).unwrap();
    assert_eq!(report.checkpoint_ignored, None, "the head is intact");
    let broken = (0..SITES)
        .map(|s| log.read_site(&site(s), 1, 100))
        .filter(|r| r.is_err())
        .count();
    assert_eq!(broken, 1, "the site whose entry was changed, and only it");
}
