//! The real `inboxd` binary as child processes, and what drives and checks them: a webhook
//! receiver, clients that send and merge under load and record every acknowledgement, and
//! the checks that everything acknowledged is listed once and delivered. Shared by the
//! crash test (file store) and the PostgreSQL test (two processes on one database).
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_inboxd");
/// Client tasks per load phase.
pub const CLIENTS: u64 = 8;
/// Kill and restart cycles.
pub const CYCLES: usize = 4;
/// The sites the clients write to (message ids are unique per site only).
pub const SITES: [&str; 2] = ["crash-site-a", "crash-site-b"];
/// How long any awaited condition may take (generous: CI has two cores).
pub const BOUND: Duration = Duration::from_secs(120);
/// How often a condition is looked at.
pub const POLL: Duration = Duration::from_millis(20);
/// `eventType` of a message a participant sent.
pub const SENT_TO_BUSINESS: &str = "wix.crm.inbox.v2.message_message_sent_to_business";
/// `eventType` of a merge of conversations.
pub const CONVERSATIONS_MERGED: &str = "wix.crm.inbox.v2.conversation_conversations_merged";

/// `(site, message id)`: message ids are unique within a site.
pub type Key = (String, String);

// ------------------------------------------------------------------------------------------
// a deterministic pseudo-random source

/// xorshift64*: the kill points, the lengths of the clients' runs and the visitor ids.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn guid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

// ------------------------------------------------------------------------------------------
// the webhook receiver

/// One delivery, decoded from its JWT.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub site: String,
    pub event_type: String,
    pub event_id: String,
    pub entity_id: String,
    /// `actionEvent.body.message.id`, for message events.
    pub message_id: Option<String>,
}

#[derive(Default)]
pub struct Inbound {
    pub deliveries: Vec<Delivery>,
    pub undecodable: Vec<String>,
    /// Deliveries answered 503 while the receiver was "down".
    pub refused: u64,
}

pub struct Receiver {
    pub url: String,
    pub up: Arc<AtomicBool>,
    pub inbound: Arc<Mutex<Inbound>>,
}

type HookState = (Arc<AtomicBool>, Arc<Mutex<Inbound>>);

impl Receiver {
    /// Starts a receiver on a free port of the loopback interface.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let inbound = Arc::new(Mutex::new(Inbound::default()));
        let state: HookState = (up.clone(), inbound.clone());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            up,
            inbound,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&Inbound) -> R) -> R {
        f(&self.inbound.lock().unwrap())
    }

    /// Message keys delivered at least once (message events only).
    pub fn delivered_messages(&self) -> HashSet<Key> {
        self.with(|i| {
            i.deliveries
                .iter()
                .filter(|d| d.event_type == SENT_TO_BUSINESS)
                .filter_map(|d| Some((d.site.clone(), d.message_id.clone()?)))
                .collect()
        })
    }
}

pub async fn hook(State((up, inbound)): State<HookState>, body: String) -> StatusCode {
    let mut inbound = inbound
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !up.load(Ordering::SeqCst) {
        inbound.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match decode(&body) {
        Ok(d) => inbound.deliveries.push(d),
        Err(e) => inbound.undecodable.push(format!("{e}: {body}")),
    }
    StatusCode::OK
}

/// The JWT's payload is `{"data": A}`, A a JSON string `{"instanceId", "eventType", "data":
/// B}`, B a JSON string `{"id", "entityId", "actionEvent": {"body": ...}}`.
pub fn decode(jwt: &str) -> Result<Delivery, String> {
    let payload = jwt.trim().split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("payload is not base64url: {e}"))?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let nested = |v: &Value, what: &str| -> Result<Value, String> {
        let text = v["data"]
            .as_str()
            .ok_or_else(|| format!("{what}: no data string"))?;
        serde_json::from_str(text).map_err(|e| format!("{what}: {e}"))
    };
    let a = nested(&claims, "layer A")?;
    let b = nested(&a, "layer B")?;
    let text = |v: &Value, what: &str| -> Result<String, String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no {what}"))
    };
    Ok(Delivery {
        site: text(&a["instanceId"], "instanceId")?,
        event_type: text(&a["eventType"], "eventType")?,
        event_id: text(&b["id"], "id")?,
        entity_id: text(&b["entityId"], "entityId")?,
        message_id: b["actionEvent"]["body"]["message"]["id"]
            .as_str()
            .map(str::to_owned),
    })
}

// ------------------------------------------------------------------------------------------
// the server as a child process

/// Events between two snapshots of the file-store servers these tests start.
pub const SNAPSHOT_EVERY: u64 = 50;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Reads `stderr` until the child's end; joined to read its last lines.
    pub reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `inboxd serve` on a port the kernel picks, and returns once it is listening
    /// (the address is read from its log line) and `/healthz` answers. It writes a snapshot
    /// every [`SNAPSHOT_EVERY`] events, so kills land before, during and after snapshots,
    /// and restarts start from one with webhooks still pending.
    pub async fn start(data: &Path, hook_url: &str) -> Server {
        let mut args: Vec<std::ffi::OsString> = vec!["--data".into(), data.into()];
        args.extend([
            "--webhook-url".into(),
            hook_url.into(),
            "--webhook-retries".into(),
            vec!["20ms"; 500].join(",").into(),
        ]);
        args.extend(["--snapshot-every".into(), SNAPSHOT_EVERY.to_string().into()]);
        Server::start_with(&args).await
    }

    /// Starts `inboxd serve --listen 127.0.0.1:0` with `args` after it.
    pub async fn start_with(args: &[std::ffi::OsString]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let lines = stderr.clone();
        // Drains standard error for as long as the child lives (a full pipe would block it).
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let addr: String = line[at + "listening on http://".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                        .collect();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(BOUND))
            .await
            .unwrap();
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
            reader: Some(reader),
        };
        let Ok(addr) = addr else {
            let status = server.child.try_wait();
            panic!(
                "inboxd did not say where it listens ({status:?}); its log:\n{}",
                server.log()
            );
        };
        server.base = format!("http://{addr}");
        let http = client();
        let started = Instant::now();
        loop {
            let health = http.get(format!("{}/healthz", server.base)).send().await;
            if let Ok(r) = health
                && r.status().is_success()
            {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["status"], "ok");
                break;
            }
            assert!(
                started.elapsed() < BOUND,
                "inboxd at {} never became healthy; its log:\n{}",
                server.base,
                server.log()
            );
            tokio::time::sleep(POLL).await;
        }
        server
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Whether start-up reported cutting a torn tail off the log.
    pub fn cut_torn_tail(&self) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("torn_tail_cut=true"))
    }

    /// Whether start-up began from a snapshot (its "opened the store" line names one).
    pub fn started_from_snapshot(&self) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("opened the store") && l.contains("snapshot="))
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "inboxd exited on its own with {status}; its log:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL, and reap it (which also releases the log's lock).
    pub fn kill9(mut self) {
        self.assert_running();
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "inboxd was not killed: {status}");
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub async fn terminate(mut self) {
        self.assert_running();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < BOUND,
                "inboxd did not stop within {BOUND:?} of SIGTERM; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        assert!(
            status.success(),
            "inboxd stopped with {status} after SIGTERM; its log:\n{}",
            self.log()
        );
        let log = self.log();
        assert!(log.contains("stopped"), "no 'stopped' line:\n{log}");
    }
}

/// A server left running by a failing assertion is killed, not orphaned.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// HTTP calls

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Why a call did not answer 200.
#[derive(Debug)]
pub enum Failure {
    /// No answer: the connection failed (expected once the server is killed).
    Transport(String),
    /// An answer other than 200 (never expected).
    Status(String),
}

pub async fn call(
    http: &reqwest::Client,
    base: &str,
    site: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Failure> {
    let url = format!("{base}{path}");
    let request = match body {
        Some(b) => http.post(&url).json(b),
        None => http.get(&url),
    }
    .header("wix-site-id", site);
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let status = response.status();
    // An answer whose body is cut off is not an acknowledgement either.
    let text = response
        .text()
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?;
    if !status.is_success() {
        return Err(Failure::Status(format!("{path}: {status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| Failure::Status(format!("{path}: {e}: {text}")))
}

/// A read that must succeed.
pub async fn get(http: &reqwest::Client, base: &str, site: &str, path: &str) -> Value {
    call(http, base, site, path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
}

pub fn text_of(v: &Value, what: &str) -> Result<String, Failure> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::Status(format!("no {what}")))
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// the load

/// What the clients of one load phase were answered.
#[derive(Default)]
pub struct Tally {
    /// Acknowledged messages: key -> the text sent.
    pub acked: Mutex<HashMap<Key, String>>,
    pub count: AtomicU64,
    /// Every conversation id answered, with its site.
    pub conversations: Mutex<HashSet<(String, String)>>,
    /// Acknowledged merges: (site, the surviving conversation).
    pub merges: Mutex<Vec<(String, String)>>,
    /// Answers other than 200.
    pub unexpected: Mutex<Vec<String>>,
    /// Calls that got no answer (the server was killed).
    pub unanswered: Mutex<Vec<String>>,
}

pub struct Client {
    pub http: reqwest::Client,
    /// The servers; calls take turns among them (one server: every call goes to it).
    pub bases: Vec<String>,
    pub turn: std::sync::atomic::AtomicUsize,
    pub site: &'static str,
    pub name: String,
    pub rng: Rng,
    pub tally: Arc<Tally>,
    pub stop: Arc<AtomicBool>,
    pub sent: u64,
}

impl Client {
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let base = &self.bases[turn % self.bases.len()];
        call(&self.http, base, self.site, path, Some(body)).await
    }

    pub async fn conversation(&self, participant: Value) -> Result<String, Failure> {
        let r = self
            .post(
                "/inbox/v2/conversations",
                &json!({ "participantId": participant }),
            )
            .await?;
        let id = text_of(&r["conversation"]["id"], "conversation.id")?;
        self.tally
            .conversations
            .lock()
            .unwrap()
            .insert((self.site.to_owned(), id.clone()));
        Ok(id)
    }

    pub async fn send(&mut self, conversation: &str) -> Result<(), Failure> {
        self.sent += 1;
        let text = format!("{} message {}", self.name, self.sent);
        let r = self
            .post(
                "/inbox/v2/messages",
                &json!({
                    "conversationId": conversation,
                    "message": {
                        "direction": "PARTICIPANT_TO_BUSINESS",
                        "content": {"basic": {"items": [{"text": text}]}},
                    },
                    "sendAs": "PARTICIPANT",
                }),
            )
            .await?;
        let id = text_of(&r["message"]["id"], "message.id")?;
        let previous = self
            .tally
            .acked
            .lock()
            .unwrap()
            .insert((self.site.to_owned(), id.clone()), text);
        if previous.is_some() {
            return Err(Failure::Status(format!(
                "message id {id} acknowledged twice in {}",
                self.site
            )));
        }
        self.tally.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// A visitor writes; sometimes it turns out to be a contact that has a conversation
    /// already, and the two merge. Runs until a call fails or `stop`.
    pub async fn run(mut self) {
        let (list, why) = match self.work().await {
            Ok(()) => return,
            Err(Failure::Status(why)) => (&self.tally.unexpected, why),
            Err(Failure::Transport(why)) => (&self.tally.unanswered, why),
        };
        list.lock().unwrap().push(format!("{}: {why}", self.name));
    }

    pub async fn work(&mut self) -> Result<(), Failure> {
        while !self.stop.load(Ordering::SeqCst) {
            let visitor = self.rng.guid();
            let conversation = self
                .conversation(json!({ "anonymousVisitorId": visitor }))
                .await?;
            for _ in 0..self.rng.range(3, 15) {
                if self.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                self.send(&conversation).await?;
            }
            if self.rng.range(0, 2) == 0 {
                let name = format!("{} contact {}", self.name, self.sent);
                let r = self
                    .post(
                        "/contacts/v4/contacts",
                        &json!({"info": {"name": {"first": name}}, "allowDuplicates": true}),
                    )
                    .await?;
                let contact = text_of(&r["contact"]["id"], "contact.id")?;
                let theirs = self.conversation(json!({ "contactId": contact })).await?;
                self.send(&theirs).await?;
                let r = self
                    .post(
                        &format!("/emulator/v1/visitors/{visitor}/identify"),
                        &json!({ "contactId": contact }),
                    )
                    .await?;
                let survivor = text_of(&r["conversation"]["id"], "conversation.id")?;
                self.tally
                    .conversations
                    .lock()
                    .unwrap()
                    .insert((self.site.to_owned(), survivor.clone()));
                self.tally
                    .merges
                    .lock()
                    .unwrap()
                    .push((self.site.to_owned(), survivor));
                // The merged-away id still takes messages: they land in the survivor.
                self.send(&conversation).await?;
            }
        }
        Ok(())
    }
}

/// How a load phase ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    /// SIGKILL the server under the load.
    Kill,
    /// SIGTERM the server under the load (it must exit 0).
    Terminate,
    /// Stop the clients and hand the server back.
    Keep,
}

/// A load phase: `CLIENTS` clients against `servers` until `enough` acknowledged sends,
/// then `end` for the first server. Each client's calls take turns among the servers, so
/// with two, every conversation is written through both. Returns what was acknowledged,
/// and the servers still running.
pub async fn load(
    servers: Vec<Server>,
    rng: &mut Rng,
    phase: &str,
    enough: u64,
    end: End,
) -> (Tally, Vec<Server>) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let http = client();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let logs = |servers: &[Server]| -> String {
        servers
            .iter()
            .map(|s| format!("--- {}:\n{}", s.base, s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let c = Client {
                http: http.clone(),
                bases: bases.clone(),
                turn: std::sync::atomic::AtomicUsize::new(i as usize),
                site: SITES[(i % SITES.len() as u64) as usize],
                name: format!("{phase} client {i}"),
                rng: Rng::new(rng.next()),
                tally: tally.clone(),
                stop: stop.clone(),
                sent: 0,
            };
            tokio::spawn(c.run())
        })
        .collect();
    let started = Instant::now();
    while tally.count.load(Ordering::SeqCst) < enough {
        assert!(
            !tasks.iter().all(tokio::task::JoinHandle::is_finished),
            "{phase}: every client stopped after {} acknowledged sends: {:?} {:?}; the \
             servers' logs:\n{}",
            tally.count.load(Ordering::SeqCst),
            tally.unexpected.lock().unwrap(),
            tally.unanswered.lock().unwrap(),
            logs(&servers)
        );
        assert!(
            started.elapsed() < BOUND,
            "{phase}: only {} acknowledged sends in {BOUND:?}",
            tally.count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(POLL).await;
    }
    // Under load: requests are in flight as the server dies or stops.
    let mut servers = servers;
    match end {
        End::Kill => servers.remove(0).kill9(),
        End::Terminate => servers.remove(0).terminate().await,
        End::Keep => stop.store(true, Ordering::SeqCst),
    }
    for t in tasks {
        tokio::time::timeout(BOUND, t)
            .await
            .expect("a client hung")
            .unwrap();
    }
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "{phase}: answers other than 200 while the server was up: {unexpected:#?}{}",
        logs(&servers)
    );
    (Arc::into_inner(tally).unwrap(), servers)
}

// ------------------------------------------------------------------------------------------
// checks

/// Lists every conversation through the REST API and checks that every message is listed
/// exactly once, every acknowledged one is there, and each conversation's sequences rise
/// strictly. Returns the number of messages.
pub async fn check_listed(
    base: &str,
    acked: &HashMap<Key, String>,
    conversations: &HashSet<(String, String)>,
) -> usize {
    let http = client();
    let mut roots: HashSet<(String, String)> = HashSet::new();
    for (site, id) in conversations {
        let c = get(&http, base, site, &format!("/inbox/v2/conversations/{id}")).await;
        roots.insert((
            site.clone(),
            c["conversation"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    let mut seen: HashMap<Key, u32> = HashMap::new();
    for (site, root) in &roots {
        let mut cursor: Option<String> = None;
        let mut last_sequence: Option<i64> = None;
        loop {
            let mut path = format!(
                "/inbox/v2/messages?conversationId={root}&paging.limit=100&sorting.order=ASC"
            );
            if let Some(c) = &cursor {
                path.push_str("&paging.cursor=");
                path.push_str(&encode(c));
            }
            let page = get(&http, base, site, &path).await;
            for m in page["messages"].as_array().unwrap() {
                let id = m["id"].as_str().unwrap().to_owned();
                // In ascending order, sequences rise strictly (invariant: a total order).
                let sequence: i64 = m["sequence"].as_str().unwrap().parse().unwrap();
                assert!(
                    last_sequence.is_none_or(|last| last < sequence),
                    "{site}/{root}: sequence {sequence} listed after {last_sequence:?}"
                );
                last_sequence = Some(sequence);
                *seen.entry((site.clone(), id)).or_default() += 1;
            }
            match page["pagingMetadata"]["cursors"]["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
    }
    let repeated: BTreeMap<&Key, u32> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (k, *n))
        .collect();
    assert!(
        repeated.is_empty(),
        "messages listed more than once: {repeated:?}"
    );
    let mut missing: Vec<&Key> = acked.keys().filter(|k| !seen.contains_key(*k)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not listed after the restart: {missing:?}",
        missing.len(),
        acked.len()
    );
    seen.len()
}

/// Waits (bounded) until the receiver has a delivery for every key.
pub async fn await_deliveries(receiver: &Receiver, keys: &HashMap<Key, String>, server_log: &str) {
    let started = Instant::now();
    loop {
        let delivered = receiver.delivered_messages();
        let mut missing: Vec<&Key> = keys.keys().filter(|k| !delivered.contains(*k)).collect();
        if missing.is_empty() {
            return;
        }
        if started.elapsed() > BOUND {
            missing.sort();
            panic!(
                "{} of {} acknowledged messages were never delivered to the webhook receiver \
                 (waited {BOUND:?}): {missing:?}; the server's log:\n{server_log}",
                missing.len(),
                keys.len()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (bounded) until every merge's surviving conversation has been announced.
pub async fn await_merges(receiver: &Receiver, merges: &[(String, String)]) {
    let targets: HashSet<(String, String)> = merges.iter().cloned().collect();
    let started = Instant::now();
    loop {
        let announced: HashSet<(String, String)> = receiver.with(|i| {
            i.deliveries
                .iter()
                .filter(|d| d.event_type == CONVERSATIONS_MERGED)
                .map(|d| (d.site.clone(), d.entity_id.clone()))
                .collect()
        });
        let missing: Vec<_> = targets.difference(&announced).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < BOUND,
            "acknowledged merges never announced: {missing:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `inboxd export`: every message line, counted by key, with its text.
pub fn export(data: &Path) -> HashMap<Key, (u32, String)> {
    export_from(&["--data".into(), data.into()])
}

/// `inboxd export` with `args` (`--data DIR` or `--postgres URL`).
pub fn export_from(args: &[std::ffi::OsString]) -> HashMap<Key, (u32, String)> {
    let out = Command::new(BIN).arg("export").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "inboxd export failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut messages: HashMap<Key, (u32, String)> = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["type"] != "message" {
            continue;
        }
        let key = (
            v["site"].as_str().unwrap().to_owned(),
            v["message"]["id"].as_str().unwrap().to_owned(),
        );
        let text = v["message"]["content"]["basic"]["items"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let entry = messages.entry(key).or_insert((0, text));
        entry.0 += 1;
    }
    messages
}

/// `inboxd replay`: its summary, `site -> messages`.
pub fn replay(data: &Path) -> (String, BTreeMap<String, u64>) {
    let out = Command::new(BIN)
        .args(["replay", "--data"])
        .arg(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "inboxd replay failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("replayed "),
        "no summary from replay: {stdout}"
    );
    let mut per_site = BTreeMap::new();
    for line in stdout.lines() {
        // "site S: C conversations, M messages, K contacts, A anomalies"
        let Some(rest) = line.strip_prefix("site ") else {
            continue;
        };
        let (site, counts) = rest.split_once(": ").unwrap();
        let messages = counts
            .split(", ")
            .find_map(|part| part.strip_suffix(" messages"))
            .unwrap()
            .parse()
            .unwrap();
        per_site.insert(site.to_owned(), messages);
    }
    (stdout, per_site)
}
