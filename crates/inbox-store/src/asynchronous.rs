//! The engine for services on Tokio (feature `tokio`): every call that may wait for the disk
//! or the database runs on Tokio's blocking pool, so an fsync never holds an executor thread.
//!
//! [`Engine`] is synchronous by design (its log is, and a write waits for its fsync so that
//! what it answers is durable); [`AsyncEngine`] is the same engine behind `async fn`s. Each
//! call moves its arguments to [`tokio::task::spawn_blocking`] and awaits the answer; writers
//! still share fsyncs (group commit), since each waits on a blocking thread of its own.

use std::time::Duration;

use inbox_core::{Command, Context, EventEnvelope, IdSource, Inbox, SiteId};
use thiserror::Error;

use crate::{
    CloseError, Engine, ExecuteError, Executed, IngestError, Ingested, ReadError, StoredEvent,
};

/// Why an [`AsyncEngine`] call failed: the engine's own error, or the blocking task that ran
/// it did not finish.
#[derive(Debug, Error)]
pub enum AsyncError<E> {
    /// The engine answered with an error.
    #[error(transparent)]
    Engine(E),
    /// The task panicked or the runtime shut down before it finished (for a write: whether
    /// it is stored is known only when the log is read again).
    #[error("the blocking task did not finish: {0}")]
    Aborted(#[from] tokio::task::JoinError),
}

/// An [`Engine`] for async code. Cheap to clone, like the engine.
#[derive(Clone, Debug)]
pub struct AsyncEngine {
    engine: Engine,
}

async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, AsyncError<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await?
        .map_err(AsyncError::Engine)
}

impl AsyncEngine {
    /// Wraps an opened engine ([`Engine::open`] replays the log: call it through
    /// `spawn_blocking` too, or before the runtime starts).
    pub fn new(engine: Engine) -> Self {
        AsyncEngine { engine }
    }

    /// The synchronous engine, for calls that never wait (e.g. [`Engine::site_count`]).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// [`Engine::execute`], on the blocking pool. `ids` is moved to the call (a service
    /// passes a source of fresh UUIDs).
    pub async fn execute(
        &self,
        site: SiteId,
        command: Command,
        ctx: Context,
        mut ids: impl IdSource + Send + 'static,
    ) -> Result<Executed, AsyncError<ExecuteError>> {
        let engine = self.engine.clone();
        blocking(move || engine.execute(&site, &command, &ctx, &mut ids)).await
    }

    /// [`Engine::ingest`], on the blocking pool.
    pub async fn ingest(
        &self,
        site: SiteId,
        observed: Vec<EventEnvelope>,
    ) -> Result<Ingested, AsyncError<IngestError>> {
        let engine = self.engine.clone();
        blocking(move || engine.ingest(&site, observed)).await
    }

    /// [`Engine::read`], on the blocking pool (it may wait for a write of the site, and on
    /// a shared log it reads what other writers appended).
    pub async fn read<R: Send + 'static>(
        &self,
        site: SiteId,
        f: impl FnOnce(&Inbox) -> R + Send + 'static,
    ) -> Result<R, AsyncError<ReadError>> {
        let engine = self.engine.clone();
        blocking(move || engine.read(&site, f)).await
    }

    /// [`Engine::events_after`], on the blocking pool.
    pub async fn events_after(
        &self,
        position: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, AsyncError<ReadError>> {
        let engine = self.engine.clone();
        blocking(move || engine.events_after(position, max)).await
    }

    /// Waits until the durable end passes `position`, or `timeout` passes
    /// ([`Subscription::wait_past`](crate::Subscription::wait_past)), on the blocking pool.
    pub async fn wait_past(
        &self,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, AsyncError<std::convert::Infallible>> {
        let feed = self.engine.subscribe();
        blocking(move || Ok(feed.wait_past(position, timeout))).await
    }

    /// [`Engine::snapshot`], on the blocking pool.
    pub async fn snapshot(&self) -> Result<Option<std::path::PathBuf>, AsyncError<CloseError>> {
        let engine = self.engine.clone();
        blocking(move || engine.snapshot()).await
    }

    /// [`Engine::close`], on the blocking pool.
    pub async fn close(self) -> Result<Option<std::path::PathBuf>, AsyncError<CloseError>> {
        let engine = self.engine;
        blocking(move || engine.close()).await
    }
}
