//! Start-up: the newest valid snapshot, then the log after it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use inbox_core::{Inbox, InboxConfig, SiteId};
use thiserror::Error;

use crate::{EventLog, ReadError, SkippedSnapshot, SnapshotError, Snapshots};

/// Every site's state, rebuilt.
#[derive(Debug)]
pub struct Recovered {
    /// The state of each site that has events.
    pub sites: BTreeMap<SiteId, Inbox>,
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
    let last = log.last_position();
    let (snapshot, skipped_snapshots) = match snapshots {
        Some(s) => s.load_newest(last),
        None => (None, Vec::new()),
    };
    let (snapshot_position, mut sites) = match snapshot {
        Some((position, sites)) => (
            Some(position),
            sites
                .into_iter()
                .map(|(site, inbox)| {
                    let c = config(&site);
                    (site, inbox.with_config(c))
                })
                .collect(),
        ),
        None => (None, BTreeMap::new()),
    };
    let mut position = snapshot_position.unwrap_or(0);
    let mut replayed = 0u64;
    log.replay(position + 1, &mut |stored| {
        position = stored.position;
        replayed += 1;
        let site = stored.envelope.site;
        sites
            .entry(site)
            .or_insert_with_key(|s| Inbox::new(config(s)))
            .apply_owned(stored.envelope.event);
        ControlFlow::Continue(())
    })?;
    Ok(Recovered {
        sites,
        position,
        snapshot_position,
        replayed,
        skipped_snapshots,
    })
}

/// Writes a snapshot of every site's state at `position`.
pub fn write_snapshot(
    snapshots: &Snapshots,
    position: u64,
    sites: &BTreeMap<SiteId, Inbox>,
) -> Result<std::path::PathBuf, SnapshotError> {
    snapshots.write(position, sites)
}
