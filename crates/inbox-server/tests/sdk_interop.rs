//! Interop of `inboxd` with Wix's own JavaScript SDK, end to end.
//!
//! REST: `interop/node/rest-flow.mjs` drives the in-process server through `@wix/sdk`'s
//! `createClient({modules: {messages, conversations, contacts}, auth: ApiKeyStrategy, fetch})`
//! (the custom fetch sends what the SDK addresses to `https://www.wixapis.com` here): create
//! a contact, query it by email, get or create its conversation, send every content type an
//! app may send and one message as the participant, list them with cursors, get the
//! conversation. The test then checks that the server's state agrees.
//!
//! Webhooks: an in-test receiver records what the server's outbox really delivered for that
//! flow (plus one postback click), and `interop/node/process-webhooks.mjs` feeds the JWTs to
//! the SDK's `webhooks.process` with the server's public key: each must reach the right
//! handler with the message the REST calls answered.
//!
//! Needs Node and `npm ci` in `interop/node`. Without them the test says so loudly and
//! passes, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use inbox_core::message::{BasicItem, ContentBody};
use inbox_core::{ContactId, ConversationId, Direction, ParticipantId, Sender, SiteId, Visibility};
use inbox_server::{ServeOptions, start};
use serde_json::{Value, json};
use tokio::sync::watch;

const SITE: &str = "sdk-site";
const KEY: &str = "sdk-key";
/// Any GUID: the SDK does not check the app id of a webhook.
const APP_ID: &str = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
/// How long the outbox may take to deliver everything (it usually takes milliseconds).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/node")
}

/// Whether the SDK is installed; under CI its absence is a failure.
fn sdk_available() -> bool {
    let installed = interop_dir()
        .join("node_modules/@wix/sdk/package.json")
        .exists()
        && Process::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !installed {
        let msg = "Wix SDK interop test NOT RUN: needs node and `npm ci` in interop/node";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg} (CI=true)"
        );
        eprintln!("\n!!!!! {msg} !!!!!\n");
    }
    installed
}

/// Runs `node <args>` in `interop/node` off the async workers; returns status, stdout, stderr.
async fn node(args: Vec<String>) -> (bool, String, String) {
    node_with(args, Vec::new()).await
}

/// [`node`] with environment variables.
async fn node_with(args: Vec<String>, env: Vec<(String, String)>) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Process::new("node")
            .current_dir(interop_dir())
            .args(&args)
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The webhook receiver

struct Received {
    tokens: Mutex<Vec<String>>,
    count: watch::Sender<usize>,
}

async fn receive(State(r): State<Arc<Received>>, body: Bytes) -> StatusCode {
    let Ok(token) = String::from_utf8(body.to_vec()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut tokens = r.tokens.lock().unwrap();
    tokens.push(token);
    r.count.send_replace(tokens.len());
    StatusCode::OK
}

/// An HTTP server on 127.0.0.1:0 recording every body POSTed to `/hooks`.
async fn start_receiver() -> (String, Arc<Received>, watch::Receiver<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (count, seen) = watch::channel(0);
    let received = Arc::new(Received {
        tokens: Mutex::new(Vec::new()),
        count,
    });
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hooks"), received, seen)
}

// ------------------------------------------------------------------------------------------
// What the flow sends, in order: (rest-flow.mjs kind, content type, direction)

const SENT: [(&str, &str, Direction); 7] = [
    ("basic-text", "text", Direction::BusinessToParticipant),
    ("basic-image", "image", Direction::BusinessToParticipant),
    ("basic-file", "file", Direction::BusinessToParticipant),
    ("template", "template", Direction::BusinessToParticipant),
    ("minimal", "minimal", Direction::BusinessToParticipant),
    ("form", "form", Direction::BusinessToParticipant),
    ("participant-text", "text", Direction::ParticipantToBusiness),
];

fn content_type(body: &ContentBody) -> &'static str {
    match body {
        ContentBody::Basic(items) => match items.first() {
            Some(BasicItem::Text(_)) => "text",
            Some(BasicItem::Image(_)) => "image",
            Some(BasicItem::File(_)) => "file",
            None => "empty basic",
        },
        ContentBody::Template(_) => "template",
        ContentBody::Minimal(_) => "minimal",
        ContentBody::Form(_) => "form",
        ContentBody::System(_) => "system",
        ContentBody::Redacted => "redacted",
    }
}

fn wire_direction(d: Direction) -> &'static str {
    match d {
        Direction::BusinessToParticipant => "BUSINESS_TO_PARTICIPANT",
        Direction::ParticipantToBusiness => "PARTICIPANT_TO_BUSINESS",
        Direction::Unknown => "UNKNOWN_DIRECTION",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wix_sdk_drives_rest_and_accepts_real_deliveries() {
    if !sdk_available() {
        return;
    }
    let (hook_url, received, mut delivered) = start_receiver().await;
    let data = tempfile::tempdir().unwrap();
    let running = start(ServeOptions {
        api_keys: vec![(SiteId::new(SITE), KEY.into())],
        webhook_urls: vec![hook_url],
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap(), data.path().to_path_buf())
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);

    // ---- REST, through the SDK.
    let (ok, stdout, stderr) = node(vec![
        "rest-flow.mjs".into(),
        base.clone(),
        SITE.into(),
        KEY.into(),
    ])
    .await;
    assert!(
        ok,
        "rest-flow.mjs failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let steps = json_lines(&stdout);
    let done = steps.last().unwrap();
    assert_eq!(done["step"], "done", "{stdout}");
    assert_eq!(done["ok"], true);
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name} in\n{stdout}"))
    };
    let contact_id: ContactId = done["contactId"].as_str().unwrap().parse().unwrap();
    let conversation_id: ConversationId = done["conversationId"].as_str().unwrap().parse().unwrap();
    let email = done["email"].as_str().unwrap().to_owned();
    let flow: Vec<&Value> = done["messages"].as_array().unwrap().iter().collect();
    let kinds: Vec<&str> = flow.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    let expected_kinds: Vec<&str> = SENT.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(kinds, expected_kinds);
    let ids: Vec<String> = flow
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();

    // The SDK called exactly the Wix paths, with Wix's API-key headers.
    let calls = done["httpCalls"].as_array().unwrap();
    for c in calls {
        assert_eq!(c["headers"]["authorization"], "<apiKey>", "{c:#}");
        assert_eq!(c["headers"]["wix-site-id"], SITE, "{c:#}");
        assert!(
            c["sdkUrl"]
                .as_str()
                .unwrap()
                .starts_with("https://www.wixapis.com/"),
            "{c:#}"
        );
        assert_eq!(c["status"], 200, "{c:#}");
    }
    let paths: HashSet<String> = calls
        .iter()
        .map(|c| {
            let path = c["path"]
                .as_str()
                .unwrap()
                .replace(&conversation_id.to_string(), "{id}");
            format!("{} {path}", c["method"].as_str().unwrap())
        })
        .collect();
    let expected_paths: HashSet<String> = [
        "POST /contacts/v4/contacts",
        "POST /contacts/v4/contacts/query",
        "POST /inbox/v2/conversations",
        "POST /inbox/v2/messages",
        "GET /inbox/v2/messages",
        "GET /inbox/v2/conversations/{id}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, expected_paths);
    // List Messages goes as the SDK's `.r=` form: base64url of the whole request.
    let list = calls
        .iter()
        .find(|c| c["method"] == "GET" && c["path"] == "/inbox/v2/messages")
        .unwrap();
    assert_eq!(list["decodedR"]["paging"]["limit"], 2, "{list:#}");
    assert_eq!(
        list["decodedR"]["conversationId"],
        conversation_id.to_string()
    );

    // ---- The server's state agrees with what the SDK was told.
    let site = SiteId::new(SITE);
    running
        .engine
        .read(&site, |inbox| {
            let contact = inbox
                .contacts()
                .get(contact_id)
                .expect("the contact exists");
            assert_eq!(contact.primary_email(), Some(email.as_str()));
            assert_eq!(contact.name.first.as_deref(), Some("Jo"));
            assert_eq!(
                inbox.live_conversation_of(ParticipantId::Contact(contact_id)),
                Some(conversation_id)
            );
            let stored: Vec<_> = inbox.messages_of(conversation_id).collect();
            assert_eq!(stored.len(), SENT.len());
            let mut wix_user = None;
            for ((m, (kind, content, direction)), id) in stored.iter().zip(SENT).zip(&ids) {
                assert_eq!(&m.id.to_string(), id, "{kind}");
                assert_eq!(content_type(&m.content.body), content, "{kind}");
                assert_eq!(m.direction, direction, "{kind}");
                let visibility = if kind == "minimal" {
                    Visibility::Business
                } else {
                    Visibility::BusinessAndParticipant
                };
                assert_eq!(m.visibility, visibility, "{kind}");
                assert_eq!(m.silent, kind == "form", "{kind}");
                match direction {
                    Direction::ParticipantToBusiness => {
                        assert_eq!(m.sender, Sender::Contact(contact_id), "{kind}");
                    }
                    _ => {
                        // The API key acts as one Wix user of its site.
                        let Sender::WixUser(u) = m.sender else {
                            panic!("{kind}: sent by {:?}", m.sender);
                        };
                        assert_eq!(*wix_user.get_or_insert(u), u, "{kind}");
                    }
                }
            }
        })
        .unwrap();

    // ---- A participant clicks the template's postback button (the emulator's own path).
    let template = &ids[3];
    let click = reqwest::Client::new()
        .post(format!("{base}/emulator/v1/interactions"))
        .header("authorization", KEY)
        .json(&json!({
            "conversationId": conversation_id.to_string(),
            "messageId": template,
            "interactionId": "book-table",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(click.status(), 200, "{}", click.text().await.unwrap());

    // ---- Webhooks: the contact's creation, one per message and one for the click, in log
    // order.
    let contact_text = contact_id.to_string();
    let expected: Vec<(&str, &str)> = [("onContactCreated", contact_text.as_str())]
        .into_iter()
        .chain(SENT.iter().zip(&ids).map(|((_, _, direction), id)| {
            let handler = match direction {
                Direction::ParticipantToBusiness => "onMessageSentToBusiness",
                _ => "onMessageSentToParticipant",
            };
            (handler, id.as_str())
        }))
        .chain([("onMessageButtonInteracted", template.as_str())])
        .collect();
    let reached = tokio::time::timeout(
        DELIVERY_DEADLINE,
        delivered.wait_for(|n| *n >= expected.len()),
    )
    .await;
    let tokens = received.tokens.lock().unwrap().clone();
    assert!(
        matches!(reached, Ok(Ok(_))),
        "{} of {} deliveries within {DELIVERY_DEADLINE:?}; outbox (delivered, failed attempts, set aside) = {:?}",
        tokens.len(),
        expected.len(),
        running.outbox.counts()
    );

    let public_key = reqwest::get(format!("{base}/emulator/v1/public-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        public_key.contains("-----BEGIN PUBLIC KEY-----"),
        "{public_key}"
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        json!({"appId": APP_ID, "publicKey": public_key, "jwts": tokens}).to_string(),
    )
    .unwrap();
    let input = input.to_str().unwrap().to_owned();
    let (ok, stdout, stderr) = node(vec!["process-webhooks.mjs".into(), input.clone()]).await;
    assert!(ok, "process-webhooks.mjs failed: {stderr}\n{stdout}");
    let results = json_lines(&stdout);
    assert_eq!(results.len(), tokens.len());
    for r in &results {
        assert_eq!(r["ok"], true, "the SDK refused a delivery: {r:#}");
    }
    // At least once: a retry repeats the event id; keep the first of each.
    let mut seen = HashSet::new();
    let unique: Vec<&Value> = results
        .iter()
        .filter(|r| seen.insert(r["event"]["metadata"]["_id"].as_str().unwrap().to_owned()))
        .collect();
    let got: Vec<(&str, &str)> = unique
        .iter()
        .map(|r| {
            (
                r["handler"].as_str().unwrap(),
                r["event"]["metadata"]["entityId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected, "{results:#?}");

    // The contact's creation reaches the SDK's own onContactCreated with the contact as the
    // entity, as Create Contact answered it through the SDK, and its revision as the entity's
    // event sequence.
    let created = unique[0];
    assert_eq!(
        created["event"]["entity"],
        step("createContact")["result"]["contact"],
        "{created:#}"
    );
    assert_eq!(
        created["event"]["metadata"]["entityEventSequence"], "1",
        "{created:#}"
    );
    for (r, kind) in unique[1..].iter().zip(kinds.iter().chain(["click"].iter())) {
        let meta = &r["event"]["metadata"];
        let data = &r["event"]["data"];
        assert_eq!(meta["instanceId"], SITE, "{r:#}");
        assert_eq!(meta["entityFqdn"], "wix.crm.inbox.v2.message", "{r:#}");
        assert_eq!(data["conversationId"], conversation_id.to_string(), "{r:#}");
        let dates = r["dates"].as_array().unwrap();
        assert!(dates.iter().any(|d| d == "metadata.eventTime"), "{r:#}");
        if *kind == "click" {
            assert_eq!(meta["slug"], "button_interacted", "{r:#}");
            assert_eq!(data["interactionId"], "book-table", "{r:#}");
            assert_eq!(
                data["interactedBy"]["contactId"],
                contact_id.to_string(),
                "{r:#}"
            );
            continue;
        }
        // The handler gets the message exactly as Send Message answered it through the SDK.
        let answered = &step(&format!("sendMessage:{kind}"))["result"]["message"];
        assert_eq!(&data["message"], answered, "{kind}: {r:#}");
        assert!(
            dates.iter().any(|d| d == "data.message._createdDate"),
            "{r:#}"
        );
        let direction = data["message"]["direction"].as_str().unwrap();
        let (_, _, expected_direction) = SENT.iter().find(|(k, _, _)| k == kind).unwrap();
        assert_eq!(direction, wire_direction(*expected_direction), "{r:#}");
        if *kind == "participant-text" {
            assert_eq!(meta["slug"], "message_sent_to_business", "{r:#}");
            assert_eq!(r.get("custom"), None, "the SDK's own handler: {r:#}");
            assert_eq!(
                data["message"]["sender"]["contactId"],
                contact_id.to_string()
            );
        } else {
            assert_eq!(meta["slug"], "message_sent_to_participant", "{r:#}");
        }
    }

    // With only the SDK's own definitions, an app refuses "sent to participant" by name (the
    // SDK has no handler for it) and takes the rest.
    let (ok, stdout, stderr) = node(vec![
        "process-webhooks.mjs".into(),
        "--sdk-only".into(),
        input,
    ])
    .await;
    assert!(
        ok,
        "process-webhooks.mjs --sdk-only failed: {stderr}\n{stdout}"
    );
    for r in json_lines(&stdout) {
        let index = usize::try_from(r["index"].as_u64().unwrap()).unwrap();
        let first = &results[index];
        if first["handler"] == "onMessageSentToParticipant" {
            assert_eq!(r["ok"], false, "{r:#}");
            assert!(
                r["error"].as_str().unwrap().contains(
                    "Unexpected event type: wix.crm.inbox.v2.message_message_sent_to_participant"
                ),
                "{r:#}"
            );
        } else {
            assert_eq!(r["ok"], true, "{r:#}");
            assert_eq!(r["handler"], first["handler"], "{r:#}");
        }
    }

    running.shutdown().await;
}

/// Starts a server with the test key over a fresh directory, runs `flow` against it, and
/// returns the server, its directory (kept until the test ends) and the flow's closing line.
async fn run_flow(flow: &str) -> (inbox_server::Running, tempfile::TempDir, Value) {
    let data = tempfile::tempdir().unwrap();
    let running = start(ServeOptions {
        api_keys: vec![(SiteId::new(SITE), KEY.into())],
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap(), data.path().to_path_buf())
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let (ok, stdout, stderr) = node(vec![flow.into(), base, SITE.into(), KEY.into()]).await;
    assert!(
        ok,
        "{flow} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let done = json_lines(&stdout).pop().unwrap();
    assert_eq!(done["step"], "done", "{stdout}");
    (running, data, done)
}

/// Every `METHOD path` a flow called (from its closing line's `httpCalls`), with each of
/// `names`' texts written as its placeholder.
fn called(done: &Value, names: &[(String, &str)]) -> HashSet<String> {
    done["httpCalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut path = c["path"].as_str().unwrap().to_owned();
            for (text, placeholder) in names {
                path = path.replace(text.as_str(), placeholder);
            }
            format!("{} {path}", c["method"].as_str().unwrap())
        })
        .collect()
}

/// Contacts v4 through the SDK's own `contacts` methods (`interop/node/contacts-flow.mjs`):
/// create with every detail, get (whole and projected), update one field, a stale update,
/// label and unlabel, query by label and company, list and query facets, list sorted and
/// paged, preview and merge, get the merged-away id, delete
/// and get the deleted one. The flow asserts what the SDK returned; here the paths it called
/// and the server's state afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wix_sdk_drives_every_contacts_call() {
    if !sdk_available() {
        return;
    }
    let (running, _data, done) = run_flow("contacts-flow.mjs").await;
    let id = |key: &str| -> ContactId { done[key].as_str().unwrap().parse().unwrap() };
    let (jo, ann, kim) = (id("contactId"), id("mergedId"), id("deletedId"));

    // Every call went to Wix's path for it.
    let paths = called(&done, &[jo, ann, kim].map(|c| (c.to_string(), "{id}")));
    let expected: HashSet<String> = [
        "POST /contacts/v4/contacts",
        "GET /contacts/v4/contacts/{id}",
        "PATCH /contacts/v4/contacts/{id}",
        "POST /contacts/v4/contacts/{id}/labels",
        "DELETE /contacts/v4/contacts/{id}/labels",
        "GET /contacts/v4/contacts",
        "POST /contacts/v4/contacts/query",
        "GET /contacts/v4/contacts/facets",
        "POST /contacts/v4/contacts/facets/query",
        "POST /contacts/v4/contacts/{id}/preview-merge",
        "POST /contacts/v4/contacts/{id}/merge",
        "DELETE /contacts/v4/contacts/{id}",
        "POST /contacts/v4/bulk/contacts/add-remove-labels",
        "POST /contacts/v4/bulk/contacts/update",
        "POST /contacts/v4/bulk/contacts/delete",
        "POST /contacts/v4/labels",
        "POST /contacts/v4/extended-fields",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, expected);

    // The server's state agrees.
    let revision = done["revision"].as_u64().unwrap();
    running
        .engine
        .read(&SiteId::new(SITE), |inbox| {
            let c = inbox.contacts().get(jo).expect("the target is live");
            assert_eq!(c.revision, revision);
            assert_eq!(c.details.job_title.as_deref(), Some("CTO"));
            assert_eq!(c.details.company.as_deref(), Some("Acme"));
            assert_eq!(
                c.details.labels.iter().collect::<Vec<_>>(),
                ["contacts.customers"]
            );
            assert_eq!(inbox.contacts().resolve(ann), jo);
            assert!(inbox.contacts().is_deleted(kim));
            assert!(inbox.contacts().get(kim).is_none());
        })
        .unwrap();
    running.shutdown().await;
}

/// Labels and Extended Fields through the SDK's own `labels` and `extendedFields` methods
/// (`interop/node/catalog-flow.mjs`): find or create (new, then found), get, rename, list,
/// query with the SDK's builder, a contact carrying both (and a value of the wrong type
/// refused), and deletion, which takes both off the contact. Here: the paths it called and the
/// server's state afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wix_sdk_drives_every_label_and_extended_field_call() {
    if !sdk_available() {
        return;
    }
    let (running, _data, done) = run_flow("catalog-flow.mjs").await;
    let lee: ContactId = done["contactId"].as_str().unwrap().parse().unwrap();
    let paths = called(
        &done,
        &[
            (lee.to_string(), "{id}"),
            ("custom.returning-customer".to_owned(), "{key}"),
            ("custom.loyalty-points".to_owned(), "{key}"),
        ],
    );
    let expected: HashSet<String> = [
        "POST /contacts/v4/labels",
        "GET /contacts/v4/labels/{key}",
        "PATCH /contacts/v4/labels/{key}",
        "GET /contacts/v4/labels",
        "POST /contacts/v4/labels/query",
        "DELETE /contacts/v4/labels/{key}",
        "POST /contacts/v4/extended-fields",
        "GET /contacts/v4/extended-fields/{key}",
        "PATCH /contacts/v4/extended-fields/{key}",
        "GET /contacts/v4/extended-fields",
        "POST /contacts/v4/extended-fields/query",
        "DELETE /contacts/v4/extended-fields/{key}",
        "POST /contacts/v4/contacts",
        "GET /contacts/v4/contacts/{id}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, expected);
    running
        .engine
        .read(&SiteId::new(SITE), |inbox| {
            let catalog = inbox.contacts().catalog();
            let labels: Vec<&str> = catalog.labels().iter().map(|l| l.key.as_str()).collect();
            assert_eq!(labels, ["custom.other"]);
            assert!(catalog.fields().is_empty());
            let c = inbox.contacts().get(lee).expect("the contact is live");
            assert!(c.details.labels.is_empty() && c.details.extended_fields.is_empty());
        })
        .unwrap();
    running.shutdown().await;
}

/// Wix's SDK pointed at inboxd through its own host setting (`host: {apiBaseUrl}`), with no
/// custom fetch: it speaks https (inboxd serves TLS with its generated certificate, which Node
/// trusts through NODE_EXTRA_CA_CERTS) on the paths it uses for a host of its own
/// (`/_api/contacts/v4/...`, `/crm/inbox/v2/...`), with `ApiKeyStrategy`, and with
/// `AppStrategy`, whose token comes from the emulated `/oauth2/token` and acts as the app on
/// the site it was issued for; a wrong secret gets a 401 and no token
/// (`interop/node/host-flow.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wix_sdk_reaches_inboxd_through_its_host_setting_over_tls_with_api_keys_and_app_tokens() {
    if !sdk_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let app = inbox_core::AppId::from_uuid(APP_ID.parse().unwrap());
    let running = start(ServeOptions {
        api_keys: vec![(SiteId::new(SITE), KEY.into())],
        apps: vec![(app, "app-secret".into())],
        tls: Some(inbox_server::tls::TlsSource::SelfSigned),
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap(), data.path().to_path_buf())
    })
    .await
    .unwrap();
    let (cert, generated) = running.tls_cert.clone().unwrap();
    assert!(generated);
    let host = format!("localhost:{}", running.addr.port());
    let (ok, stdout, stderr) = node_with(
        vec![
            "host-flow.mjs".into(),
            host,
            SITE.into(),
            KEY.into(),
            APP_ID.into(),
            "app-secret".into(),
        ],
        vec![(
            "NODE_EXTRA_CA_CERTS".into(),
            cert.to_str().unwrap().to_owned(),
        )],
    )
    .await;
    assert!(
        ok,
        "host-flow.mjs failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let steps = json_lines(&stdout);
    let done = steps.last().unwrap();
    assert_eq!(done["step"], "done", "{stdout}");
    let paths: Vec<&str> = done["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "POST https /_api/contacts/v4/contacts 200",
            "POST https /crm/inbox/v2/conversations 200",
            "POST https /crm/inbox/v2/messages 200",
            "POST https /oauth2/token 200",
            "POST https /crm/inbox/v2/messages 200",
            "GET https /crm/inbox/v2/messages 200",
            "POST https /oauth2/token 401",
        ]
    );
    // The app's message is the app's, on the site its token was issued for.
    let conversation: ConversationId = done["conversationId"].as_str().unwrap().parse().unwrap();
    running
        .engine
        .read(&SiteId::new(SITE), |inbox| {
            let senders: Vec<Sender> = inbox.messages_of(conversation).map(|m| m.sender).collect();
            assert!(matches!(senders[0], Sender::WixUser(_)), "{senders:?}");
            assert_eq!(senders[1], Sender::App(app));
        })
        .unwrap();
    // The certificate is generated once: a restart reuses it.
    running.shutdown().await;
    let again = start(ServeOptions {
        tls: Some(inbox_server::tls::TlsSource::SelfSigned),
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap(), data.path().to_path_buf())
    })
    .await
    .unwrap();
    assert_eq!(again.tls_cert.clone(), Some((cert, false)));
    again.shutdown().await;
}
