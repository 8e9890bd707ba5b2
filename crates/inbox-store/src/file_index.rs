//! The file log's index: where each event is, and each site's positions.
//!
//! What a checkpoint covers (the *base*) stays on disk, in the checkpoint file, and is read
//! on demand; only what came after it (the *tail*) is in memory, with a few numbers per
//! site. So opening a log with a checkpoint reads the checkpoint's head (each site's count
//! and the place of its block, and one location in [`SPARSE_EVERY`]) and scans the segments
//! after it: its time and memory follow the number of sites and the tail, not the events
//! before the checkpoint.
//!
//! The checkpoint file (`INBXCKP2`): the magic; each site's block of fixed 20-byte entries
//! (position `u64`, segment `u32`, byte offset `u64`, little-endian), one per event of the
//! site up to the checkpoint's position; then the head (postcard: position, covered
//! segments, the sparse locations, each site's count and block offset); then the head's
//! length (`u64`) and CRC-32C (`u32`). The head is checked when the log opens; an entry of
//! a block is checked when it is used (the record it points at must have the position and
//! the site the entry says, or the read fails as corrupt).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use inbox_core::SiteId;

/// Where a record is: its segment's index and its byte offset in it.
pub(crate) type Location = (u32, u64);

/// One location in this many positions is in the checkpoint's head (replay from a position
/// the base covers starts at the one before it and skips ahead).
pub(crate) const SPARSE_EVERY: u64 = 4096;

/// Bytes of a block entry.
const ENTRY: u64 = 20;
/// Entries read from a block at a time.
const ENTRIES_PER_READ: u64 = 4096;

pub(crate) const CHECKPOINT_FILE: &str = "CHECKPOINT";
const MAGIC: &[u8; 8] = b"INBXCKP2";
const OLD_MAGIC: &[u8; 8] = b"INBXCKP1";
const TRAILER: u64 = 12;

/// The checkpoint's head.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Head {
    /// Every position up to here is covered.
    pub position: u64,
    /// Covered segments: first position, covered length, format (1 or 2).
    pub segments: Vec<(u64, u64, u8)>,
    /// The locations of positions 1, 1 + SPARSE_EVERY, 1 + 2 * SPARSE_EVERY, ...
    sparse: Vec<Location>,
    /// Each site: its events covered, and the byte offset of its block.
    sites: Vec<(String, u64, u64)>,
}

/// A checkpoint file, open for reading the blocks.
struct Base {
    file: File,
    position: u64,
    sparse: Vec<Location>,
}

#[derive(Debug, Default)]
struct SiteEntry {
    /// The site's events the base covers, and where its block starts.
    base_count: u64,
    base_offset: u64,
    /// Its positions after the base.
    tail: Vec<u64>,
}

/// The index: the base on disk, the tail in memory.
#[derive(Default)]
pub(crate) struct Index {
    base: Option<Arc<Base>>,
    /// Locations of positions `base position + 1` on.
    tail: Vec<Location>,
    sites: HashMap<SiteId, SiteEntry>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("base_position", &self.base_position())
            .field("tail", &self.tail.len())
            .field("sites", &self.sites.len())
            .finish()
    }
}

fn corrupt(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

fn entry(bytes: &[u8]) -> Option<(u64, Location)> {
    let position = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let segment = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    let offset = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?);
    Some((position, (segment, offset)))
}

impl Index {
    /// Positions indexed.
    pub fn len(&self) -> u64 {
        self.base_position() + self.tail.len() as u64
    }

    fn base_position(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.position)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Index::default();
    }

    /// The site's events indexed.
    pub fn site_len(&self, site: &str) -> u64 {
        self.sites
            .get(site)
            .map_or(0, |e| e.base_count + e.tail.len() as u64)
    }

    /// The site's events at or before `durable`.
    pub fn site_len_upto(&self, site: &str, durable: u64) -> u64 {
        self.sites.get(site).map_or(0, |e| {
            e.base_count + e.tail.iter().take_while(|p| **p <= durable).count() as u64
        })
    }

    /// Indexes the next position: the site's next event, at `at`.
    pub fn push(&mut self, site: &str, position: u64, at: Location) {
        debug_assert_eq!(position, self.len() + 1);
        self.tail.push(at);
        match self.sites.get_mut(site) {
            Some(e) => e.tail.push(position),
            None => {
                self.sites.insert(
                    SiteId::new(site),
                    SiteEntry {
                        tail: vec![position],
                        ..SiteEntry::default()
                    },
                );
            }
        }
    }

    /// Where a sequential read that must begin at `position` starts: the exact location in
    /// the tail, or in the base the sparse location at or before it (with its position: the
    /// reader skips from there).
    pub fn start_of(&self, position: u64) -> Option<(u64, Location)> {
        if position == 0 || position > self.len() {
            return None;
        }
        let base_position = self.base_position();
        if position > base_position {
            let i = usize::try_from(position - base_position - 1).ok()?;
            return self.tail.get(i).map(|l| (position, *l));
        }
        let base = self.base.as_ref()?;
        let k = (position - 1) / SPARSE_EVERY;
        let at = base.sparse.get(usize::try_from(k).ok()?)?;
        Some((k * SPARSE_EVERY + 1, *at))
    }

    /// The site's events from version `from` on (at most `max`, none after `durable`):
    /// their positions and locations.
    pub fn site_events(
        &self,
        site: &SiteId,
        from: u64,
        max: usize,
        durable: u64,
    ) -> io::Result<Vec<(u64, Location)>> {
        let Some(e) = self.sites.get(site) else {
            return Ok(Vec::new());
        };
        let from = from.max(1);
        let max = max as u64;
        let mut out = Vec::new();
        if from <= e.base_count {
            let base = self
                .base
                .as_ref()
                .ok_or_else(|| corrupt("a site counts events in a checkpoint that is not open"))?;
            let n = (e.base_count - from + 1).min(max);
            let mut bytes = vec![0u8; usize::try_from(n * ENTRY).map_err(corrupt_len)?];
            base.file
                .read_exact_at(&mut bytes, e.base_offset + (from - 1) * ENTRY)?;
            for chunk in bytes.chunks_exact(ENTRY as usize) {
                out.push(entry(chunk).ok_or_else(|| corrupt("a short checkpoint entry"))?);
            }
        }
        let left = max - out.len() as u64;
        if left > 0 {
            let skip = usize::try_from(from.saturating_sub(e.base_count + 1)).unwrap_or(usize::MAX);
            let base_position = self.base_position();
            for p in e
                .tail
                .iter()
                .skip(skip)
                .take_while(|p| **p <= durable)
                .take(usize::try_from(left).unwrap_or(usize::MAX))
            {
                let i = usize::try_from(p - base_position - 1).map_err(corrupt_len)?;
                let at = self
                    .tail
                    .get(i)
                    .ok_or_else(|| corrupt("a site's position is not indexed"))?;
                out.push((*p, *at));
            }
        }
        Ok(out)
    }

    /// What a checkpoint up to `durable` needs, taken under the log's lock: O(sites + tail).
    pub fn capture(&self, durable: u64) -> Capture {
        let base_position = self.base_position();
        let upto = usize::try_from(durable.saturating_sub(base_position)).unwrap_or(usize::MAX);
        Capture {
            base: self.base.clone(),
            base_position,
            durable,
            tail: self.tail.iter().take(upto).copied().collect(),
            sites: self
                .sites
                .iter()
                .map(|(site, e)| {
                    let tail: Vec<u64> = e
                        .tail
                        .iter()
                        .copied()
                        .take_while(|p| *p <= durable)
                        .collect();
                    (site.clone(), e.base_count, e.base_offset, tail)
                })
                .filter(|(_, count, _, tail)| *count > 0 || !tail.is_empty())
                .collect(),
        }
    }

    /// Puts a checkpoint just written in place of the base, dropping from the tail what it
    /// covers. A checkpoint older than the base in place is dropped instead.
    pub fn install(&mut self, written: Written) {
        let old = self.base_position();
        let new = written.base.position;
        if new < old {
            return;
        }
        let moved = usize::try_from(new - old).unwrap_or(usize::MAX);
        self.tail.drain(..moved.min(self.tail.len()));
        for (site, e) in &mut self.sites {
            if let Some(&(count, offset)) = written.directory.get(site) {
                let now_covered = usize::try_from(count - e.base_count.min(count))
                    .unwrap_or(usize::MAX)
                    .min(e.tail.len());
                e.tail.drain(..now_covered);
                e.base_count = count;
                e.base_offset = offset;
            }
        }
        self.base = Some(written.base);
    }

    /// Opens the checkpoint in `dir` as the base of an empty index: `None` when there is
    /// none, an error string when it cannot be used. Returns its head's position and
    /// segments for the caller to check against the segments on disk.
    pub fn open_checkpoint(dir: &Path) -> Option<Result<(Index, Head), String>> {
        let path = dir.join(CHECKPOINT_FILE);
        let file = File::open(&path).ok()?;
        Some((|| {
            let len = file.metadata().map_err(|e| e.to_string())?.len();
            let mut magic = [0u8; 8];
            file.read_exact_at(&mut magic, 0)
                .map_err(|_| "checkpoint too short".to_owned())?;
            if &magic == OLD_MAGIC {
                return Err("an older checkpoint format (INBXCKP1): scanned instead".to_owned());
            }
            if &magic != MAGIC {
                return Err("not a checkpoint (bad magic)".to_owned());
            }
            if len < 8 + TRAILER {
                return Err("checkpoint too short".to_owned());
            }
            let mut trailer = [0u8; TRAILER as usize];
            file.read_exact_at(&mut trailer, len - TRAILER)
                .map_err(|e| e.to_string())?;
            let (head_len, crc) = trailer.split_at(8);
            let head_len = u64::from_le_bytes(head_len.try_into().map_err(|_| "bad length")?);
            let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "bad checksum field")?);
            let head_start = (len - TRAILER)
                .checked_sub(head_len)
                .filter(|s| *s >= 8)
                .ok_or("checkpoint head length does not fit the file")?;
            let mut head = vec![0u8; usize::try_from(head_len).map_err(|e| e.to_string())?];
            file.read_exact_at(&mut head, head_start)
                .map_err(|e| e.to_string())?;
            if crc32c::crc32c(&head) != crc {
                return Err("checkpoint checksum mismatch".to_owned());
            }
            let head: Head =
                postcard::from_bytes(&head).map_err(|e| format!("undecodable checkpoint: {e}"))?;
            let total: u64 = head.sites.iter().map(|(_, n, _)| *n).sum();
            if total != head.position
                || head.sparse.len() as u64 != head.position.div_ceil(SPARSE_EVERY)
            {
                return Err("checkpoint is inconsistent".into());
            }
            let last = head.segments.len();
            if head.sparse.iter().any(|(seg, _)| *seg as usize >= last) {
                return Err("checkpoint points past its segments".into());
            }
            let mut sites = HashMap::with_capacity(head.sites.len());
            for (site, count, offset) in &head.sites {
                let end = count
                    .checked_mul(ENTRY)
                    .and_then(|b| b.checked_add(*offset))
                    .ok_or("checkpoint block out of range")?;
                if *offset < 8 || end > head_start {
                    return Err("checkpoint block out of range".into());
                }
                sites.insert(
                    SiteId::new(site.as_str()),
                    SiteEntry {
                        base_count: *count,
                        base_offset: *offset,
                        tail: Vec::new(),
                    },
                );
            }
            let base = Base {
                file,
                position: head.position,
                sparse: head.sparse.clone(),
            };
            let index = Index {
                base: Some(Arc::new(base)),
                tail: Vec::new(),
                sites,
            };
            Ok((index, head))
        })())
    }
}

fn corrupt_len(_: std::num::TryFromIntError) -> io::Error {
    corrupt("a checkpoint range too large for this machine")
}

/// What [`Index::capture`] took.
pub(crate) struct Capture {
    base: Option<Arc<Base>>,
    base_position: u64,
    durable: u64,
    tail: Vec<Location>,
    sites: Vec<(SiteId, u64, u64, Vec<u64>)>,
}

/// A checkpoint written, to [`Index::install`].
pub(crate) struct Written {
    base: Arc<Base>,
    directory: HashMap<SiteId, (u64, u64)>,
}

impl Capture {
    /// The position the checkpoint covers.
    pub fn position(&self) -> u64 {
        self.durable
    }

    fn tail_location(&self, position: u64) -> io::Result<Location> {
        let i = usize::try_from(position - self.base_position - 1).map_err(corrupt_len)?;
        self.tail
            .get(i)
            .copied()
            .ok_or_else(|| corrupt("a position past the captured tail"))
    }

    /// Writes the checkpoint into `dir` (a temporary file, synced, renamed over the old
    /// one, the directory synced), copying the base's blocks from the old file. Runs
    /// without the log's lock.
    pub fn write(self, dir: &Path, segments: Vec<(u64, u64, u8)>) -> io::Result<Written> {
        let tmp = dir.join(format!(".{CHECKPOINT_FILE}.tmp"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.write_all(MAGIC)?;
        let mut offset = MAGIC.len() as u64;
        let mut directory = HashMap::with_capacity(self.sites.len());
        let mut head_sites = Vec::with_capacity(self.sites.len());
        let mut buf = Vec::new();
        for (site, base_count, base_offset, tail) in &self.sites {
            let start = offset;
            if *base_count > 0 {
                let base = self
                    .base
                    .as_ref()
                    .ok_or_else(|| corrupt("a site counts events in a checkpoint that is gone"))?;
                let mut done = 0u64;
                while done < *base_count {
                    let n = (*base_count - done).min(ENTRIES_PER_READ);
                    buf.resize(usize::try_from(n * ENTRY).map_err(corrupt_len)?, 0);
                    base.file
                        .read_exact_at(&mut buf, base_offset + done * ENTRY)?;
                    out.write_all(&buf)?;
                    done += n;
                }
            }
            for p in tail {
                let (segment, at) = self.tail_location(*p)?;
                out.write_all(&p.to_le_bytes())?;
                out.write_all(&segment.to_le_bytes())?;
                out.write_all(&at.to_le_bytes())?;
            }
            let count = base_count + tail.len() as u64;
            offset += count * ENTRY;
            directory.insert(site.clone(), (count, start));
            head_sites.push((site.0.clone(), count, start));
        }
        let mut sparse = Vec::new();
        let old_sparse: &[Location] = self.base.as_ref().map_or(&[], |b| &b.sparse);
        let mut p = 1u64;
        while p <= self.durable {
            let at = if p <= self.base_position {
                let k = usize::try_from((p - 1) / SPARSE_EVERY).map_err(corrupt_len)?;
                *old_sparse
                    .get(k)
                    .ok_or_else(|| corrupt("the old checkpoint's sparse index is short"))?
            } else {
                self.tail_location(p)?
            };
            sparse.push(at);
            p += SPARSE_EVERY;
        }
        let head = Head {
            position: self.durable,
            segments,
            sparse: sparse.clone(),
            sites: head_sites,
        };
        let head = postcard::to_allocvec(&head).map_err(io::Error::other)?;
        out.write_all(&head)?;
        out.write_all(&(head.len() as u64).to_le_bytes())?;
        out.write_all(&crc32c::crc32c(&head).to_le_bytes())?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        let path = dir.join(CHECKPOINT_FILE);
        fs::rename(&tmp, &path)?;
        File::open(dir).and_then(|d| d.sync_all())?;
        Ok(Written {
            base: Arc::new(Base {
                file,
                position: self.durable,
                sparse,
            }),
            directory,
        })
    }
}
