//! # inbox-store
//!
//! Durable event logs for `inbox-core`. One log holds the events of every site, each with a
//! global **position** (1, 2, 3, ... across all sites) and a per-site **version** (1, 2, 3, ...
//! within one site). Appends are optimistic: the caller says which version of the site it
//! decided against, and a mismatch is a typed conflict carrying both versions.
//!
//! Implementations:
//! * [`MemoryLog`]: for tests and for embedding without persistence;
//! * [`FileLog`]: the embedded default. Append-only segment files of length-prefixed,
//!   CRC32C-checksummed records; an append returns once its records are on disk (fsync), and
//!   concurrent appends share one fsync (group commit). The format is in
//!   `docs/STORE-FORMAT.md`.
//! * [`PostgresLog`] (feature `postgres`, on by default): a PostgreSQL database that several
//!   processes share; appends serialized on one row lock and group-committed, positions
//!   dense and in commit order, commits announced with `NOTIFY` (see `docs/POSTGRES.md`).
//!
//! [`Snapshots`] store a serialized state at a position; [`recover`] rebuilds every site's
//! [`Inbox`](inbox_core::Inbox) from the newest valid snapshot plus the log after it.
//!
//! The trait is synchronous on purpose: an append's cost is the fsync, which no executor can
//! make cheaper, and a synchronous API embeds anywhere. A Tokio service uses `AsyncEngine`
//! (feature `tokio`), which runs each call of the [`Engine`] on the blocking pool.
//!
//! # Example: an engine that survives restarts
//!
//! [`Engine`] runs the write loop over any log: open (newest snapshot, then the log after
//! it), execute (decide, submit at the version decided against, apply, wait until durable),
//! read. On start-up after a crash it has every event `execute` acknowledged.
//!
//! ```
//! use std::sync::Arc;
//! use inbox_core::{Command, Context, InboxConfig, ParticipantId, SequentialIds, SiteId, Timestamp, VisitorId};
//! use inbox_store::{Engine, EngineConfig, FileLog, Snapshots};
//!
//! let dir = tempfile::tempdir()?;
//! let site = SiteId::new("my-site");
//! let config = || EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16]));
//! let visitor = ParticipantId::Visitor(VisitorId::from_uuid(uuid::Uuid::from_u128(1)));
//! {
//!     let (log, _report) = FileLog::open(dir.path().join("log"))?;
//!     let snapshots = Snapshots::new(dir.path().join("snapshots"))?;
//!     let (engine, _) = Engine::open(Arc::new(log), Some(snapshots), config(), &mut |_| {})?;
//!     let ctx = Context::at(Timestamp::from_micros(1_700_000_000_000_000));
//!     let command = Command::GetOrCreateConversation { participant: visitor };
//!     engine.execute(&site, &command, &ctx, &mut SequentialIds::default())?; // durable now
//!     engine.close()?; // a last snapshot
//! }
//! // After a restart (or a crash):
//! let (log, _report) = FileLog::open(dir.path().join("log"))?;
//! let snapshots = Snapshots::new(dir.path().join("snapshots"))?;
//! let (engine, opened) = Engine::open(Arc::new(log), Some(snapshots), config(), &mut |_| {})?;
//! assert_eq!(opened.snapshot_position, Some(1));
//! assert_eq!(engine.site_version(&site)?, 1);
//! assert!(engine.read(&site, |inbox| inbox.live_conversation_of(visitor))?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Underneath, [`recover`] rebuilds every site's state and version, and [`EventLog::submit`]
//! and [`EventLog::wait`] are the two halves of an append, for a caller that writes its own
//! loop.

#![deny(missing_docs)]

#[cfg(feature = "tokio")]
mod asynchronous;
mod codec;
mod engine;
mod file;
mod file_index;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod recover;
mod snapshot;

use std::ops::ControlFlow;
use std::path::PathBuf;

use inbox_core::{EventEnvelope, SiteId};
use thiserror::Error;

pub use codec::{CodecError, decode_event, encode_event};
/// The frozen event shapes of schema version 1, and a writer for them: for compatibility
/// fixtures only.
#[doc(hidden)]
pub mod codec_v1 {
    pub use crate::codec::encode_record_v1;
    pub use crate::codec::v1::*;
    /// `Contact` as versions 1 to 3 laid it out.
    pub use crate::codec::v3::Contact;
}
#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncEngine, AsyncError};
pub use engine::{
    CacheStats, CloseError, DEFAULT_DEDUPE_WINDOW, DEFAULT_MAX_CONFLICTS, Engine, EngineConfig,
    ExecuteError, Executed, IngestError, Ingested, Opened, Progress, Subscription,
};
pub use file::{FileLog, FileLogOptions, LogStats, OpenError, OpenReport, TornTail};
pub use memory::MemoryLog;
#[cfg(feature = "postgres")]
pub use postgres::{Listener, PostgresError, PostgresLog, Session};
pub use recover::{RecoverError, Recovered, SiteState, recover, write_snapshot};
pub use snapshot::{SkippedSnapshot, SnapshotError, Snapshots};

/// An event as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Global position, 1-based, dense across all sites.
    pub position: u64,
    /// Version of the event's site after this event, 1-based.
    pub site_version: u64,
    /// The event.
    pub envelope: EventEnvelope,
}

/// What the appender believes the site's version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version (no concurrency check).
    Any,
    /// Append only if the site's version is exactly this (0: the site has no events yet).
    Exactly(u64),
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Position of the batch's first event.
    pub first_position: u64,
    /// Position of its last event.
    pub last_position: u64,
    /// The site's version after the batch.
    pub site_version: u64,
}

/// An append that is queued but perhaps not yet durable: what [`EventLog::submit`]
/// returns, and [`EventLog::wait`] waits on.
///
/// Submitting fixes the batch's place in the log (its positions and site version) at once,
/// so a caller that decides under its own lock can submit in that order, release the lock
/// and only then wait for the fsync: concurrent appenders then share fsyncs even when they
/// write to one site.
#[derive(Debug)]
#[must_use = "an append is acknowledged only once `EventLog::wait` returns"]
pub struct AppendTicket {
    appended: Appended,
    durable: bool,
}

impl AppendTicket {
    /// A ticket for a batch that is already durable.
    pub fn durable(appended: Appended) -> Self {
        AppendTicket {
            appended,
            durable: true,
        }
    }

    /// Where the batch will be once durable.
    pub fn appended(&self) -> Appended {
        self.appended
    }
}

/// Why an append was refused or failed. Nothing of a refused batch is stored.
#[derive(Debug, Error)]
pub enum AppendError {
    /// Another writer appended to the site first: re-read and decide again.
    #[error("site {site} is at version {actual}, but the append expected {expected}")]
    Conflict {
        /// The site.
        site: SiteId,
        /// The version the appender expected.
        expected: u64,
        /// The version the site has.
        actual: u64,
    },
    /// A batch must hold at least one event.
    #[error("an append needs at least one event")]
    EmptyBatch,
    /// An event of the batch names another site.
    #[error("event {index} of the batch belongs to site {found}, not {site}")]
    WrongSite {
        /// The site appended to.
        site: SiteId,
        /// The event's position in the batch.
        index: usize,
        /// The site it names.
        found: SiteId,
    },
    /// An event could not be encoded.
    #[error("event {index} of the batch cannot be encoded: {source}")]
    Encode {
        /// The event's position in the batch.
        index: usize,
        /// Why.
        source: CodecError,
    },
    /// A write, fsync or commit failed; whether the batch was stored is unknown until the
    /// log is read again. A [`FileLog`] then refuses every later append until it is reopened
    /// and recovered; a [`PostgresLog`] goes on (the database, read again, tells what
    /// happened). The text says which.
    #[error("the log failed to write: {0}")]
    Failed(String),
}

/// Why a read failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The disk said no.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record that passed its checksum on open no longer decodes.
    #[error("record at {path}:{offset} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The database could not be read (connection lost, query refused).
    #[error("reading the database: {0}")]
    Database(String),
}

/// A durable, ordered log of every site's events.
pub trait EventLog: Send + Sync {
    /// Appends a batch of one site's events, atomically, if the site is at `expected`.
    /// Returns once the events are durable.
    fn append(
        &self,
        site: &SiteId,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError>;

    /// The first half of [`EventLog::append`]: checks and queues the batch, fixing its
    /// positions, without waiting for it to be durable. The default appends at once.
    fn submit(
        &self,
        site: &SiteId,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<AppendTicket, AppendError> {
        self.append(site, expected, events)
            .map(AppendTicket::durable)
    }

    /// The second half: returns once the submitted batch is durable. Until then it must
    /// not be acknowledged. Readers of the log see a batch only once it is durable.
    fn wait(&self, ticket: AppendTicket) -> Result<Appended, AppendError> {
        Ok(ticket.appended)
    }

    /// Up to `max` events of one site, from version `from_version` (1-based) on.
    fn read_site(
        &self,
        site: &SiteId,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, ReadError>;

    /// Calls `f` with every event from global position `from_position` (1-based) on, in
    /// order, until it breaks or the log ends. The way to replay a log.
    fn replay(
        &self,
        from_position: u64,
        f: &mut dyn FnMut(StoredEvent) -> ControlFlow<()>,
    ) -> Result<(), ReadError>;

    /// Up to `max` events from global position `from_position` on.
    fn read_all(&self, from_position: u64, max: usize) -> Result<Vec<StoredEvent>, ReadError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.replay(from_position, &mut |e| {
            out.push(e);
            if out.len() >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// The site's version: how many durable events it has (0 for none). A log that must ask
    /// a database says so when it cannot, rather than answer 0.
    fn site_version(&self, site: &SiteId) -> Result<u64, ReadError>;

    /// The position of the last durable event (0 for an empty log).
    fn last_position(&self) -> Result<u64, ReadError>;

    /// Saves whatever spares the next open work (the file log's index, see
    /// [`FileLog::checkpoint`]); the engine calls it after each snapshot. Returns the
    /// position it covers; a log with nothing to save (the default) does nothing and
    /// answers 0.
    fn checkpoint(&self) -> std::io::Result<u64> {
        Ok(0)
    }
}

/// Checks a batch and the expected version against the site's current one; shared by every
/// implementation so they refuse the same things the same way.
pub(crate) fn check_append(
    site: &SiteId,
    expected: ExpectedVersion,
    actual: u64,
    events: &[EventEnvelope],
) -> Result<(), AppendError> {
    if events.is_empty() {
        return Err(AppendError::EmptyBatch);
    }
    if let Some((index, e)) = events.iter().enumerate().find(|(_, e)| &e.site != site) {
        return Err(AppendError::WrongSite {
            site: site.clone(),
            index,
            found: e.site.clone(),
        });
    }
    match expected {
        ExpectedVersion::Exactly(v) if v != actual => Err(AppendError::Conflict {
            site: site.clone(),
            expected: v,
            actual,
        }),
        _ => Ok(()),
    }
}

// The README's examples run as doctests here: they use this crate and the core.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
