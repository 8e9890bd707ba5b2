//! # inbox-server
//!
//! `inboxd`: a Wix-compatible Inbox emulator on the embedded file store, the intake of real
//! Wix webhooks into local replicas, and delivery of the emulator's own webhooks. The binary
//! is a thin shell (`src/main.rs`) over this library, which tests start in-process.
//!
//! * [`engine`]: per-site core state over the durable log; decide, submit, apply, wait;
//! * [`http`]: the Wix REST paths and the emulator's own, in Wix's shapes and errors;
//! * [`outbox`]: at-least-once webhook delivery from the log, with backoff and jitter;
//! * [`keys`]: the signing and cursor keys in the data directory.
#![deny(missing_docs)]

pub mod engine;
pub mod http;
pub mod keys;
pub mod outbox;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use inbox_core::SiteId;
use inbox_wix::webhook::WebhookVerifier;
use tokio::sync::watch;

use crate::engine::{Engine, Opened};
use crate::http::AppState;
use crate::outbox::Outbox;

/// How to run the server (the flags of `inboxd serve`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory (log, keys, outbox cursors).
    pub data: PathBuf,
    /// `(site, key)` pairs; empty: any key, loopback only.
    pub api_keys: Vec<(SiteId, String)>,
    /// Where to deliver webhooks.
    pub webhook_urls: Vec<String>,
    /// RSA private key (PEM) to sign webhooks with; generated into the data directory if
    /// absent.
    pub signing_key: Option<PathBuf>,
    /// Wix's public key (PEM) to verify webhooks from the real Wix with.
    pub wix_public_key: Option<PathBuf>,
    /// A PostgreSQL URL: keep the log, the keys, the webhook cursors and the replica list
    /// in that database instead of `data`, so several processes can serve the same sites.
    pub postgres: Option<String>,
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
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    follower: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (their events are durable before
    /// they are answered), stops the webhook workers (their cursors are saved after each
    /// delivery) and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        for w in self.workers {
            let _ = w.await;
        }
        self.engine.stop();
        if let Some(f) = self.follower {
            let _ = tokio::task::spawn_blocking(move || f.join()).await;
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
    let outbox = Arc::new(match &pg {
        Some(pg) => Outbox::new_shared(&opts.webhook_urls, pg.clone(), signing.signer.clone()),
        None => Outbox::new(
            &opts.webhook_urls,
            &opts.data.join("outbox"),
            signing.signer.clone(),
        )
        .map_err(|e| setup(&e))?,
    });
    let data = opts.data.clone();
    let ob = outbox.clone();
    let shared = pg.clone();
    let (engine, opened) = tokio::task::spawn_blocking(move || match shared {
        Some(pg) => Engine::open_shared(pg, cursor_key, Some(ob), &mut |_, _| {}),
        None => Engine::open(&data, cursor_key, Some(ob), &mut |_, _| {}),
    })
    .await
    .map_err(|e| setup(&e))?
    .map_err(StartError::Setup)?;
    let engine = Arc::new(engine);
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
    // What the outbox may deliver up to: the log's durable end, or on a shared log the
    // follower's position (every event up to it is applied here and its webhooks queued).
    let watermark: Arc<dyn Fn() -> u64 + Send + Sync> = if engine.is_shared() {
        let e = engine.clone();
        Arc::new(move || e.followed())
    } else {
        let log = engine.log().clone();
        // The file log answers from memory and cannot fail; were it to, nothing new is
        // delivered until it answers again.
        Arc::new(move || log.last_position().unwrap_or(0))
    };
    let workers = outbox.spawn_workers(watermark, rx.clone());
    let follower = if engine.is_shared() {
        let e = engine.clone();
        Some(
            std::thread::Builder::new()
                .name("inbox-follower".into())
                .spawn(move || e.follow())
                .map_err(|e| setup(&e))?,
        )
    } else {
        None
    };
    let mut stop = rx;
    let app = http::router(state);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    Ok(Running {
        addr,
        engine,
        outbox,
        opened,
        generated_signing_key: generated,
        shutdown,
        server,
        workers,
        follower,
    })
}
