//! Start-up: the newest valid snapshot, then the log after it.

use std::collections::BTreeMap;

use inbox_core::{Inbox, InboxConfig, SiteId};
use thiserror::Error;

use crate::engine::{Observer, replay_into};
use crate::{EventLog, ReadError, SkippedSnapshot, SnapshotError, Snapshots};

/// One site's state and its version: how many of the site's events the state holds (the
/// version to append at next, `ExpectedVersion::Exactly(version)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteState {
    /// The state.
    pub inbox: Inbox,
    /// The site's events it holds.
    pub version: u64,
}

/// Every site's state, rebuilt.
#[derive(Debug)]
pub struct Recovered {
    /// The state and version of each site that has events.
    pub sites: BTreeMap<SiteId, SiteState>,
    /// The log position the state includes.
    pub position: u64,
    /// The snapshot it started from, if any.
    pub snapshot_position: Option<u64>,
    /// Events replayed after the snapshot.
    pub replayed: u64,
    /// Snapshots that could not be used.
    pub skipped_snapshots: Vec<SkippedSnapshot>,
}

/// Why recovery failed.
#[derive(Debug, Error)]
pub enum RecoverError {
    /// The log could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A snapshot could not be written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Rebuilds every site's [`Inbox`] from the newest valid snapshot (if `snapshots` is given)
/// and the events after it. `config` gives each site's settings; a snapshot's own settings
/// are replaced by them (settings are not history).
pub fn recover(
    log: &dyn EventLog,
    snapshots: Option<&Snapshots>,
    config: &dyn Fn(&SiteId) -> InboxConfig,
) -> Result<Recovered, RecoverError> {
    recover_reporting(log, snapshots, config, None, &mut |_, _| {})
}

/// [`recover`], calling `progress(done, total)` for each event of the tail it replays, and
/// `observer` with each event it folds and its site's state right after it.
pub(crate) fn recover_reporting(
    log: &dyn EventLog,
    snapshots: Option<&Snapshots>,
    config: &dyn Fn(&SiteId) -> InboxConfig,
    observer: Option<&Observer>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Recovered, RecoverError> {
    let last = log.last_position()?;
    let (snapshot, skipped_snapshots) = match snapshots {
        Some(s) => s.load_newest(last),
        None => (None, Vec::new()),
    };
    let (snapshot_position, mut sites) = match snapshot {
        Some((position, sites)) => (
            Some(position),
            sites
                .into_iter()
                .map(|(site, state)| {
                    let c = config(&site);
                    let inbox = state.inbox.with_config(c);
                    (
                        site,
                        SiteState {
                            inbox,
                            version: state.version,
                        },
                    )
                })
                .collect(),
        ),
        None => (None, BTreeMap::new()),
    };
    let from = snapshot_position.unwrap_or(0) + 1;
    let total = last.saturating_sub(from - 1);
    // A snapshot's state may hold events past its position (taken while writers ran); each
    // site's version says which, and those are skipped.
    let (position, replayed) =
        replay_into(log, from, total, &mut sites, config, observer, progress)?;
    Ok(Recovered {
        sites,
        position,
        snapshot_position,
        replayed,
        skipped_snapshots,
    })
}

/// Writes a snapshot of every site's state and version at `position`.
pub fn write_snapshot(
    snapshots: &Snapshots,
    position: u64,
    sites: &BTreeMap<SiteId, SiteState>,
) -> Result<std::path::PathBuf, SnapshotError> {
    snapshots.write(position, sites)
}
