//! Shared helpers for the server's end-to-end tests: a server started in-process on a
//! loopback port, an HTTP client speaking the Wix headers, a webhook receiver that can fail
//! its first requests, and decoding of the webhook JWTs.
//!
//! Every test file that uses it says `mod common;`; not every file uses every helper.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inbox_core::SiteId;
use inbox_server::{Running, ServeOptions};
use serde_json::{Value, json};

/// How long a test waits for something asynchronous (a webhook) before failing.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// How often it looks.
pub const WAIT_STEP: Duration = Duration::from_millis(20);

/// The retry schedule tests deliver with: a retry every 20 ms for 10 s (Wix's waits minutes
/// to hours, for two days), so a receiver that is down for a test's restart loses nothing.
pub fn test_retries() -> Vec<Duration> {
    vec![Duration::from_millis(20); 500]
}

/// Options for a server on `127.0.0.1:0` over `data`, no keys, no webhooks, failed
/// deliveries retried within milliseconds ([`test_retries`]).
pub fn options(data: &Path) -> ServeOptions {
    let mut o = ServeOptions::new("127.0.0.1:0".parse().unwrap(), data.to_owned());
    o.delivery.retries = test_retries();
    o
}

/// `(site, key)` pairs as `ServeOptions` takes them.
pub fn keys(pairs: &[(&str, &str)]) -> Vec<(SiteId, String)> {
    pairs
        .iter()
        .map(|(s, k)| (SiteId::new(*s), (*k).to_owned()))
        .collect()
}

/// Starts a server, panicking with the reason if it does not start.
pub async fn start(opts: ServeOptions) -> Running {
    match inbox_server::start(opts).await {
        Ok(r) => r,
        Err(e) => panic!("the server did not start: {e}"),
    }
}

/// A server with its data directory (deleted when dropped).
pub struct TestServer {
    /// The running server (`None` while stopped).
    pub running: Option<Running>,
    /// The data directory.
    pub dir: tempfile::TempDir,
    /// The options it was started with (the port is replaced by the real one).
    pub opts: ServeOptions,
}

impl TestServer {
    /// Starts a server on a fresh data directory; `configure` adjusts the options.
    pub async fn start_with(configure: impl FnOnce(&mut ServeOptions)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        configure(&mut opts);
        let running = start(opts.clone()).await;
        TestServer {
            running: Some(running),
            dir,
            opts,
        }
    }

    /// Starts a server with the default options.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().addr)
    }

    /// A client without an API key, for site `site` (the no-key server's tenancy).
    pub fn api(&self, site: &str) -> Api {
        Api::new(&self.base()).site(site)
    }

    /// Shuts the server down (graceful: in-flight requests finish, workers stop).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Shuts down and starts again on the same data directory and options (a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(start(self.opts.clone()).await);
    }
}

/// An HTTP answer: status and body (JSON when it parses, else a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The body.
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// Asserts a 200 and returns the body.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status, 200,
            "expected 200, got {}: {}",
            self.status, self.text
        );
        self.body
    }

    /// Asserts an application error: status, Wix shape, and code.
    #[track_caller]
    pub fn app_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {}",
            self.text
        );
        assert_wix_app_error(&self.body, code);
    }

    /// Asserts a validation error: status 400, Wix shape, and (when given) that a violation
    /// names `field`.
    #[track_caller]
    pub fn validation_error(&self, field: Option<&str>) {
        assert_eq!(self.status, 400, "expected 400, got {}", self.text);
        assert_wix_validation_error(&self.body, field);
    }
}

/// Asserts `body` is `{"message", "details": {"applicationError": {"code": code, ...}}}`.
#[track_caller]
pub fn assert_wix_app_error(body: &Value, code: &str) {
    let message = body["message"].as_str();
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    let app = &body["details"]["applicationError"];
    assert!(app.is_object(), "no details.applicationError in {body}");
    assert_eq!(app["code"], code, "wrong code in {body}");
    assert!(app["description"].is_string(), "no description in {body}");
    assert!(
        body["details"].get("validationError").is_none(),
        "both kinds of details in {body}"
    );
}

/// Asserts `body` is `{"message", "details": {"validationError": {"fieldViolations": [..]}}}`,
/// one of them naming `field` when given.
#[track_caller]
pub fn assert_wix_validation_error(body: &Value, field: Option<&str>) {
    let message = body["message"].as_str();
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    let violations = body["details"]["validationError"]["fieldViolations"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.validationError.fieldViolations in {body}"));
    assert!(!violations.is_empty(), "no field violation in {body}");
    for v in violations {
        assert!(v["field"].is_string(), "a violation without field: {body}");
        assert!(
            v["description"].is_string(),
            "a violation without description: {body}"
        );
        assert!(
            v["violatedRule"].is_string(),
            "a violation without violatedRule: {body}"
        );
    }
    if let Some(field) = field {
        assert!(
            violations.iter().any(|v| v["field"] == field),
            "no violation of {field:?} in {body}"
        );
    }
    assert!(
        body["details"].get("applicationError").is_none(),
        "both kinds of details in {body}"
    );
}

/// A client that sends Wix's headers: `Authorization: <key>` and `wix-site-id: <site>`.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    client: reqwest::Client,
    key: Option<String>,
    site: Option<String>,
}

impl Api {
    /// A client for `base` with no headers.
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            key: None,
            site: None,
        }
    }

    /// The same, sending `wix-site-id: site`.
    pub fn site(&self, site: &str) -> Api {
        Api {
            site: Some(site.to_owned()),
            ..self.clone()
        }
    }

    /// The same, sending `Authorization: key`.
    pub fn key(&self, key: &str) -> Api {
        Api {
            key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    /// The same, without `wix-site-id`.
    pub fn no_site(&self) -> Api {
        Api {
            site: None,
            ..self.clone()
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.header("authorization", k);
        }
        if let Some(s) = &self.site {
            r = r.header("wix-site-id", s);
        }
        r
    }

    async fn answer(r: reqwest::RequestBuilder) -> Answer {
        let response = r.send().await.expect("the request was not answered");
        let status = response.status().as_u16();
        let text = response.text().await.expect("the body could not be read");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Answer { status, body, text }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        Self::answer(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// `POST path` with raw bytes and a content type.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> Answer {
        Self::answer(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        Self::answer(self.request(reqwest::Method::PATCH, path).json(body)).await
    }

    /// Any method, no body.
    pub async fn send(&self, method: reqwest::Method, path: &str) -> Answer {
        Self::answer(self.request(method, path)).await
    }

    // ---- Wix calls, answering the parts tests need ----

    /// Create Contact with a first name and one email; answers the contact.
    pub async fn create_contact(&self, first: &str, email: &str) -> Value {
        self.post(
            "/contacts/v4/contacts",
            &json!({"info": {
                "name": {"first": first},
                "emails": {"items": [{"email": email, "tag": "MAIN", "primary": true}]},
            }}),
        )
        .await
        .ok()["contact"]
            .clone()
    }

    /// Get Contact.
    pub async fn contact(&self, id: &str) -> Answer {
        self.get(&format!("/contacts/v4/contacts/{id}")).await
    }

    /// Get Or Create Conversation for `participantId: {kind: id}`; answers the whole body.
    pub async fn get_or_create(&self, kind: &str, id: &str) -> Value {
        self.post(
            "/inbox/v2/conversations",
            &json!({"participantId": {kind: id}}),
        )
        .await
        .ok()
    }

    /// The live conversation id for `participantId: {kind: id}`.
    pub async fn conversation_of(&self, kind: &str, id: &str) -> String {
        str_of(&self.get_or_create(kind, id).await["conversation"]["id"])
    }

    /// Get Conversation.
    pub async fn conversation(&self, id: &str) -> Answer {
        self.get(&format!("/inbox/v2/conversations/{id}")).await
    }

    /// Send Message of one text item; answers the stored message.
    pub async fn send_text(
        &self,
        conversation: &str,
        text: &str,
        direction: &str,
        send_as: &str,
    ) -> Value {
        self.post(
            "/inbox/v2/messages",
            &json!({
                "conversationId": conversation,
                "sendAs": send_as,
                "message": {
                    "direction": direction,
                    "content": {"basic": {"items": [{"text": text}]}},
                },
            }),
        )
        .await
        .ok()["message"]
            .clone()
    }

    /// A participant writes to the business.
    pub async fn participant_says(&self, conversation: &str, text: &str) -> Value {
        self.send_text(conversation, text, "PARTICIPANT_TO_BUSINESS", "PARTICIPANT")
            .await
    }

    /// The business answers.
    pub async fn business_says(&self, conversation: &str, text: &str) -> Value {
        self.send_text(conversation, text, "BUSINESS_TO_PARTICIPANT", "CALLER")
            .await
    }

    /// One page of List Messages with dotted parameters (`extra` is appended as is).
    pub async fn page(&self, conversation: &str, extra: &str) -> Answer {
        self.get(&format!(
            "/inbox/v2/messages?conversationId={conversation}{extra}"
        ))
        .await
    }

    /// One page of List Messages the SDK's way: `.r=<base64url JSON>`.
    pub async fn page_r(&self, request: &Value) -> Answer {
        let r = URL_SAFE_NO_PAD.encode(request.to_string());
        self.get(&format!("/inbox/v2/messages?.r={r}")).await
    }

    /// Every message of a conversation, paging with `limit` in `order`.
    pub async fn all_messages(&self, conversation: &str, order: &str, limit: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut extra =
                format!("&paging.limit={limit}&sorting.fieldName=sequence&sorting.order={order}");
            if let Some(c) = &cursor {
                extra.push_str(&format!("&paging.cursor={}", urlencode(c)));
            }
            let page = self.page(conversation, &extra).await.ok();
            out.extend(page["messages"].as_array().unwrap().iter().cloned());
            match page["pagingMetadata"]["cursors"]["next"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("paging never ended");
    }
}

/// A JSON string value as a `String` (panics on anything else).
#[track_caller]
pub fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

/// The first text item of a basic message.
pub fn text_of(message: &Value) -> String {
    str_of(&message["content"]["basic"]["items"][0]["text"])
}

/// A message's `sequence` (an int64 carried as a string).
#[track_caller]
pub fn sequence_of(message: &Value) -> i64 {
    match &message["sequence"] {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        other => panic!("no sequence in {other}"),
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh GUID as text.
pub fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits, up to [`WAIT_LIMIT`], until `condition` holds, looking every [`WAIT_STEP`];
/// panics naming `what` if it never does.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if condition() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {WAIT_LIMIT:?} and still not: {what}");
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

/// [`eventually`] for an asynchronous condition.
pub async fn eventually_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {WAIT_LIMIT:?} and still not: {what}");
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

// ------------------------------------------------------------------------------------------
// A webhook receiver

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body (a JWT).
    pub body: String,
    /// Whether it was answered 2xx (acknowledged) or 500.
    pub acknowledged: bool,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    fail_next: AtomicU64,
    /// Every delivery of this event type is refused (an app with no handler for it).
    refused_type: Mutex<Option<String>>,
    /// The next N requests are never answered (a receiver that hangs).
    stall_next: AtomicU64,
}

/// An axum server on `127.0.0.1:0` that records every POST to `/hook` and fails the next N.
pub struct Receiver {
    /// `http://127.0.0.1:port/hook`.
    pub url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts one that answers 500 to its first `fail_first` requests, then 200.
    pub async fn start(fail_first: u64) -> Receiver {
        use axum::extract::State;
        use axum::http::StatusCode;
        let state = Arc::new(ReceiverState::default());
        state.fail_next.store(fail_first, Ordering::SeqCst);
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State(s): State<Arc<ReceiverState>>, body: String| async move {
                        let stall = s
                            .stall_next
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if stall {
                            s.got.lock().unwrap().push(Received {
                                body: body.clone(),
                                acknowledged: false,
                            });
                            // Never answers: the sender's timeout is what ends the request.
                            std::future::pending::<()>().await;
                        }
                        let refused = s.refused_type.lock().unwrap().clone();
                        let fail = refused.is_some_and(|t| decode_jwt(&body).event_type == t)
                            || s.fail_next
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        s.got.lock().unwrap().push(Received {
                            body,
                            acknowledged: !fail,
                        });
                        if fail {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        }
                    },
                ),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, state, task }
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// The acknowledged deliveries, decoded.
    pub fn acknowledged(&self) -> Vec<WebhookEvent> {
        self.received()
            .iter()
            .filter(|r| r.acknowledged)
            .map(|r| decode_jwt(&r.body))
            .collect()
    }

    /// From now on, fail the next `n` requests.
    pub fn fail_next(&self, n: u64) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// From now on, never answer the next `n` requests.
    pub fn stall_next(&self, n: u64) {
        self.state.stall_next.store(n, Ordering::SeqCst);
    }

    /// From now on, refuse every delivery of `event_type` (`None`: refuse no type).
    pub fn refuse_type(&self, event_type: Option<&str>) {
        *self.state.refused_type.lock().unwrap() = event_type.map(str::to_owned);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A webhook JWT's payload, its three layers decoded by hand.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// Layer B's `id`.
    pub id: String,
    /// Layer A's `eventType`.
    pub event_type: String,
    /// Layer A's `instanceId`.
    pub instance_id: String,
    /// Layer B's `entityId`.
    pub entity_id: String,
    /// Layer B's `actionEvent.body`.
    pub body: Value,
    /// Layer C.
    pub identity: Value,
    /// The whole layer B.
    pub b: Value,
}

/// Decodes the payload of a webhook JWT (no verification): `{"data": A}`, A's `data` is B,
/// A's `identity` is C.
#[track_caller]
pub fn decode_jwt(jwt: &str) -> WebhookEvent {
    let parts: Vec<&str> = jwt.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {jwt}");
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let a: Value = serde_json::from_str(payload["data"].as_str().expect("data is a string"))
        .expect("data is JSON");
    let b: Value = serde_json::from_str(a["data"].as_str().expect("A.data is a string"))
        .expect("A.data is JSON");
    let c: Value = serde_json::from_str(a["identity"].as_str().expect("A.identity is a string"))
        .expect("A.identity is JSON");
    WebhookEvent {
        id: str_of(&b["id"]),
        event_type: str_of(&a["eventType"]),
        instance_id: str_of(&a["instanceId"]),
        entity_id: str_of(&b["entityId"]),
        body: b["actionEvent"]["body"].clone(),
        identity: c,
        b,
    }
}

/// Now, for checking a token's expiry (never asserted on).
pub fn now() -> inbox_core::Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    inbox_core::Timestamp::from_micros(i64::try_from(micros).unwrap())
}

/// The test keys of `inbox-wix` (`app-private.pem`, `app-public.pem`, `other-private.pem`).
pub fn wix_test_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../inbox-wix/tests/keys")
        .join(name)
}
