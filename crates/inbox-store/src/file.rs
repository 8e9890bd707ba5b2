//! The embedded file log: append-only segments, checksummed records, group commit.
//!
//! Layout of a data directory (the byte format is in `docs/STORE-FORMAT.md`):
//!
//! ```text
//! LOCK                           held (flock) while a process has the log open
//! 00000000000000000001.seg       segment whose first record is position 1
//! 00000000000000524289.seg       the next segment, and so on
//! CHECKPOINT                     where each event is, up to a position (`file_index`)
//! ```
//!
//! **Group commit.** An append encodes its records under the lock, assigns positions and
//! versions, and adds the bytes to a shared pending buffer. Then the first appender that finds
//! no flush in progress becomes the *leader*: it takes everything pending, releases the lock,
//! writes and fsyncs once, and wakes everyone whose records are now durable. Appends that
//! arrive during that fsync queue up for the next one, so 64 concurrent appenders share a
//! handful of fsyncs instead of paying one each. No append returns before its bytes are
//! durable.
//!
//! **Batches are atomic.** Every record says whether it closes its append's batch, and a batch
//! never spans two segments. On open, a batch whose closing record is missing was never
//! acknowledged and is dropped whole, so a multi-event command never half-survives a crash.
//!
//! **Roll-over order.** A new segment is created by the flush that first writes to it, and
//! only after everything written to the segment before it is synced. So whenever a segment
//! exists, every segment before it is complete, and only the last one can have a torn tail.
//!
//! **Recovery.** On open every segment is scanned (record headers only; events are decoded
//! when read). A bad record in the last segment with no valid record after it (a crash in
//! the middle of a write) is a *torn tail*: it was never acknowledged, so it is cut and
//! reported. A bad record anywhere else, or one followed by valid records (a damaged length,
//! say), is corruption: opening fails with the file and offset, and nothing is guessed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use inbox_core::{EventEnvelope, SiteId};
use thiserror::Error;

use crate::codec::{SegmentFormat, decode_header, decode_record, encode_record};
use crate::file_index::{Head, Index};
use crate::{
    AppendError, AppendTicket, Appended, EventLog, ExpectedVersion, ReadError, StoredEvent,
    check_append,
};

/// First bytes of a segment file this build writes (records carry a batch flag).
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"INBXSEG2";
/// First bytes of a segment of the first format (every record its own batch); still read.
pub(crate) const SEGMENT_MAGIC_V1: &[u8; 8] = b"INBXSEG1";
/// Record header: payload length (u32 LE) and CRC32C of the payload (u32 LE).
const RECORD_HEADER: u64 = 8;
/// Largest record payload accepted (a message is a few hundred bytes).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// Settings of a [`FileLog`].
#[derive(Clone, Debug)]
pub struct FileLogOptions {
    /// Start a new segment once the current one reaches this many bytes.
    pub segment_bytes: u64,
    /// Call fsync (turning this off is only for benchmarks of everything else).
    pub fsync: bool,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions {
            segment_bytes: 64 * 1024 * 1024,
            fsync: true,
        }
    }
}

/// A record at the end of the log that a crash cut short; it was cut off on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where the torn record started (the file now ends here).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
}

/// Counters of a [`FileLog`] since it was opened: how well group commit is batching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Appends acknowledged.
    pub appends: u64,
    /// Events in them.
    pub events: u64,
    /// Write-and-fsync rounds (each made durable every append pending at its start).
    pub flushes: u64,
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Events in the log.
    pub events: u64,
    /// Segments read.
    pub segments: usize,
    /// A torn tail that was cut, if there was one.
    pub torn_tail: Option<TornTail>,
    /// The position up to which a checkpoint spared the scan (0: none was used).
    pub checkpoint_position: u64,
    /// Why a checkpoint file present was not used, if it was not.
    pub checkpoint_ignored: Option<String>,
}

/// Why a log could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// Another process has the directory open.
    #[error("{0} is in use by another process (its LOCK file is held)")]
    Locked(PathBuf),
    /// The disk said no.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A bad record before the tail, or a segment that is not one.
    #[error(
        "corrupt log: {path} at byte {offset}: {reason}; refusing to guess (restore the file or truncate it there by hand)"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The embedded, durable event log.
#[derive(Debug)]
pub struct FileLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: FileLogOptions,
    state: Mutex<State>,
    flushed: Condvar,
    /// One checkpoint written at a time.
    checkpointing: Mutex<()>,
    _lock: File,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// `None` until the flush that first writes to it creates it.
    file: Option<Arc<File>>,
    format: SegmentFormat,
    first_position: u64,
    /// The segment's final length, once appends moved on to the next one.
    sealed_len: Option<u64>,
}

#[derive(Debug)]
struct State {
    segments: Vec<Segment>,
    /// Logical end of the last segment, pending bytes included.
    tail_len: u64,
    /// Where each event is, and each site's positions (`file_index`).
    index: Index,
    /// Records accepted but not yet written: (segment index, bytes).
    pending: Vec<(usize, Vec<u8>)>,
    /// Last position that is durable (readable and acknowledged).
    durable: u64,
    /// Where the durable bytes end: (segment index, length).
    durable_end: (usize, u64),
    /// Last position assigned.
    assigned: u64,
    flushing: bool,
    failed: Option<String>,
    stats: LogStats,
}

impl FileLog {
    /// Opens (or creates) the log in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<(FileLog, OpenReport), OpenError> {
        Self::open_with(dir, FileLogOptions::default())
    }

    /// Opens (or creates) the log in `dir`.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: FileLogOptions,
    ) -> Result<(FileLog, OpenReport), OpenError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        let mut paths: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            let first = stem.parse::<u64>().map_err(|_| OpenError::Corrupt {
                path: entry.path(),
                offset: 0,
                reason: "segment file name is not a position".into(),
            })?;
            paths.push((first, entry.path()));
        }
        paths.sort();

        let mut report = OpenReport::default();
        let mut state = State {
            segments: Vec::new(),
            tail_len: 0,
            index: Index::default(),
            pending: Vec::new(),
            durable: 0,
            durable_end: (0, 0),
            assigned: 0,
            flushing: false,
            failed: None,
            stats: LogStats::default(),
        };
        let count = paths.len();
        // A checkpoint lets the scan start where it ends (it was written from this very
        // scan's result, and everything it covers is durable).
        let mut resume: Option<(usize, u64)> = None;
        if let Some(loaded) = Index::open_checkpoint(&dir) {
            match loaded.and_then(|(index, head)| {
                check_checkpoint(&head, &paths).map(|covered| (index, head.position, covered))
            }) {
                Ok((index, position, covered)) => {
                    state.index = index;
                    state.assigned = position;
                    report.checkpoint_position = position;
                    resume = Some(covered);
                }
                Err(why) => {
                    state.index.clear();
                    state.assigned = 0;
                    report.checkpoint_ignored = Some(why);
                }
            }
        }
        for (i, (first, path)) in paths.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let start = match resume {
                Some((covered, _)) if i < covered => {
                    // Wholly covered by the checkpoint: open, do not read.
                    let len = fs::metadata(&path).map_err(io_err(&path))?.len();
                    let format = segment_format(&path)?;
                    state.push_segment(path, first, format, len)?;
                    continue;
                }
                Some((covered, len)) if i == covered => Some(len),
                _ => None,
            };
            if start.is_none() && first != state.assigned + 1 {
                return Err(OpenError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "segment starts at position {first}, but the log so far ends at {}",
                        state.assigned
                    ),
                });
            }
            let (len, format, torn) = scan_segment(&path, i, is_last, start, &mut state)?;
            if let Some(t) = torn {
                report.torn_tail = Some(t);
            }
            state.push_segment(path, first, format, len)?;
        }
        if state.segments.is_empty() {
            let (file, len) = create_segment(&dir, 1, options.fsync).map_err(io_err(&dir))?;
            state.tail_len = len;
            state.segments.push(Segment {
                path: dir.join(segment_name(1)),
                file: Some(Arc::new(file)),
                format: SegmentFormat::V2,
                first_position: 1,
                sealed_len: None,
            });
        }
        state.durable = state.assigned;
        state.durable_end = (state.segments.len() - 1, state.tail_len);
        report.events = state.assigned;
        report.segments = state.segments.len();
        Ok((
            FileLog {
                shared: Arc::new(Shared {
                    dir,
                    options,
                    state: Mutex::new(state),
                    flushed: Condvar::new(),
                    checkpointing: Mutex::new(()),
                    _lock: lock,
                }),
            },
            report,
        ))
    }

    /// Saves the index up to the last durable position (where each event is, each site's
    /// positions) beside the segments, so the next open reads only its head and what came
    /// after; what it covers is dropped from memory, and read from the file when needed.
    /// Call it when taking a snapshot, or before a planned shutdown. It copies the previous
    /// checkpoint and runs without holding the log's lock but for a copy of the tail's
    /// index. Returns the position it covers. A missing, stale or damaged checkpoint only
    /// makes the next open slower.
    pub fn checkpoint(&self) -> io::Result<u64> {
        let _one_at_a_time = self
            .shared
            .checkpointing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (capture, segments) = {
            let state = self.lock();
            let (end_seg, end_len) = state.durable_end;
            let mut segments = Vec::with_capacity(end_seg + 1);
            for (j, seg) in state.segments.iter().enumerate().take(end_seg + 1) {
                let covered = if j == end_seg {
                    end_len
                } else {
                    seg.sealed_len
                        .ok_or_else(|| io::Error::other("a covered segment is not sealed"))?
                };
                let format = match seg.format {
                    SegmentFormat::V1 => 1,
                    SegmentFormat::V2 => 2,
                };
                segments.push((seg.first_position, covered, format));
            }
            (state.index.capture(state.durable), segments)
        };
        let position = capture.position();
        let written = capture.write(&self.shared.dir, segments)?;
        self.lock().index.install(written);
        Ok(position)
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        self.lock().stats
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State changes under the lock are all-or-nothing per append, so a lock poisoned by
        // a panicking thread still guards consistent data.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes and fsyncs everything pending; called by the leader without the lock held.
    /// Creates the segments the batch rolls over into, each only after everything written
    /// before it is synced. Returns the files it created, to install in the state.
    fn flush(
        &self,
        pending: Vec<(usize, Vec<u8>)>,
        mut files: Vec<(PathBuf, Option<Arc<File>>)>,
        first_positions: Vec<u64>,
    ) -> io::Result<Vec<(usize, Arc<File>)>> {
        let fsync = self.shared.options.fsync;
        let mut created = Vec::new();
        let mut unsynced: Vec<usize> = Vec::new();
        for (seg, bytes) in &pending {
            let Some((_, slot)) = files.get_mut(*seg) else {
                return Err(io::Error::other("a pending write names no segment"));
            };
            if slot.is_none() {
                // The segments before must be complete on disk before this one exists.
                if fsync {
                    for i in unsynced.drain(..) {
                        if let Some((_, Some(f))) = files.get(i) {
                            f.sync_data()?;
                        }
                    }
                }
                let first = first_positions
                    .get(*seg)
                    .copied()
                    .ok_or_else(|| io::Error::other("segment without a first position"))?;
                let (file, _) = create_segment(&self.shared.dir, first, fsync)?;
                let file = Arc::new(file);
                created.push((*seg, Arc::clone(&file)));
                if let Some((_, slot)) = files.get_mut(*seg) {
                    *slot = Some(file);
                }
            }
            let Some((_, Some(file))) = files.get(*seg) else {
                return Err(io::Error::other("segment file missing"));
            };
            (&**file).write_all(bytes)?;
            if !unsynced.contains(seg) {
                unsynced.push(*seg);
            }
        }
        if fsync {
            for i in unsynced {
                if let Some((_, Some(f))) = files.get(i) {
                    f.sync_data()?;
                }
            }
        }
        Ok(created)
    }
}

impl State {
    /// Opens an existing segment for appending and makes it the last one, `len` bytes long.
    fn push_segment(
        &mut self,
        path: PathBuf,
        first_position: u64,
        format: SegmentFormat,
        len: u64,
    ) -> Result<(), OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if let Some(prev) = self.segments.last_mut() {
            prev.sealed_len = Some(self.tail_len);
        }
        self.segments.push(Segment {
            path,
            file: Some(Arc::new(file)),
            format,
            first_position,
            sealed_len: None,
        });
        self.tail_len = len;
        Ok(())
    }
}

/// Checks a checkpoint's head against the segments on disk. Returns the index of the last
/// covered segment and where its scan resumes.
fn check_checkpoint(head: &Head, paths: &[(u64, PathBuf)]) -> Result<(usize, u64), String> {
    let Some(last) = head.segments.len().checked_sub(1) else {
        return Err("checkpoint covers no segment".into());
    };
    if head.segments.len() > paths.len() {
        return Err("checkpoint covers segments that are gone".into());
    }
    for (j, ((first, covered, format), (on_disk, path))) in
        head.segments.iter().zip(paths).enumerate()
    {
        if first != on_disk {
            return Err(format!(
                "checkpoint names segment {first}, the directory has {on_disk}"
            ));
        }
        if !matches!(format, 1 | 2) {
            return Err("checkpoint names an unknown segment format".into());
        }
        let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
        if len < *covered || (j < last && len != *covered) {
            return Err(format!(
                "segment {} is {len} bytes, the checkpoint expects {covered}",
                path.display()
            ));
        }
    }
    let resume = head
        .segments
        .get(last)
        .map_or(0, |(_, covered, _)| *covered);
    Ok((last, resume))
}

/// The format of a segment, from its magic.
fn segment_format(path: &Path) -> Result<SegmentFormat, OpenError> {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, 0))
        .map_err(io_err(path))?;
    match &magic {
        m if m == SEGMENT_MAGIC => Ok(SegmentFormat::V2),
        m if m == SEGMENT_MAGIC_V1 => Ok(SegmentFormat::V1),
        _ => Err(OpenError::Corrupt {
            path: path.to_owned(),
            offset: 0,
            reason: "not a segment file (bad magic)".into(),
        }),
    }
}

fn segment_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

fn create_segment(dir: &Path, first_position: u64, fsync: bool) -> io::Result<(File, u64)> {
    let path = dir.join(segment_name(first_position));
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(&path)?;
    file.write_all(SEGMENT_MAGIC)?;
    if fsync {
        file.sync_all()?;
        // The new name must be durable too.
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok((file, SEGMENT_MAGIC.len() as u64))
}

/// One record of an open batch, not yet committed to the state.
struct Scanned<'a> {
    site: &'a str,
    offset: u64,
}

/// Reads one segment's records into `state`; returns its (possibly cut) length, its format,
/// and the torn tail it cut, if any.
fn scan_segment(
    path: &Path,
    index: usize,
    is_last: bool,
    start: Option<u64>,
    state: &mut State,
) -> Result<(u64, SegmentFormat, Option<TornTail>), OpenError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let file_len = bytes.len() as u64;
    let corrupt = |offset: u64, reason: String| OpenError::Corrupt {
        path: path.to_owned(),
        offset,
        reason,
    };
    let format = match bytes.get(..SEGMENT_MAGIC.len()) {
        Some(m) if m == SEGMENT_MAGIC => SegmentFormat::V2,
        Some(m) if m == SEGMENT_MAGIC_V1 => SegmentFormat::V1,
        Some(_) => return Err(corrupt(0, "not a segment file (bad magic)".into())),
        None if is_last => {
            // A crash while creating the segment: start it again.
            let mut f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(io_err(path))?;
            f.write_all(SEGMENT_MAGIC).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
            return Ok((SEGMENT_MAGIC.len() as u64, SegmentFormat::V2, None));
        }
        None => return Err(corrupt(0, "segment shorter than its header".into())),
    };
    let mut offset = start.unwrap_or(SEGMENT_MAGIC.len() as u64);
    // Records of the batch being read, committed when its last record is seen.
    let mut batch: Vec<Scanned<'_>> = Vec::new();
    // Events of the open batch per site (a batch can hold thousands of events).
    let mut batch_per_site: HashMap<&str, u64> = HashMap::new();
    let mut batch_start = offset;
    let problem: String = loop {
        if offset == file_len {
            if batch.is_empty() {
                return Ok((offset, format, None));
            }
            break "the last batch has no closing record".into();
        }
        let record = match parse_record(&bytes, offset, format) {
            Ok(r) => r,
            Err(reason) => break reason,
        };
        let expected = state.assigned + batch.len() as u64 + 1;
        if record.position != expected {
            return Err(corrupt(
                offset,
                format!(
                    "record has position {}, expected {expected}",
                    record.position
                ),
            ));
        }
        let site_version_now = state.index.site_len(record.site)
            + batch_per_site.get(record.site).copied().unwrap_or(0);
        if record.site_version != site_version_now + 1 {
            return Err(corrupt(
                offset,
                format!(
                    "record has site version {}, expected {}",
                    record.site_version,
                    site_version_now + 1
                ),
            ));
        }
        // Sites are borrowed from the segment's bytes: no allocation per record.
        *batch_per_site.entry(record.site).or_default() += 1;
        batch.push(Scanned {
            site: record.site,
            offset,
        });
        offset = record.end;
        if record.batch_last {
            for b in batch.drain(..) {
                state.assigned += 1;
                let position = state.assigned;
                state.index.push(b.site, position, (index as u32, b.offset));
            }
            batch_per_site.clear();
            batch_start = offset;
        }
    };
    // Something is wrong at `offset` (or the last batch is unfinished). It is a torn tail
    // only at the end of the last segment with no valid record after it: then nothing from
    // `batch_start` on was acknowledged.
    if is_last && !valid_record_after(&bytes, offset, format, state.assigned) {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(batch_start).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        return Ok((
            batch_start,
            format,
            Some(TornTail {
                file: path.to_owned(),
                offset: batch_start,
                bytes: file_len - batch_start,
            }),
        ));
    }
    Err(corrupt(offset, problem))
}

/// A record's header fields, as the scan needs them.
struct ParsedRecord<'a> {
    position: u64,
    site_version: u64,
    site: &'a str,
    batch_last: bool,
    end: u64,
}

/// Checks the record at `offset`: length, checksum, and that its header decodes.
fn parse_record(
    bytes: &[u8],
    offset: u64,
    format: SegmentFormat,
) -> Result<ParsedRecord<'_>, String> {
    let start = usize::try_from(offset).map_err(|_| "offset out of range".to_owned())?;
    let header = bytes
        .get(start..start + RECORD_HEADER as usize)
        .ok_or("record header cut short")?;
    let [a, b, c, d, e, f, g, h] =
        <[u8; 8]>::try_from(header).map_err(|_| "record header cut short")?;
    let len = u32::from_le_bytes([a, b, c, d]);
    let crc = u32::from_le_bytes([e, f, g, h]);
    if len == 0 || len > MAX_RECORD {
        return Err(format!("record length {len} is impossible"));
    }
    let body_start = start + RECORD_HEADER as usize;
    let payload = bytes
        .get(body_start..body_start + len as usize)
        .ok_or("record cut short")?;
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch".into());
    }
    let (info, _) =
        decode_header(format, payload).map_err(|e| format!("undecodable record: {e}"))?;
    Ok(ParsedRecord {
        position: info.position,
        site_version: info.site_version,
        site: info.site,
        batch_last: info.batch_last,
        end: offset + RECORD_HEADER + u64::from(len),
    })
}

/// Whether any valid record with a position past `assigned` starts after `offset`: if so, the
/// bad bytes at `offset` are damage in the middle of the log (a flipped length, say), not a
/// torn tail, and cutting there would lose acknowledged events.
fn valid_record_after(bytes: &[u8], offset: u64, format: SegmentFormat, assigned: u64) -> bool {
    let Ok(from) = usize::try_from(offset) else {
        return false;
    };
    (from + 1..bytes.len())
        .any(|start| parse_record(bytes, start as u64, format).is_ok_and(|r| r.position > assigned))
}

impl EventLog for FileLog {
    fn checkpoint(&self) -> io::Result<u64> {
        FileLog::checkpoint(self)
    }

    fn append(
        &self,
        site: &SiteId,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError> {
        let ticket = self.submit(site, expected, events)?;
        self.wait(ticket)
    }

    fn submit(
        &self,
        site: &SiteId,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<AppendTicket, AppendError> {
        let mut state = self.lock();
        if let Some(why) = &state.failed {
            return Err(AppendError::Failed(why.clone()));
        }
        let actual = state.index.site_len(&site.0);
        check_append(site, expected, actual, events)?;
        let first_position = state.assigned + 1;
        let mut records: Vec<Vec<u8>> = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let position = first_position + i as u64;
            let batch_last = i + 1 == events.len();
            let payload = encode_record(position, actual + 1 + i as u64, e, batch_last)
                .map_err(|source| AppendError::Encode { index: i, source })?;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .ok_or_else(|| AppendError::Encode {
                    index: i,
                    source: crate::CodecError::Malformed(format!(
                        "record of {} bytes exceeds the {MAX_RECORD}-byte limit",
                        payload.len()
                    )),
                })?;
            let mut record = Vec::with_capacity(payload.len() + RECORD_HEADER as usize);
            record.extend_from_slice(&len.to_le_bytes());
            record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            record.extend_from_slice(&payload);
            records.push(record);
        }
        // Everything is checked: assign positions and queue the bytes. A batch never spans
        // two segments; a new one is only planned here, and created by the flush.
        let batch_bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        if state.tail_len + batch_bytes > self.shared.options.segment_bytes
            && state.tail_len > SEGMENT_MAGIC.len() as u64
        {
            let sealed = state.tail_len;
            if let Some(prev) = state.segments.last_mut() {
                prev.sealed_len = Some(sealed);
            }
            state.segments.push(Segment {
                path: self.shared.dir.join(segment_name(first_position)),
                file: None,
                format: SegmentFormat::V2,
                first_position,
                sealed_len: None,
            });
            state.tail_len = SEGMENT_MAGIC.len() as u64;
        }
        for (i, record) in records.into_iter().enumerate() {
            let seg = state.segments.len() - 1;
            let offset = state.tail_len;
            state.tail_len += record.len() as u64;
            state
                .index
                .push(&site.0, first_position + i as u64, (seg as u32, offset));
            match state.pending.last_mut() {
                Some((s, bytes)) if *s == seg => bytes.extend_from_slice(&record),
                _ => state.pending.push((seg, record)),
            }
        }
        let last_position = first_position + events.len() as u64 - 1;
        state.assigned = last_position;
        let site_version = actual + events.len() as u64;
        Ok(AppendTicket {
            appended: Appended {
                first_position,
                last_position,
                site_version,
            },
            durable: false,
        })
    }

    fn wait(&self, ticket: AppendTicket) -> Result<Appended, AppendError> {
        let AppendTicket { appended, durable } = ticket;
        let last_position = appended.last_position;
        let mut state = self.lock();
        if durable {
            return Ok(appended);
        }
        // Group commit: wait until a flush covers our records, leading one if nobody is.
        loop {
            if state.durable >= last_position {
                state.stats.appends += 1;
                state.stats.events += last_position - appended.first_position + 1;
                return Ok(appended);
            }
            if let Some(why) = &state.failed {
                return Err(AppendError::Failed(why.clone()));
            }
            if state.flushing {
                state = self
                    .shared
                    .flushed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.flushing = true;
            let batch = std::mem::take(&mut state.pending);
            let target = state.assigned;
            let end = (state.segments.len() - 1, state.tail_len);
            let files: Vec<(PathBuf, Option<Arc<File>>)> = state
                .segments
                .iter()
                .map(|s| (s.path.clone(), s.file.clone()))
                .collect();
            let firsts: Vec<u64> = state.segments.iter().map(|s| s.first_position).collect();
            drop(state);
            let result = self.flush(batch, files, firsts);
            state = self.lock();
            state.flushing = false;
            match result {
                Ok(created) => {
                    for (i, file) in created {
                        if let Some(seg) = state.segments.get_mut(i) {
                            seg.file = Some(file);
                        }
                    }
                    if target > state.durable {
                        state.durable = target;
                        state.durable_end = end;
                    }
                    state.stats.flushes += 1;
                }
                Err(e) => {
                    state.failed = Some(format!(
                        "write or fsync failed, and the log refuses appends until it is reopened: {e}"
                    ))
                }
            }
            self.shared.flushed.notify_all();
        }
    }

    fn read_site(
        &self,
        site: &SiteId,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let wanted = {
            let state = self.lock();
            let places = state
                .index
                .site_events(site, from_version, max, state.durable)
                .map_err(|source| ReadError::Io {
                    path: self.shared.dir.join(crate::file_index::CHECKPOINT_FILE),
                    source,
                })?;
            let wanted: Vec<(u64, PathBuf, Arc<File>, SegmentFormat, u64)> = places
                .into_iter()
                .filter_map(|(p, (seg, off))| {
                    let s = state.segments.get(seg as usize)?;
                    Some((p, s.path.clone(), s.file.clone()?, s.format, off))
                })
                .collect();
            wanted
        };
        wanted
            .into_iter()
            .map(|(p, path, file, format, off)| {
                let stored = read_record_at(&path, &file, format, off)?;
                if stored.position != p || stored.envelope.site != *site {
                    return Err(ReadError::Corrupt {
                        path,
                        offset: off,
                        reason: format!(
                            "the index says position {p} of site {site} is here; the record is \
                             position {} of site {}",
                            stored.position, stored.envelope.site
                        ),
                    });
                }
                Ok(stored)
            })
            .collect()
    }

    fn replay(
        &self,
        from_position: u64,
        f: &mut dyn FnMut(StoredEvent) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        let from_position = from_position.max(1);
        let (durable, start, segments) = {
            let state = self.lock();
            if from_position > state.durable {
                return Ok(());
            }
            let Some((start_position, start)) = state.index.start_of(from_position) else {
                return Ok(());
            };
            let segments: Vec<(PathBuf, SegmentFormat)> = state
                .segments
                .iter()
                .map(|s| (s.path.clone(), s.format))
                .collect();
            (state.durable, (start_position, start), segments)
        };
        let (mut position, start) = start;
        // Read sequentially through big buffers, not record by record (from the sparse
        // index's position at or before `from_position`: records before it are skipped).
        let mut payload = Vec::new();
        for (i, (path, format)) in segments.iter().enumerate().skip(start.0 as usize) {
            let file = File::open(path).map_err(|source| ReadError::Io {
                path: path.clone(),
                source,
            })?;
            let mut offset = if i == start.0 as usize {
                start.1
            } else {
                SEGMENT_MAGIC.len() as u64
            };
            let mut reader = BufReader::with_capacity(1 << 20, file);
            io::Seek::seek(&mut reader, io::SeekFrom::Start(offset)).map_err(|source| {
                ReadError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
            while position <= durable {
                let mut header = [0u8; 8];
                match reader.read_exact(&mut header) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(source) => {
                        return Err(ReadError::Io {
                            path: path.clone(),
                            source,
                        });
                    }
                }
                let [a, b, c, d, e, g, h, k] = header;
                let len = u32::from_le_bytes([a, b, c, d]);
                let crc = u32::from_le_bytes([e, g, h, k]);
                if len == 0 || len > MAX_RECORD {
                    // Checked on open; a file changed under a running log is not trusted.
                    return Err(ReadError::Corrupt {
                        path: path.clone(),
                        offset,
                        reason: format!("record length {len} is impossible"),
                    });
                }
                payload.resize(len as usize, 0);
                reader
                    .read_exact(&mut payload)
                    .map_err(|source| ReadError::Io {
                        path: path.clone(),
                        source,
                    })?;
                let at = offset;
                let corrupt = |reason: String| ReadError::Corrupt {
                    path: path.clone(),
                    offset: at,
                    reason,
                };
                if crc32c::crc32c(&payload) != crc {
                    return Err(corrupt("checksum mismatch".into()));
                }
                offset += RECORD_HEADER + u64::from(len);
                let this = position;
                position += 1;
                if this < from_position {
                    continue;
                }
                let stored =
                    decode_record(*format, &payload).map_err(|e| corrupt(e.to_string()))?;
                if stored.position != this {
                    return Err(corrupt(format!(
                        "the record is position {}, the index says {this}",
                        stored.position
                    )));
                }
                if f(stored).is_break() {
                    return Ok(());
                }
            }
            if position > durable {
                break;
            }
        }
        Ok(())
    }

    fn site_version(&self, site: &SiteId) -> Result<u64, ReadError> {
        let state = self.lock();
        Ok(state.index.site_len_upto(&site.0, state.durable))
    }

    fn last_position(&self) -> Result<u64, ReadError> {
        Ok(self.lock().durable)
    }
}

fn read_record_at(
    path: &Path,
    file: &File,
    format: SegmentFormat,
    offset: u64,
) -> Result<StoredEvent, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut header = [0u8; 8];
    file.read_exact_at(&mut header, offset).map_err(io)?;
    let [a, b, c, d, e, f, g, h] = header;
    let len = u32::from_le_bytes([a, b, c, d]);
    let crc = u32::from_le_bytes([e, f, g, h]);
    let corrupt = |reason: String| ReadError::Corrupt {
        path: path.to_owned(),
        offset,
        reason,
    };
    if len == 0 || len > MAX_RECORD {
        return Err(corrupt(format!("record length {len} is impossible")));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + RECORD_HEADER)
        .map_err(|source| ReadError::Io {
            path: path.to_owned(),
            source,
        })?;
    if crc32c::crc32c(&payload) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    decode_record(format, &payload).map_err(|e| corrupt(e.to_string()))
}
