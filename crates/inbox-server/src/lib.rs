//! # inbox-server
//!
//! `inboxd`: a Wix-compatible Inbox emulator on the embedded file store, the intake of real
//! Wix webhooks into local replicas, and delivery of the emulator's own webhooks. The binary
//! is a thin shell (`src/main.rs`) over this library, which tests start in-process.
//!
//! * [`engine`]: the store's engine with the server's clock, ids, callers and replicas;
//! * [`backend`]: what differs between the file store and PostgreSQL (log, snapshots,
//!   replica registry, follower), chosen once at start;
//! * [`delivery`]: the outbox's cursors, leases and dead letters, in files or the database;
//! * [`http`]: the Wix REST paths and the emulator's own, in Wix's shapes and errors;
//! * [`outbox`]: at-least-once webhook delivery from the engine's observations, each event
//!   retried on its own schedule, dead letters, chaos mode;
//! * [`oauth`]: the emulated `/oauth2/token` (app tokens bound to a site);
//! * [`tls`]: TLS on the listen address (a given or a generated self-signed certificate);
//! * [`keys`]: the signing and cursor keys in the data directory;
//! * [`clock`]: the system clock and the random id source.
//!
//! [`start`] wires them: the outbox is the engine's observer and follows its watermark, so
//! neither module knows the other.
#![deny(missing_docs)]

pub mod backend;
pub mod clock;
pub mod delivery;
pub mod engine;
pub mod http;
pub mod keys;
pub mod oauth;
pub mod outbox;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use inbox_core::SiteId;
use inbox_wix::webhook::WebhookVerifier;
use tokio::sync::watch;

use crate::backend::{Backend, FileBackend, PostgresBackend};
use crate::engine::{Engine, Opened};
use crate::http::AppState;
use crate::outbox::{Outbox, Subscription};

/// How to run the server (the flags of `inboxd serve`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory (log, keys, outbox cursors).
    pub data: PathBuf,
    /// `(site, key)` pairs; empty: any key, loopback only.
    pub api_keys: Vec<(SiteId, String)>,
    /// Where to deliver every webhook.
    pub webhook_urls: Vec<String>,
    /// `(event type, URL)`: deliver that event type to that URL (as an app subscribes to
    /// each event type in Wix's dev center); a URL receives only the types it subscribed
    /// to, unless it is in `webhook_urls` too.
    pub webhook_subscriptions: Vec<(String, String)>,
    /// RSA private key (PEM) to sign webhooks with; generated into the data directory if
    /// absent.
    pub signing_key: Option<PathBuf>,
    /// Wix's public key (PEM) to verify webhooks from the real Wix with.
    pub wix_public_key: Option<PathBuf>,
    /// A PostgreSQL URL: keep the log, the keys, the webhook cursors and the replica list
    /// in that database instead of `data`, so several processes can serve the same sites.
    pub postgres: Option<String>,
    /// On the file store: write a snapshot every this many events (off the write path), so
    /// that start-up replays only the log after the newest one. A snapshot is also written
    /// at shutdown. `None`: only at shutdown.
    pub snapshot_every: Option<u64>,
    /// Hold at most this many sites' states in memory (a bounded cache: a site loads on
    /// first use from the newest snapshot and its events after it, and the least recently
    /// used idle site is evicted), so memory follows the sites in use. `None`: every site.
    /// Ignored with webhook URLs: the outbox needs every site's state at each event.
    pub max_sites: Option<usize>,
    /// How long a client may take to send a request's headers before its connection is
    /// closed (so idle, half-sent requests are not held forever).
    pub header_read_timeout: std::time::Duration,
    /// How failed webhook deliveries are retried (Wix's schedule by default), and chaos mode.
    pub delivery: outbox::DeliveryPolicy,
    /// Serve HTTPS instead of HTTP (Wix's SDK speaks only `https` to a host it is given).
    pub tls: Option<tls::TlsSource>,
    /// Apps (id, secret) that may take access tokens at `/oauth2/token`, as Wix's
    /// `AppStrategy` does; a token acts as its app on the site (`instance_id`) it was issued
    /// for.
    pub apps: Vec<(inbox_core::AppId, String)>,
}

/// Events between two snapshots by default (`inboxd serve --snapshot-every`).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// How long a client may take to send its headers, by default
/// (`inboxd serve --header-read-timeout`).
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl ServeOptions {
    /// Serving the file store in `data` on `listen`, as `inboxd serve` does with no other
    /// flag: no API keys (so loopback only), no webhooks, the signing key generated into
    /// `data`, no replica intake, a snapshot every [`DEFAULT_SNAPSHOT_EVERY`] events, every
    /// site held. Set the fields to change any of it.
    pub fn new(listen: SocketAddr, data: PathBuf) -> Self {
        ServeOptions {
            listen,
            data,
            api_keys: Vec::new(),
            webhook_urls: Vec::new(),
            webhook_subscriptions: Vec::new(),
            signing_key: None,
            wix_public_key: None,
            postgres: None,
            snapshot_every: Some(DEFAULT_SNAPSHOT_EVERY),
            max_sites: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            delivery: outbox::DeliveryPolicy::default(),
            tls: None,
            apps: Vec::new(),
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No API key, and an address other than loopback.
    #[error(
        "refusing to listen on {0} without API keys: anyone could read and write every site. \
         Give --api-key SITE:KEY, or listen on 127.0.0.1"
    )]
    OpenOnNetwork(SocketAddr),
    /// The data directory, a key or the log could not be used.
    #[error("{0}")]
    Setup(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started server.
pub struct Running {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The engine (tests read its state).
    pub engine: Arc<Engine>,
    /// The outbox (tests read its counts).
    pub outbox: Arc<Outbox>,
    /// What start-up replayed.
    pub opened: Opened,
    /// Whether the signing key was generated now.
    pub generated_signing_key: bool,
    /// With TLS: the certificate clients should trust, and whether it was generated now.
    pub tls_cert: Option<(PathBuf, bool)>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    follower: Option<std::thread::JoinHandle<()>>,
    stop_following: Arc<AtomicBool>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (their events are durable before
    /// they are answered), stops the webhook workers (their cursors are saved), stops the
    /// follower, and writes a snapshot (with the webhooks still pending beside it) so the
    /// next start replays only what comes after.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        for w in self.workers {
            let _ = w.await;
        }
        self.stop_following.store(true, Ordering::SeqCst);
        if let Some(f) = self.follower {
            let _ = tokio::task::spawn_blocking(move || f.join()).await;
        }
        let core = self.engine.core().clone();
        match tokio::task::spawn_blocking(move || core.close()).await {
            Ok(Ok(Some(path))) => tracing::info!(snapshot = %path.display(), "snapshot written"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "no snapshot at shutdown"),
            Err(e) => tracing::warn!(error = %e, "no snapshot at shutdown"),
        }
    }
}

/// Opens the data directory and starts serving.
pub async fn start(opts: ServeOptions) -> Result<Running, StartError> {
    if opts.api_keys.is_empty() && !http::is_loopback(&opts.listen) {
        return Err(StartError::OpenOnNetwork(opts.listen));
    }
    let setup = |e: &dyn std::fmt::Display| StartError::Setup(e.to_string());
    let pg = match &opts.postgres {
        Some(url) => {
            let url = url.clone();
            Some(Arc::new(
                tokio::task::spawn_blocking(move || inbox_store::PostgresLog::connect(&url))
                    .await
                    .map_err(|e| setup(&e))?
                    .map_err(|e| setup(&e))?,
            ))
        }
        None => {
            std::fs::create_dir_all(&opts.data)
                .map_err(|e| StartError::Setup(format!("{}: {e}", opts.data.display())))?;
            None
        }
    };
    let (signing, generated, cursor_key) = {
        let pg = pg.clone();
        let given = opts.signing_key.clone();
        let data = opts.data.clone();
        tokio::task::spawn_blocking(move || match (&pg, given) {
            (Some(pg), None) => {
                let (key, generated) = keys::shared_signing_key(pg)?;
                Ok((key, generated, keys::shared_cursor_key(pg)?))
            }
            (Some(pg), Some(path)) => {
                let (key, generated) = keys::signing_key(Some(&path), &data)?;
                Ok((key, generated, keys::shared_cursor_key(pg)?))
            }
            (None, given) => {
                let (key, generated) = keys::signing_key(given.as_deref(), &data)?;
                Ok((key, generated, keys::cursor_key(&data)?))
            }
        })
        .await
        .map_err(|e| setup(&e))?
        .map_err(|e: keys::KeyError| setup(&e))?
    };
    let wix_verifier = match &opts.wix_public_key {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| StartError::Setup(format!("{}: {e}", path.display())))?;
            Some(
                WebhookVerifier::from_public_pem(&pem)
                    .map_err(|e| StartError::Setup(format!("{}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let data = opts.data.clone();
    let subscriptions = Subscription::combine(&opts.webhook_urls, &opts.webhook_subscriptions)
        .map_err(|e| setup(&e))?;
    let signer = signing.signer.clone();
    let (snapshot_every, max_sites) = (opts.snapshot_every, opts.max_sites);
    let (backend, outbox, engine, opened) = tokio::task::spawn_blocking(move || {
        let backend: Arc<dyn Backend> = match pg {
            Some(pg) => Arc::new(PostgresBackend::new(pg).map_err(|e| setup(&e))?),
            None => Arc::new(FileBackend::open(&data).map_err(|e| setup(&e))?),
        };
        let deliveries = backend.deliveries().map_err(|e| setup(&e))?;
        let outbox = Arc::new(
            Outbox::new(
                &subscriptions,
                deliveries,
                backend.pending_dir(),
                signer,
                opts.delivery.clone(),
            )
            .map_err(|e| setup(&e))?,
        );
        let (engine, opened) =
            open_engine(&backend, cursor_key, snapshot_every, max_sites, &outbox)?;
        Ok::<_, StartError>((backend, outbox, engine, opened))
    })
    .await
    .map_err(|e| setup(&e))??;
    let engine = Arc::new(engine.after_writes({
        let outbox = outbox.clone();
        move || outbox.notify()
    }));
    let keys: HashMap<String, SiteId> = opts
        .api_keys
        .iter()
        .map(|(site, key)| (key.clone(), site.clone()))
        .collect();
    let state = Arc::new(AppState {
        engine: engine.clone(),
        keys,
        public_pem: signing.public_pem.clone(),
        wix_verifier,
        tokens: oauth::TokenIssuer::new(cursor_key, opts.apps.clone()),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: opts.listen,
        source,
    })?;
    let (shutdown, rx) = watch::channel(false);
    // What the outbox may deliver up to: every event up to the engine's watermark is
    // durable and was observed (its webhooks queued), whoever wrote it.
    let watermark: Arc<dyn Fn() -> u64 + Send + Sync> = {
        let core = engine.core().clone();
        Arc::new(move || core.applied_through())
    };
    let workers = outbox.spawn_workers(watermark, rx.clone());
    let stop_following = Arc::new(AtomicBool::new(false));
    let follower = if backend.is_shared() {
        let (core, outbox, stop) = (
            engine.core().clone(),
            outbox.clone(),
            stop_following.clone(),
        );
        Some(
            std::thread::Builder::new()
                .name("inbox-follower".into())
                .spawn(move || {
                    let take_in = || match core.take_in() {
                        Ok(0) => {}
                        Ok(_) => outbox.notify(),
                        Err(e) => {
                            tracing::warn!(error = %e, "follower: reading the log failed; retrying");
                        }
                    };
                    backend.follow(&take_in, &stop);
                })
                .map_err(|e| setup(&e))?,
        )
    } else {
        None
    };
    let tls = match &opts.tls {
        Some(source) => Some(tls::load(source, &opts.data).map_err(|e| setup(&e))?),
        None => None,
    };
    let tls_cert = tls.as_ref().map(|t| (t.cert_path.clone(), t.generated));
    let app = http::router(state);
    let server = tokio::spawn(serve(
        listener,
        app,
        opts.header_read_timeout,
        tls.map(|t| t.acceptor),
        rx,
    ));
    Ok(Running {
        addr,
        engine,
        outbox,
        opened,
        generated_signing_key: generated,
        tls_cert,
        shutdown,
        server,
        workers,
        follower,
        stop_following,
    })
}

/// Serves `app` on `listener` until `stop` turns true, then lets the connections finish
/// what they are answering. HTTP/1.1 and HTTP/2 (prior knowledge); a client that has not
/// sent a request's headers within `header_read_timeout` is disconnected. (`axum::serve`
/// sets no such timeout, hence hyper's own connection builder here.)
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_read_timeout: std::time::Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: give the process a moment.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                match &tls {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                    Some(acceptor) => {
                        // The handshake in the connection's own task, bounded like a
                        // request's headers, so a client that never finishes it holds
                        // nothing but its socket for a while.
                        let (acceptor, builder, watcher) =
                            (acceptor.clone(), builder.clone(), graceful.watcher());
                        tokio::spawn(async move {
                            let handshake =
                                tokio::time::timeout(header_read_timeout, acceptor.accept(stream));
                            let Ok(Ok(stream)) = handshake.await else {
                                return;
                            };
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned();
                            let _ = watcher.watch(connection).await;
                        });
                    }
                }
            }
            () = &mut stopped => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Opens the engine from the newest snapshot. With webhook URLs the outbox is the engine's
/// observer, and the start uses the snapshot only if the outbox has what it needs beside
/// it: the webhooks pending at that snapshot (the start does not replay what the snapshot
/// holds); without them, and with a URL whose cursor is before the snapshot, the whole log
/// is replayed instead. Without URLs nothing observes, and `max_sites` bounds the cache.
fn open_engine(
    backend: &Arc<dyn Backend>,
    cursor_key: [u8; 16],
    snapshot_every: Option<u64>,
    max_sites: Option<usize>,
    outbox: &Arc<Outbox>,
) -> Result<(Engine, Opened), StartError> {
    let setup = |e: &dyn std::fmt::Display| StartError::Setup(e.to_string());
    let log_end = backend.log().last_position().map_err(|e| setup(&e))?;
    let undelivered_from = outbox
        .start(log_end)
        .map_err(|e| StartError::Setup(format!("webhook cursors: {e}")))?;
    let config = || {
        let mut config = engine::config(cursor_key);
        if let Some(n) = snapshot_every {
            config = config.snapshot_every(n);
        }
        if !outbox.is_active() {
            return match max_sites {
                Some(n) => config.max_sites(n),
                None => config,
            };
        }
        if max_sites.is_some() {
            tracing::warn!("--max-sites is ignored with webhook URLs: every site is held");
        }
        let replicas = backend.replicas();
        let observer = outbox.clone();
        config = config.observe(move |position, envelope, after| {
            // A replica's events happened on the real Wix, which announced them.
            match replicas.is_replica(&envelope.site, &|| Ok(true)) {
                Ok(true) => {}
                Ok(false) => observer.observe(position, envelope, after),
                Err(e) => {
                    tracing::warn!(site = %envelope.site, error = %e, "could not ask whether the site is a replica; announcing its event");
                    observer.observe(position, envelope, after);
                }
            }
        });
        let saver = outbox.clone();
        config.before_snapshot(move |position| saver.save_pending(position))
    };
    let (engine, opened) =
        Engine::open(&**backend, config(), true, &mut |_, _| {}).map_err(|e| setup(&e))?;
    let Some(snapshot) = opened.snapshot_position else {
        return Ok((engine, opened));
    };
    if !outbox.is_active() || snapshot <= undelivered_from {
        return Ok((engine, opened));
    }
    match outbox.load_pending(snapshot, opened.position) {
        Ok(loaded) => {
            tracing::info!(
                snapshot,
                loaded,
                "webhooks pending at the snapshot queued again"
            );
            Ok((engine, opened))
        }
        Err(e) => {
            tracing::warn!(error = %e, "replaying the whole log for the webhooks not delivered yet");
            drop(engine);
            Engine::open(&**backend, config(), false, &mut |_, _| {}).map_err(|e| setup(&e))
        }
    }
}
