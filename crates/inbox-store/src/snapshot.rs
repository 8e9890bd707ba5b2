//! Snapshots: every site's state at a log position, so start-up replays only the tail.
//!
//! File `snapshot-<position, 20 digits>.snap` (the format is in `docs/STORE-FORMAT.md`): a
//! header, a directory, then blocks. Each site's state is written as an
//! [`image`](inbox_core::image): a head block and part blocks of about [`PART_MESSAGES`]
//! messages each, every block with its own length and CRC32C, so that loading checks and
//! decodes the blocks on every core and only then puts each site together (checked again:
//! an inconsistent image is refused). A snapshot is written to a temporary file, fsynced,
//! and renamed into place, so a crash leaves either the old set or the new one. A damaged,
//! inconsistent or older-format snapshot is skipped and reported, never trusted: the log is
//! the source of truth and a snapshot only saves time.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use inbox_core::image::{DecodedHead, DecodedPart, IMAGE_VERSION};
use inbox_core::{Inbox, SiteId};
use thiserror::Error;

use crate::SiteState;

const MAGIC: &[u8; 8] = b"INBXSNP3";
/// The first format: one postcard payload of every site's state.
const MAGIC_V1: &[u8; 8] = b"INBXSNP1";
/// The second: as this one, but without each site's version.
const MAGIC_V2: &[u8; 8] = b"INBXSNP2";
/// Magic, position, image version, directory length, directory CRC.
const HEADER: usize = 8 + 8 + 2 + 4 + 4;
/// How many snapshots are kept: the newest, and one before it in case it is damaged.
const KEEP: usize = 2;
/// About how many messages a part block holds: small enough that the blocks of a large site
/// keep every core busy, large enough that merging their share of the message index is a few
/// linear passes.
const PART_MESSAGES: usize = 1 << 18;
/// Most threads a load decodes on.
const MAX_THREADS: usize = 8;

/// A block's length and CRC32C.
type BlockInfo = (u64, u32);
/// The directory: each site with its version (how many of its events the state holds) and
/// its blocks (the head first, then the parts).
type Directory = Vec<(SiteId, u64, Vec<BlockInfo>)>;

/// A directory of snapshots.
#[derive(Clone, Debug)]
pub struct Snapshots {
    dir: PathBuf,
}

/// A snapshot that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSnapshot {
    /// Its file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Why a snapshot could not be written.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The disk said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The state could not be encoded.
    #[error("encoding the snapshot: {0}")]
    Encode(String),
}

fn name(position: u64) -> String {
    format!("snapshot-{position:020}.snap")
}

impl Snapshots {
    /// Snapshots kept in `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(|source| SnapshotError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Snapshots { dir })
    }

    /// Writes every site's state and version as the snapshot at `position`, durably, and
    /// prunes old ones.
    pub fn write(
        &self,
        position: u64,
        sites: &BTreeMap<SiteId, SiteState>,
    ) -> Result<PathBuf, SnapshotError> {
        let encode = |e: postcard::Error| SnapshotError::Encode(e.to_string());
        let mut directory: Directory = Vec::with_capacity(sites.len());
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for (site, state) in sites {
            let inbox = &state.inbox;
            let image = inbox.image(inbox.message_count().div_ceil(PART_MESSAGES));
            let mut infos = Vec::with_capacity(1 + image.parts.len());
            let head = postcard::to_allocvec(&image.head).map_err(encode)?;
            infos.push((head.len() as u64, crc32c::crc32c(&head)));
            blocks.push(head);
            for part in &image.parts {
                let bytes = postcard::to_allocvec(part).map_err(encode)?;
                infos.push((bytes.len() as u64, crc32c::crc32c(&bytes)));
                blocks.push(bytes);
            }
            directory.push((site.clone(), state.version, infos));
        }
        let dir_bytes = postcard::to_allocvec(&directory).map_err(encode)?;
        let dir_len = u32::try_from(dir_bytes.len())
            .map_err(|_| SnapshotError::Encode("the directory is over 4 GiB".into()))?;
        let final_path = self.dir.join(name(position));
        let tmp_path = self.dir.join(format!(".{}.tmp", name(position)));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SnapshotError::Io { path, source }
        };
        {
            let f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp_path)
                .map_err(io(&tmp_path))?;
            let mut w = io::BufWriter::with_capacity(1 << 20, f);
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&position.to_le_bytes());
            header.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
            header.extend_from_slice(&dir_len.to_le_bytes());
            header.extend_from_slice(&crc32c::crc32c(&dir_bytes).to_le_bytes());
            w.write_all(&header).map_err(io(&tmp_path))?;
            w.write_all(&dir_bytes).map_err(io(&tmp_path))?;
            for b in &blocks {
                w.write_all(b).map_err(io(&tmp_path))?;
            }
            let f = w.into_inner().map_err(|e| io(&tmp_path)(e.into_error()))?;
            f.sync_all().map_err(io(&tmp_path))?;
        }
        fs::rename(&tmp_path, &final_path).map_err(io(&final_path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        let mut all = self.list();
        all.reverse();
        for (_, old) in all.into_iter().skip(KEEP) {
            // Best effort: an old snapshot left behind costs disk, not correctness.
            let _ = fs::remove_file(old);
        }
        Ok(final_path)
    }

    /// Snapshot files, oldest first.
    fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let pos = n
                    .to_str()?
                    .strip_prefix("snapshot-")?
                    .strip_suffix(".snap")?
                    .parse()
                    .ok()?;
                Some((pos, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// The newest snapshot that reads back whole and consistent and is at or below
    /// `max_position`, and the ones skipped on the way (damaged, inconsistent, of an older
    /// format, or ahead of the log).
    #[allow(clippy::type_complexity)]
    pub fn load_newest(
        &self,
        max_position: u64,
    ) -> (
        Option<(u64, BTreeMap<SiteId, SiteState>)>,
        Vec<SkippedSnapshot>,
    ) {
        let mut skipped = Vec::new();
        for (position, path) in self.list().into_iter().rev() {
            let skip = |reason: String| SkippedSnapshot {
                path: path.clone(),
                reason,
            };
            if position > max_position {
                skipped.push(skip(format!(
                    "it is at position {position}, past the log's end at {max_position}"
                )));
                continue;
            }
            match read(&path, position) {
                Ok(state) => return (Some((position, state)), skipped),
                Err(reason) => skipped.push(skip(reason)),
            }
        }
        (None, skipped)
    }
}

fn le<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], String> {
    bytes
        .get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "bad header".to_owned())
}

/// A decoded block.
enum Decoded {
    Head(Box<DecodedHead>),
    Part(DecodedPart),
}

/// A block to read: its site (number in the directory), where it is, its length and CRC, and
/// whether it is the site's head.
struct Job {
    site: usize,
    offset: u64,
    len: usize,
    crc: u32,
    head: bool,
}

fn read(path: &Path, position: u64) -> Result<BTreeMap<SiteId, SiteState>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| "shorter than its header".to_owned())?;
    match header.get(..8) {
        Some(m) if m == MAGIC => {}
        Some(m) if m == MAGIC_V1 => {
            return Err("written in an older format (INBXSNP1), no longer read".into());
        }
        Some(m) if m == MAGIC_V2 => {
            return Err(
                "written in an older format (INBXSNP2, without site versions), no longer read"
                    .into(),
            );
        }
        _ => return Err("not a snapshot (bad magic)".into()),
    }
    if u64::from_le_bytes(le(&header, 8)?) != position {
        return Err("position in the header does not match the file name".into());
    }
    let version = u16::from_le_bytes(le(&header, 16)?);
    if version != IMAGE_VERSION {
        return Err(format!(
            "state image version {version}, this build reads {IMAGE_VERSION}"
        ));
    }
    let dir_len = u32::from_le_bytes(le(&header, 18)?);
    let dir_crc = u32::from_le_bytes(le(&header, 22)?);
    if u64::from(dir_len) > file_len.saturating_sub(HEADER as u64) {
        return Err("directory length past the end (truncated?)".into());
    }
    let mut dir_bytes = vec![0u8; dir_len as usize];
    file.read_exact_at(&mut dir_bytes, HEADER as u64)
        .map_err(|e| format!("reading the directory: {e}"))?;
    if crc32c::crc32c(&dir_bytes) != dir_crc {
        return Err("directory checksum mismatch".into());
    }
    let directory: Directory =
        postcard::from_bytes(&dir_bytes).map_err(|e| format!("undecodable directory: {e}"))?;
    if directory
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.0 >= b.0))
    {
        return Err("sites out of order in the directory".into());
    }
    let mut jobs: Vec<Job> = Vec::new();
    let mut offset = HEADER as u64 + u64::from(dir_len);
    for (n, (site, _, blocks)) in directory.iter().enumerate() {
        if blocks.is_empty() {
            return Err(format!("site {site} has no head block"));
        }
        for (i, (len, crc)) in blocks.iter().enumerate() {
            let end = offset
                .checked_add(*len)
                .filter(|end| *end <= file_len)
                .ok_or("a block runs past the end (truncated?)")?;
            jobs.push(Job {
                site: n,
                offset,
                len: usize::try_from(*len).map_err(|_| "a block is too large")?,
                crc: *crc,
                head: i == 0,
            });
            offset = end;
        }
    }
    if offset != file_len {
        return Err(format!("{} bytes after the last block", file_len - offset));
    }
    let mut decoded = decode_all(path, &jobs)?.into_iter();
    let mut sites = BTreeMap::new();
    for (site, version, blocks) in directory {
        let Some(Decoded::Head(head)) = decoded.next() else {
            return Err(format!("site {site}: the first block is not a head"));
        };
        let mut parts = Vec::with_capacity(blocks.len().saturating_sub(1));
        for _ in 1..blocks.len() {
            match decoded.next() {
                Some(Decoded::Part(p)) => parts.push(p),
                _ => return Err(format!("site {site}: a part is missing")),
            }
        }
        let inbox = Inbox::from_image_with(*head, parts, &join_on_two_threads)
            .map_err(|e| format!("site {site}: {e}"))?;
        sites.insert(site, SiteState { inbox, version });
    }
    Ok(sites)
}

/// Runs `a` on a thread of its own and `b` on this one (the rebuilt state's message index is
/// built in two halves this way).
fn join_on_two_threads(a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)) {
    if threads() < 2 {
        a();
        b();
        return;
    }
    // Without a thread (the system refused one), `a` runs here after `b`.
    let a = std::sync::Mutex::new(Some(a));
    let run_a = || {
        let f = a.lock().ok().and_then(|mut f| f.take());
        if let Some(f) = f {
            f();
        }
    };
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new().spawn_scoped(scope, run_a).ok();
        b();
        if let Some(Err(panic)) = other.map(|t| t.join()) {
            std::panic::resume_unwind(panic);
        }
    });
    run_a();
}

/// How many threads a load uses: the cores there are, at most [`MAX_THREADS`].
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
}

/// Reads, checks and decodes every block, on up to [`MAX_THREADS`] threads (each reading
/// into a buffer of its own); the results in order.
fn decode_all(path: &Path, jobs: &[Job]) -> Result<Vec<Decoded>, String> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        let mut done: Vec<(usize, Result<Decoded, String>)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        // A handle of its own: reads seek it.
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return vec![(usize::MAX, Err(e.to_string()))];
            }
        };
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else {
                break;
            };
            let result = decode_block(&mut file, job, &mut buf)
                .map_err(|e| format!("block {i} (site {}): {e}", job.site));
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            done.push((i, result));
        }
        done
    };
    let threads = threads().min(jobs.len()).max(1);
    let mut results: Vec<(usize, Result<Decoded, String>)> = std::thread::scope(|scope| {
        // A thread the system refuses is one helper fewer: this one does the rest.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            match h.join() {
                Ok(done) => all.extend(done),
                Err(_) => all.push((usize::MAX, Err("a decoding thread panicked".into()))),
            }
        }
        all
    });
    results.sort_by_key(|(i, _)| *i);
    if results.len() != jobs.len() {
        // Stopped early: report the first error.
        return Err(results
            .into_iter()
            .find_map(|(_, r)| r.err())
            .unwrap_or_else(|| "decoding stopped early".into()));
    }
    results.into_iter().map(|(_, r)| r).collect()
}

fn decode_block(file: &mut File, job: &Job, buf: &mut Vec<u8>) -> Result<Decoded, String> {
    // Read into the buffer's spare capacity (`read_to_end` does not zero it first).
    buf.clear();
    buf.reserve(job.len);
    file.seek(SeekFrom::Start(job.offset))
        .map_err(|e| format!("reading: {e}"))?;
    let read = Read::take(&mut *file, job.len as u64)
        .read_to_end(buf)
        .map_err(|e| format!("reading: {e}"))?;
    if read != job.len {
        return Err("cut short (truncated?)".into());
    }
    if crc32c::crc32c(buf) != job.crc {
        return Err("checksum mismatch".into());
    }
    if job.head {
        postcard::from_bytes::<DecodedHead>(buf)
            .map(|h| Decoded::Head(Box::new(h)))
            .map_err(|e| format!("undecodable head: {e}"))
    } else {
        postcard::from_bytes::<DecodedPart>(buf)
            .map(Decoded::Part)
            .map_err(|e| format!("undecodable part: {e}"))
    }
}
