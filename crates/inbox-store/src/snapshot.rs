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
use std::io::{self, Write};
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
    /// Where the snapshot at `position` is (or would be) kept.
    pub(crate) fn path_of(&self, position: u64) -> PathBuf {
        self.dir.join(name(position))
    }

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
        self.write_with(position, sites, Vec::new())
    }

    /// [`Snapshots::write`], plus sites whose blocks are copied as they are from an older
    /// snapshot (the sites a bounded cache does not hold, unchanged since that snapshot).
    pub(crate) fn write_with(
        &self,
        position: u64,
        sites: &BTreeMap<SiteId, SiteState>,
        carried: Vec<CarriedSite>,
    ) -> Result<PathBuf, SnapshotError> {
        let encode = |e: postcard::Error| SnapshotError::Encode(e.to_string());
        let mut encoded: BTreeMap<SiteId, (u64, Vec<Vec<u8>>)> = BTreeMap::new();
        for (site, state) in sites {
            let inbox = &state.inbox;
            let image = inbox.image(inbox.message_count().div_ceil(PART_MESSAGES));
            let mut site_blocks = Vec::with_capacity(1 + image.parts.len());
            site_blocks.push(postcard::to_allocvec(&image.head).map_err(encode)?);
            for part in &image.parts {
                site_blocks.push(postcard::to_allocvec(part).map_err(encode)?);
            }
            encoded.insert(site.clone(), (state.version, site_blocks));
        }
        for c in carried {
            encoded.entry(c.site).or_insert((c.version, c.blocks));
        }
        let mut directory: Directory = Vec::with_capacity(encoded.len());
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for (site, (version, site_blocks)) in encoded {
            let infos = site_blocks
                .iter()
                .map(|b| (b.len() as u64, crc32c::crc32c(b)))
                .collect();
            directory.push((site, version, infos));
            blocks.extend(site_blocks);
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
        self.newest(max_position, &|path, position| {
            SnapshotIndex::open(path, position)?.load_all()
        })
    }

    /// The newest snapshot at or below `max_position` whose header, directory and layout
    /// are sound, opened for reading one site at a time (each site's blocks are checked when
    /// it is loaded), and the ones skipped on the way.
    pub(crate) fn newest_index(
        &self,
        max_position: u64,
    ) -> (Option<(u64, SnapshotIndex)>, Vec<SkippedSnapshot>) {
        self.newest(max_position, &SnapshotIndex::open)
    }

    #[allow(clippy::type_complexity)]
    fn newest<T>(
        &self,
        max_position: u64,
        read: &dyn Fn(&Path, u64) -> Result<T, String>,
    ) -> (Option<(u64, T)>, Vec<SkippedSnapshot>) {
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

/// A site's blocks taken as they are from an older snapshot into a new one.
pub(crate) struct CarriedSite {
    pub site: SiteId,
    pub version: u64,
    pub blocks: Vec<Vec<u8>>,
}

/// A snapshot opened for reading one site at a time: its directory, and where each site's
/// blocks are. It holds the file open, so a snapshot pruned meanwhile can still be read.
pub(crate) struct SnapshotIndex {
    path: PathBuf,
    file: File,
    /// Each site's version and blocks, by site.
    sites: BTreeMap<SiteId, (u64, Vec<Job>)>,
}

impl std::fmt::Debug for SnapshotIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotIndex")
            .field("path", &self.path)
            .field("sites", &self.sites.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotIndex {
    /// Reads and checks the header and the directory, and that the blocks fill the file.
    pub fn open(path: &Path, position: u64) -> Result<Self, String> {
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
        let mut sites = BTreeMap::new();
        let mut offset = HEADER as u64 + u64::from(dir_len);
        for (n, (site, site_version, blocks)) in directory.into_iter().enumerate() {
            if blocks.is_empty() {
                return Err(format!("site {site} has no head block"));
            }
            let mut jobs = Vec::with_capacity(blocks.len());
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
            sites.insert(site, (site_version, jobs));
        }
        if offset != file_len {
            return Err(format!("{} bytes after the last block", file_len - offset));
        }
        Ok(SnapshotIndex {
            path: path.to_owned(),
            file,
            sites,
        })
    }

    /// Every site's state, decoded on every core; any damaged block fails it.
    fn load_all(self) -> Result<BTreeMap<SiteId, SiteState>, String> {
        let jobs: Vec<&Job> = self.sites.values().flat_map(|(_, j)| j).collect();
        let mut decoded = decode_all(&self.file, &jobs)?.into_iter();
        let mut out = BTreeMap::new();
        for (site, (version, blocks)) in self.sites {
            let state = assemble(&site, version, blocks.len(), &mut decoded)?;
            out.insert(site, state);
        }
        Ok(out)
    }

    /// The sites in the snapshot, with their versions.
    pub fn sites(&self) -> impl Iterator<Item = (&SiteId, u64)> + '_ {
        self.sites.iter().map(|(s, (v, _))| (s, *v))
    }

    /// The site's version in the snapshot, if it is there.
    pub fn version_of(&self, site: &SiteId) -> Option<u64> {
        self.sites.get(site).map(|(v, _)| *v)
    }

    /// Reads, checks and decodes one site's state (`None`: it is not in the snapshot).
    pub fn load_site(&self, site: &SiteId) -> Result<Option<SiteState>, String> {
        let Some((version, jobs)) = self.sites.get(site) else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        let mut decoded = Vec::with_capacity(jobs.len());
        for job in jobs {
            decoded.push(decode_block(&self.file, job, &mut buf)?);
        }
        assemble(site, *version, jobs.len(), &mut decoded.into_iter()).map(Some)
    }

    /// One site's blocks as they are stored, each checked against its CRC.
    pub fn raw_site(&self, site: &SiteId) -> Result<Option<CarriedSite>, String> {
        let Some((version, jobs)) = self.sites.get(site) else {
            return Ok(None);
        };
        let mut blocks = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut buf = Vec::new();
            read_block(&self.file, job, &mut buf)?;
            blocks.push(buf);
        }
        Ok(Some(CarriedSite {
            site: site.clone(),
            version: *version,
            blocks,
        }))
    }
}

/// Puts a site together from its decoded head and parts (checked again: an inconsistent
/// image is refused).
fn assemble(
    site: &SiteId,
    version: u64,
    blocks: usize,
    decoded: &mut dyn Iterator<Item = Decoded>,
) -> Result<SiteState, String> {
    let Some(Decoded::Head(head)) = decoded.next() else {
        return Err(format!("site {site}: the first block is not a head"));
    };
    let mut parts = Vec::with_capacity(blocks.saturating_sub(1));
    for _ in 1..blocks {
        match decoded.next() {
            Some(Decoded::Part(p)) => parts.push(p),
            _ => return Err(format!("site {site}: a part is missing")),
        }
    }
    let inbox = Inbox::from_image_with(*head, parts, &join_on_two_threads)
        .map_err(|e| format!("site {site}: {e}"))?;
    Ok(SiteState { inbox, version })
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

/// Reads, checks and decodes every block, on up to [`MAX_THREADS`] threads sharing the one
/// file handle (positioned reads), each with a buffer of its own; the results in order.
fn decode_all(file: &File, jobs: &[&Job]) -> Result<Vec<Decoded>, String> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        let mut done: Vec<(usize, Result<Decoded, String>)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else {
                break;
            };
            let result = decode_block(file, job, &mut buf)
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

/// Reads one block into `buf` and checks its CRC.
fn read_block(file: &File, job: &Job, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    buf.resize(job.len, 0);
    file.read_exact_at(buf, job.offset)
        .map_err(|e| format!("reading: {e} (truncated?)"))?;
    if crc32c::crc32c(buf) != job.crc {
        return Err("checksum mismatch".into());
    }
    Ok(())
}

fn decode_block(file: &File, job: &Job, buf: &mut Vec<u8>) -> Result<Decoded, String> {
    read_block(file, job, buf)?;
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
