//! Snapshots: a serialized state at a log position, so start-up replays only the tail.
//!
//! File `snapshot-<position, 20 digits>.snap`: `INBXSNP1` magic, the position (u64 LE), the
//! payload length (u64 LE), the payload's CRC32C (u32 LE), then the payload (postcard). A
//! snapshot is written to a temporary file, fsynced, and renamed into place, so a crash leaves
//! either the old set or the new one. A damaged snapshot is skipped and reported, never
//! trusted: the log is the source of truth and a snapshot only saves time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

const MAGIC: &[u8; 8] = b"INBXSNP1";
const HEADER: usize = 8 + 8 + 8 + 4;
/// How many snapshots are kept: the newest, and one before it in case it is damaged.
const KEEP: usize = 2;

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

    /// Writes `state` as the snapshot at `position`, durably, and prunes old ones.
    pub fn write<S: Serialize>(&self, position: u64, state: &S) -> Result<PathBuf, SnapshotError> {
        let payload =
            postcard::to_allocvec(state).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        let final_path = self.dir.join(name(position));
        let tmp_path = self.dir.join(format!(".{}.tmp", name(position)));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SnapshotError::Io { path, source }
        };
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp_path)
                .map_err(io(&tmp_path))?;
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&position.to_le_bytes());
            header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            header.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            f.write_all(&header).map_err(io(&tmp_path))?;
            f.write_all(&payload).map_err(io(&tmp_path))?;
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

    /// The newest snapshot that reads back whole and is at or below `max_position`, and the
    /// ones skipped on the way (damaged, or ahead of the log).
    pub fn load_newest<S: DeserializeOwned>(
        &self,
        max_position: u64,
    ) -> (Option<(u64, S)>, Vec<SkippedSnapshot>) {
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

fn read<S: DeserializeOwned>(path: &Path, position: u64) -> Result<S, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let (header, payload) = bytes
        .split_at_checked(HEADER)
        .ok_or("shorter than its header")?;
    let field = |range: std::ops::Range<usize>| -> Result<[u8; 8], String> {
        header
            .get(range)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| "bad header".to_owned())
    };
    if header.get(..8) != Some(MAGIC.as_slice()) {
        return Err("not a snapshot (bad magic)".into());
    }
    if u64::from_le_bytes(field(8..16)?) != position {
        return Err("position in the header does not match the file name".into());
    }
    if u64::from_le_bytes(field(16..24)?) != payload.len() as u64 {
        return Err("payload length does not match (truncated?)".into());
    }
    let crc: [u8; 4] = header
        .get(24..28)
        .and_then(|s| s.try_into().ok())
        .ok_or("bad header")?;
    if crc32c::crc32c(payload) != u32::from_le_bytes(crc) {
        return Err("checksum mismatch".into());
    }
    postcard::from_bytes(payload).map_err(|e| format!("undecodable: {e}"))
}
