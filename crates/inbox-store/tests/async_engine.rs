//! The engine behind `async fn`s: a Tokio service's executor keeps running while a write
//! waits for its fsync.
#![cfg(feature = "tokio")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::ThreadId;

use inbox_core::{
    Command, Context, EventEnvelope, InboxConfig, ParticipantId, SequentialIds, SiteId, Timestamp,
    VisitorId,
};
use inbox_store::{
    AppendError, AppendTicket, Appended, AsyncEngine, Engine, EngineConfig, EventLog,
    ExpectedVersion, MemoryLog, ReadError, StoredEvent,
};
use uuid::Uuid;

/// A log whose fsync (`wait`) does not finish until the test says so. It tells the test when
/// a wait has begun, and records a wait made on the executor's own thread (which would
/// have blocked the executor) instead of blocking there.
struct GatedLog {
    inner: MemoryLog,
    executor: ThreadId,
    waiting: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
    waited_on_executor: AtomicBool,
}

impl EventLog for GatedLog {
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
        self.inner.submit(site, expected, events)
    }

    fn wait(&self, ticket: AppendTicket) -> Result<Appended, AppendError> {
        if std::thread::current().id() == self.executor {
            // Dropping the sender fails the test's await at once rather than hang it.
            self.waited_on_executor.store(true, Ordering::SeqCst);
            drop(self.waiting.lock().unwrap().take());
        } else {
            if let Some(tell) = self.waiting.lock().unwrap().take() {
                let _ = tell.send(());
            }
            self.release.lock().unwrap().recv().unwrap();
        }
        self.inner.wait(ticket)
    }

    fn read_site(
        &self,
        site: &SiteId,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        self.inner.read_site(site, from_version, max)
    }

    fn replay(
        &self,
        from_position: u64,
        f: &mut dyn FnMut(StoredEvent) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        self.inner.replay(from_position, f)
    }

    fn site_version(&self, site: &SiteId) -> Result<u64, ReadError> {
        self.inner.site_version(site)
    }

    fn last_position(&self) -> Result<u64, ReadError> {
        self.inner.last_position()
    }
}

fn visitor(n: u128) -> ParticipantId {
    ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(n)))
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_waiting_for_its_fsync_never_holds_the_executor() {
    // Given an engine whose log's fsync waits until released, on a runtime of one thread,
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let log = Arc::new(GatedLog {
        inner: MemoryLog::default(),
        executor: std::thread::current().id(),
        waiting: Mutex::new(Some(waiting_tx)),
        release: Mutex::new(release_rx),
        waited_on_executor: AtomicBool::new(false),
    });
    let config = EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16]));
    let (engine, _) = Engine::open(log.clone(), None, config, &mut |_| {}).unwrap();
    let engine = AsyncEngine::new(engine);
    let site = SiteId::new("site");
    let ctx = Context::at(Timestamp::from_micros(1_700_000_000_000_000));

    // when a write is in flight, stuck in its fsync,
    let write = tokio::spawn({
        let engine = engine.clone();
        let site = site.clone();
        async move {
            let command = Command::GetOrCreateConversation {
                participant: visitor(1),
            };
            engine
                .execute(site, command, ctx, SequentialIds::default())
                .await
        }
    });
    // then this task, on the same single executor thread, runs: it hears that the fsync
    // has begun, and reads another site meanwhile.
    waiting_rx
        .await
        .expect("the fsync was waited for on the executor's thread");
    let other = engine
        .read(SiteId::new("other"), |inbox| {
            inbox.live_conversation_of(visitor(1))
        })
        .await
        .unwrap();
    assert_eq!(other, None);
    assert!(
        !write.is_finished(),
        "the write is still waiting for its fsync"
    );
    // And once the fsync is done, the write is answered, durable.
    release_tx.send(()).unwrap();
    let executed = write.await.unwrap().unwrap();
    assert_eq!(executed.events.len(), 1);
    assert!(!log.waited_on_executor.load(Ordering::SeqCst));
    let c = engine
        .read(site, |inbox| inbox.live_conversation_of(visitor(1)))
        .await
        .unwrap();
    assert!(c.is_some());
    let feed = engine.events_after(0, 10).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(
        engine
            .wait_past(0, std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        engine.close().await.unwrap(),
        None,
        "no snapshots configured"
    );
}
