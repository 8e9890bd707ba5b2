//! `inboxd`: the command line. A thin shell over the `inbox_server` library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use inbox_core::SiteId;
use inbox_server::backend::{Backend, FileBackend, PostgresBackend};
use inbox_server::engine::{Engine, config};
use inbox_server::{ServeOptions, StartError};
use inbox_wix::wire::{Conversation, Message};

/// A Wix-compatible Inbox emulator: the Wix Inbox REST API (Inbox v2, Contacts v4) on an
/// embedded, crash-safe event log; webhooks delivered like Wix's (signed JWTs, at least
/// once); and replicas of real Wix sites kept from their webhooks.
#[derive(Parser)]
#[command(name = "inboxd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the Wix REST paths, take Wix webhooks, deliver our own.
    Serve(Box<Serve>),
    /// Rebuild every site's state from the log and print a summary (the server must not be
    /// running on the same directory).
    Replay {
        /// The data directory.
        #[arg(long, default_value = "./inbox-data")]
        data: PathBuf,
        /// Read the log from this PostgreSQL database instead (servers may keep running).
        #[arg(long, value_name = "URL", env = "INBOXD_POSTGRES")]
        postgres: Option<String>,
    },
    /// Write every conversation and its messages as JSON lines to standard output, in Wix's
    /// shapes (the server must not be running on the same directory).
    Export {
        /// The data directory.
        #[arg(long, default_value = "./inbox-data")]
        data: PathBuf,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Read the log from this PostgreSQL database instead (servers may keep running).
        #[arg(long, value_name = "URL", env = "INBOXD_POSTGRES")]
        postgres: Option<String>,
    },
    /// The webhooks set aside after every retry failed (dead letters): list them, or put
    /// them back to be delivered (on the file store the server must not be running).
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCmd,
    },
}

#[derive(Subcommand)]
enum WebhooksCmd {
    /// Print the dead letters of a URL, one JSON object a line.
    DeadLetters {
        #[command(flatten)]
        store: WebhookStore,
    },
    /// Put dead letters of a URL back to be delivered at once, with a fresh set of retries
    /// (at the server's next start on the file store).
    Redeliver {
        #[command(flatten)]
        store: WebhookStore,
        /// The event id of a dead letter to put back (repeatable).
        #[arg(long = "event-id", value_name = "ID", required_unless_present = "all")]
        event_ids: Vec<String>,
        /// Put back every dead letter of the URL.
        #[arg(long, conflicts_with = "event_ids")]
        all: bool,
    },
}

#[derive(clap::Args)]
struct WebhookStore {
    /// The webhook URL.
    #[arg(long)]
    url: String,
    /// The data directory.
    #[arg(long, default_value = "./inbox-data")]
    data: PathBuf,
    /// The PostgreSQL database instead.
    #[arg(long, value_name = "URL", env = "INBOXD_POSTGRES")]
    postgres: Option<String>,
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on. Without --api-key only a loopback address is allowed.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory: the event log, keys, webhook cursors. Created if missing.
    #[arg(long, default_value = "./inbox-data")]
    data: PathBuf,
    /// An API key and the site it belongs to, as SITE:KEY (repeatable). Requests send
    /// `Authorization: KEY` and `wix-site-id: SITE`, as Wix's SDK does; a key sees only its
    /// site. With no key, any key is accepted, on loopback only.
    #[arg(long = "api-key", value_name = "SITE:KEY", value_parser = parse_api_key)]
    api_keys: Vec<(SiteId, String)>,
    /// Deliver webhooks (signed JWTs, at least once) to this URL (repeatable).
    #[arg(long = "webhook-url", value_name = "URL")]
    webhook_urls: Vec<String>,
    /// Deliver one event type to a URL, as EVENT_TYPE=URL (repeatable; e.g.
    /// wix.crm.inbox.v2.message_message_sent_to_business=http://127.0.0.1:3000/hook): a URL
    /// given only this way receives only the types it subscribed to, as with Wix.
    #[arg(long = "webhook", value_name = "EVENT_TYPE=URL", value_parser = parse_subscription)]
    webhook_subscriptions: Vec<(String, String)>,
    /// RSA private key (PEM) that signs outgoing webhooks. Default: one generated once into
    /// the data directory. `GET /emulator/v1/public-key` serves its public half.
    #[arg(long, value_name = "PEM")]
    signing_key: Option<PathBuf>,
    /// Wix's public key (PEM) for `POST /webhooks/wix`: deliveries from the real Wix are
    /// verified with it and kept as a replica of their site (`instanceId`).
    #[arg(long, value_name = "PEM")]
    wix_public_key: Option<PathBuf>,
    /// Keep everything (the event log, keys, webhook cursors, replica sites) in this
    /// PostgreSQL database instead of --data, so several inboxd processes can serve the
    /// same sites (postgres://user@host:port/db; the schema is created and migrated at
    /// start). Each process delivers webhooks for a URL only while it holds that URL's lease.
    #[arg(long, value_name = "URL", env = "INBOXD_POSTGRES")]
    postgres: Option<String>,
    /// On the file store, write a snapshot of every site's state every N events (off the
    /// write path; 0: only at shutdown), so start-up reads the newest snapshot and replays
    /// only the log after it.
    #[arg(long, value_name = "N", default_value_t = inbox_server::DEFAULT_SNAPSHOT_EVERY)]
    snapshot_every: u64,
    /// Hold at most N sites' states in memory: a site loads on first use (from the newest
    /// snapshot and the log after it) and idle ones are evicted, so memory follows the
    /// sites in use. Default: every site. Ignored with --webhook-url (the outbox needs every
    /// site's state at each event).
    #[arg(long, value_name = "N")]
    max_sites: Option<usize>,
    /// Seconds a client may take to send a request's headers before its connection is
    /// closed.
    #[arg(long, value_name = "SECONDS", default_value_t = inbox_server::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_read_timeout: u64,
    /// The waits before each retry of a failed webhook delivery, after the previous failure
    /// (comma-separated, e.g. 1s,10s,1m). Default: Wix's resend policy, 1m,10m,1h,2h,2h,2h,
    /// 4h,4h,4h,8h,8h,12h. After the last, the delivery is a dead letter.
    #[arg(long, value_name = "DURATIONS", value_parser = parse_schedule)]
    webhook_retries: Option<Schedule>,
    /// How long a webhook receiver has to answer before the delivery counts as failed and
    /// is retried. Wix allows 1250ms; the default is kinder to a test receiver.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = inbox_server::outbox::parse_duration)]
    webhook_timeout: std::time::Duration,
    /// Chaos mode, seeded: deliver each webhook late (up to --webhook-chaos-max-delay), some
    /// twice, and so out of order, as Wix warns they may come.
    #[arg(long, value_name = "SEED")]
    webhook_chaos: Option<u64>,
    /// Chaos mode's longest hold-back of a delivery.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = inbox_server::outbox::parse_duration)]
    webhook_chaos_max_delay: std::time::Duration,
    /// An app that may take access tokens at /oauth2/token, as APP_ID:SECRET (repeatable):
    /// Wix's `AppStrategy({appId, appSecret, instanceId})` gets a token there that acts as the
    /// app on that site (instance).
    #[arg(long = "app", value_name = "APP_ID:SECRET", value_parser = parse_app)]
    apps: Vec<(inbox_core::AppId, String)>,
    /// Serve HTTPS with a self-signed certificate for localhost, 127.0.0.1 and ::1,
    /// generated once into DATA/tls/ (its path is logged: trust it in the client, e.g.
    /// NODE_EXTRA_CA_CERTS=DATA/tls/cert.pem). Wix's SDK speaks only https to a host given
    /// with `apiBaseUrl`.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Chaos mode's chance, in percent, that a delivered webhook is delivered once more.
    #[arg(long, value_name = "PERCENT", default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
    webhook_chaos_duplicates: u8,
}

/// A retry schedule, one value of `--webhook-retries` (a newtype, so that clap takes the
/// whole list as one value).
#[derive(Clone, Debug)]
struct Schedule(Vec<std::time::Duration>);

fn parse_schedule(text: &str) -> Result<Schedule, String> {
    text.split(',')
        .map(inbox_server::outbox::parse_duration)
        .collect::<Result<_, _>>()
        .map(Schedule)
}

fn parse_subscription(text: &str) -> Result<(String, String), String> {
    let Some((event, url)) = text
        .split_once('=')
        .filter(|(e, u)| !e.is_empty() && !u.is_empty())
    else {
        return Err(format!("expected EVENT_TYPE=URL, got {text:?}"));
    };
    inbox_server::outbox::UnknownEventType::check(event).map_err(|e| e.to_string())?;
    Ok((event.to_owned(), url.to_owned()))
}

fn parse_app(text: &str) -> Result<(inbox_core::AppId, String), String> {
    match text.split_once(':') {
        Some((id, secret)) if !secret.is_empty() => uuid::Uuid::parse_str(id.trim())
            .map(|u| (inbox_core::AppId::from_uuid(u), secret.to_owned()))
            .map_err(|_| format!("the app id must be a GUID; got {id:?}")),
        _ => Err(format!("expected APP_ID:SECRET, got {text:?}")),
    }
}

fn parse_api_key(text: &str) -> Result<(SiteId, String), String> {
    match text.split_once(':') {
        Some((site, key)) if !site.is_empty() && !key.is_empty() => {
            Ok((SiteId::new(site), key.to_owned()))
        }
        _ => Err(format!("expected SITE:KEY, got {text:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(s) => serve(*s),
        Cmd::Replay { data, postgres } => replay(&Source::new(data, postgres)),
        Cmd::Export {
            data,
            site,
            postgres,
        } => export(&Source::new(data, postgres), site.map(SiteId::new)),
        Cmd::Webhooks { command } => webhooks(command),
    }
}

fn webhooks(command: WebhooksCmd) -> ExitCode {
    let store = match &command {
        WebhooksCmd::DeadLetters { store } | WebhooksCmd::Redeliver { store, .. } => store,
    };
    let backend: Box<dyn Backend> = match &store.postgres {
        Some(url) => match inbox_store::PostgresLog::connect(url)
            .map_err(|e| e.to_string())
            .and_then(|pg| PostgresBackend::new(std::sync::Arc::new(pg)).map_err(|e| e.to_string()))
        {
            Ok(b) => Box::new(b),
            Err(e) => {
                eprintln!("inboxd webhooks: {e}");
                return ExitCode::FAILURE;
            }
        },
        // Opening the file store takes its lock: a running server refuses this.
        None => match FileBackend::open(&store.data) {
            Ok(b) => Box::new(b),
            Err(e) => {
                eprintln!("inboxd webhooks: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let deliveries = match backend.deliveries() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("inboxd webhooks: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        WebhooksCmd::DeadLetters { store } => {
            match inbox_server::outbox::dead_letters(&*deliveries, &store.url) {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inboxd webhooks: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        WebhooksCmd::Redeliver {
            store,
            event_ids,
            all,
        } => {
            let ids = (!all).then_some(event_ids.as_slice());
            let now = inbox_server::clock::now().as_micros();
            match inbox_server::outbox::redeliver(&*deliveries, &store.url, ids, now) {
                Ok(put_back) => {
                    println!(
                        "{} dead letter(s) of {} put back for delivery: {}",
                        put_back.len(),
                        store.url,
                        put_back.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inboxd webhooks: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(s: Serve) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inboxd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let open = s.api_keys.is_empty();
    let opts = ServeOptions {
        listen: s.listen,
        data: s.data,
        api_keys: s.api_keys,
        webhook_urls: s.webhook_urls,
        webhook_subscriptions: s.webhook_subscriptions,
        signing_key: s.signing_key,
        wix_public_key: s.wix_public_key,
        postgres: s.postgres,
        snapshot_every: (s.snapshot_every > 0).then_some(s.snapshot_every),
        max_sites: s.max_sites,
        header_read_timeout: std::time::Duration::from_secs(s.header_read_timeout.max(1)),
        apps: s.apps,
        tls: match (s.tls, s.tls_cert, s.tls_key) {
            (_, Some(cert), Some(key)) => Some(inbox_server::tls::TlsSource::Files { cert, key }),
            (true, _, _) => Some(inbox_server::tls::TlsSource::SelfSigned),
            _ => None,
        },
        delivery: inbox_server::outbox::DeliveryPolicy {
            retries: s.webhook_retries.map_or_else(
                || inbox_server::outbox::WIX_RETRY_SCHEDULE.to_vec(),
                |Schedule(s)| s,
            ),
            chaos: s.webhook_chaos.map(|seed| inbox_server::outbox::Chaos {
                seed,
                max_delay: s.webhook_chaos_max_delay,
                duplicate_percent: s.webhook_chaos_duplicates,
            }),
            timeout: s.webhook_timeout.max(std::time::Duration::from_millis(1)),
        },
    };
    runtime.block_on(async move {
        let running = match inbox_server::start(opts.clone()).await {
            Ok(r) => r,
            Err(e @ StartError::OpenOnNetwork(_)) => {
                eprintln!("inboxd: {e}");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("inboxd: {e}");
                return ExitCode::FAILURE;
            }
        };
        if running.generated_signing_key {
            tracing::info!(path = %opts.data.join("signing-key.pem").display(), "generated a webhook signing key");
        }
        if open {
            tracing::warn!(
                "no --api-key given: accepting any key, on loopback only ({})",
                running.addr
            );
        }
        tracing::info!(
            snapshot = running.opened.snapshot_position,
            events = running.opened.events,
            sites = running.opened.sites,
            torn_tail_cut = running.opened.torn_tail,
            webhook_urls = opts.webhook_urls.len(),
            webhook_subscriptions = opts.webhook_subscriptions.len(),
            "opened the store"
        );
        if let Some((cert, generated)) = &running.tls_cert {
            tracing::info!(
                cert = %cert.display(),
                generated,
                "serving HTTPS: clients must trust this certificate (Node: NODE_EXTRA_CA_CERTS)"
            );
        }
        let scheme = if running.tls_cert.is_some() { "https" } else { "http" };
        tracing::info!("inboxd listening on {scheme}://{}", running.addr);
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Where `replay` and `export` read: a data directory, or a PostgreSQL database.
struct Source {
    data: PathBuf,
    postgres: Option<String>,
}

impl Source {
    fn new(data: PathBuf, postgres: Option<String>) -> Self {
        Source { data, postgres }
    }
}

fn open_offline(source: &Source, progress: bool) -> Result<Engine, ExitCode> {
    let data = &source.data;
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("inboxd: {e}");
        ExitCode::FAILURE
    };
    let backend: Box<dyn Backend> = match &source.postgres {
        Some(url) => {
            let pg = inbox_store::PostgresLog::connect(url).map_err(|e| failed(&e))?;
            Box::new(PostgresBackend::new(std::sync::Arc::new(pg)).map_err(|e| failed(&e))?)
        }
        None => {
            if !data.join("log").exists() {
                eprintln!("inboxd: {} has no event log", data.display());
                return Err(ExitCode::FAILURE);
            }
            Box::new(FileBackend::open(data).map_err(|e| failed(&e))?)
        }
    };
    let key_path = data.join("cursor-key");
    let cursor_key: [u8; 16] = std::fs::read(&key_path)
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 16]);
    let bar = if progress {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = |done: u64, total: u64| {
        if done == 1 {
            bar.set_length(total);
        }
        if done.is_multiple_of(4096) || done == total {
            bar.set_position(done);
        }
    };
    let result = Engine::open(&*backend, config(cursor_key), true, &mut progress);
    bar.finish_and_clear();
    result.map(|(engine, _)| engine).map_err(|e| failed(&e))
}

fn replay(source: &Source) -> ExitCode {
    let started = Instant::now();
    let engine = match open_offline(source, true) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let elapsed = started.elapsed();
    let events = match inbox_store::EventLog::last_position(&**engine.core().log()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("inboxd replay: the log cannot be read: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "replayed {events} events in {:.2} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    for site in engine.site_ids() {
        let replica = engine.is_replica(&site).unwrap_or(false);
        let read = engine.read(&site, |inbox| {
            println!(
                "site {site}{}: {} conversations, {} messages, {} contacts, {} anomalies",
                if replica { " (replica)" } else { "" },
                inbox.live_conversations().count(),
                inbox.message_count(),
                inbox.contacts().len(),
                inbox.anomalies().count(),
            );
        });
        if let Err(e) = read {
            eprintln!("inboxd replay: site {site}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn export(source: &Source, only: Option<SiteId>) -> ExitCode {
    let engine = match open_offline(source, false) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for site in engine.site_ids() {
        if only.as_ref().is_some_and(|o| o != &site) {
            continue;
        }
        let read = engine.read(&site, |inbox| -> std::io::Result<()> {
            for id in inbox.live_conversations() {
                let Ok(view) = inbox.conversation(id) else {
                    continue;
                };
                let line = serde_json::json!({
                    "type": "conversation",
                    "site": site.0,
                    "conversation": Conversation::from_core(&view),
                });
                writeln!(out, "{line}")?;
                for m in inbox.messages_of(id) {
                    let line = serde_json::json!({
                        "type": "message",
                        "site": site.0,
                        "conversationId": id.to_string(),
                        "message": Message::from_core(m),
                    });
                    writeln!(out, "{line}")?;
                }
            }
            Ok(())
        });
        let written = match read {
            Ok(w) => w,
            Err(e) => {
                eprintln!("inboxd export: site {site}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("inboxd: writing the export: {e}");
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
