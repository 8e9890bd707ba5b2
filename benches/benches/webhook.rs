//! The benchmarks of `inbox-wix`'s webhook intake ("decoding and verifying webhooks" in
//! DESIGN.md's performance list), each beside a floor measured in the same run (numbers:
//! `docs/PERFORMANCE.md`):
//!
//! * `webhook`: one delivery of a visitor's 40-character message to the business (Message
//!   Sent To Business), as Wix sends it: an RS256 JWT whose `data` claim nests layer A, which
//!   nests layers B and C as JSON strings.
//!   - `inbox_verify_decode`: `WebhookVerifier::verify`, the whole intake of one token: the
//!     algorithm check, the RS256 signature, the expiry, and decoding the three layers into a
//!     typed `Delivery` (the message in the core's form);
//!   - `floor_rs256_json_value`: the work no decoder can skip: the header and the claims
//!     base64url-decoded and parsed into `serde_json::Value`, the signature checked alone
//!     (`jsonwebtoken::crypto::verify`, the same aws-lc-rs RS256), and layers A, B and C
//!     parsed into `serde_json::Value`;
//!   - `floor_rs256_only`: the signature check alone (most of either of the above);
//!   - `inbox_decode_only`: `Delivery::from_data` on the `data` claim (no signature), beside
//!     `floor_json_value`: layers A, B and C parsed into `serde_json::Value`. With the
//!     signature out of both, the ratio is the adapter's own decoding overhead.
//! * `webhook_ingest`: a replica (`inbox_wix::webhook::Replica`) of a site that has folded
//!   10^4 deliveries (10^3 in quick mode) over 100 conversations folds 10^3 (10^2) more,
//!   already decoded; per delivery:
//!   - `replica_ingest_new`: `Replica::ingest` of deliveries it has not seen (dedupe on the
//!     event id, then the delivery's core events applied), beside
//!     `floor_btreeset_btreemap_vec`: the event id inserted into a `BTreeSet` and the message
//!     cloned into a `BTreeMap<ConversationId, Vec<Message>>`;
//!   - `replica_ingest_duplicate`: `Replica::ingest` of deliveries it has already folded
//!     (Wix retries), beside `floor_btreeset_contains`.
//!
//! SQLite has no part in decoding or verifying a webhook (a database stores what was decoded;
//! the store benches measure that), so these groups have no SQLite baseline:
//! `benches/report.py` prints "n/a" in that column.
//!
//! The deliveries are made by the adapter's own outgoing path (`announcements` and
//! `Announcement::sign`) with the test key pair of `crates/inbox-wix/tests/keys/`, and
//! checked once, outside the timing, to verify and decode back to the message sent.
//! `INBOX_BENCH_QUICK=1` shrinks the replica; `cargo bench -p inbox-benches --bench webhook
//! -- --test` runs each bench once.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inbox_benches::{
    BASE_SEQUENCE, conversation, new_inbox, pow10, quick_mode, start_event, text_message, visitor,
};
use inbox_core::{
    ConversationId, Direction, Event, EventEnvelope, EventId, Inbox, InboxConfig, Message, Sender,
    SiteId, Timestamp,
};
use inbox_wix::webhook::{
    Delivery, Ingested, Replica, WebhookEvent, WebhookSigner, WebhookVerifier, announcements,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use uuid::Uuid;

/// Conversations the deliveries go to.
const CONVERSATIONS: u64 = 100;

/// The site of every delivery (the fixtures' inbox's).
const SITE: &str = "bench-site";

struct Sizes {
    /// Deliveries the replica has folded before the timing.
    prior: u64,
    /// Deliveries folded per iteration.
    batch: u64,
}

fn sizes() -> Sizes {
    if quick_mode() {
        Sizes {
            prior: 1_000,
            batch: 100,
        }
    } else {
        Sizes {
            prior: 10_000,
            batch: 1_000,
        }
    }
}

/// A key file of the adapter's tests (test-only keys that protect nothing).
fn key_file(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../crates/inbox-wix/tests/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// When every token is signed and verified (the expiry is checked against it).
fn now() -> Timestamp {
    Timestamp::from_micros(BASE_SEQUENCE)
}

/// Message number `k`: a visitor's 40-character text to the business, in conversation
/// `k % CONVERSATIONS` (the visitor's own).
fn visitor_message(k: u64) -> Message {
    let c = k % CONVERSATIONS;
    let mut m = text_message(
        BASE_SEQUENCE + i64::try_from(k).unwrap(),
        conversation(c),
        k,
    );
    m.sender = Sender::Visitor(visitor(c));
    m.direction = Direction::ParticipantToBusiness;
    m.app_id = None;
    m
}

/// The recorded event of message `k`, as a server records it.
fn envelope(k: u64) -> EventEnvelope {
    let m = visitor_message(k);
    EventEnvelope::new(
        SiteId::new(SITE),
        EventId::from_uuid(Uuid::from_u128((0xD0_u128 << 64) | u128::from(k))),
        m.created_date,
        Event::MessageSent { message: m },
    )
}

/// The inbox the announcements are computed against: the visitors' conversations started.
fn announcing_inbox() -> Inbox {
    let mut inbox = new_inbox();
    for c in 0..CONVERSATIONS {
        inbox.apply_event(&start_event(c));
    }
    inbox
}

/// The `data` claim of delivery `k` (layer A, nesting B and C).
fn data_of(inbox: &Inbox, k: u64) -> String {
    let a = announcements(&envelope(k), inbox);
    assert_eq!(a.len(), 1);
    a[0].data()
}

/// Checks that a decoded delivery is message `k`'s.
fn check_delivery(d: &Delivery, k: u64) {
    let want = visitor_message(k);
    assert_eq!(d.instance_id, SiteId::new(SITE));
    assert_eq!(d.event_id, envelope(k).event_id);
    let WebhookEvent::MessageSentToBusiness {
        conversation_id,
        message,
    } = &d.event
    else {
        panic!("not a message to the business: {:?}", d.event)
    };
    assert_eq!(*conversation_id, want.conversation_id);
    assert_eq!(message.id, want.id);
    assert_eq!(message.sequence, want.sequence);
    assert_eq!(message.sender, want.sender);
    assert_eq!(message.content, want.content);
}

// ---------------------------------------------------------------------------------------
// the floors

/// The three layers as JSON values.
fn floor_layers(data: &str) -> (Value, Value, Value) {
    let a: Value = serde_json::from_str(data).unwrap();
    let b: Value = serde_json::from_str(a["data"].as_str().unwrap()).unwrap();
    let c: Value = serde_json::from_str(a["identity"].as_str().unwrap()).unwrap();
    (a, b, c)
}

/// The signature of a token checked alone.
fn floor_signature(token: &str, key: &DecodingKey) -> bool {
    let (message, signature) = token.rsplit_once('.').unwrap();
    jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, Algorithm::RS256).unwrap()
}

/// The unavoidable work of a delivery: header and claims decoded, signature checked, the
/// layers parsed into JSON values.
fn floor_verify_decode(token: &str, key: &DecodingKey) -> (Value, Value, Value, Value) {
    let (message, signature) = token.rsplit_once('.').unwrap();
    let (header, claims) = message.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert!(
        jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, Algorithm::RS256).unwrap()
    );
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    let (a, b, c) = floor_layers(claims["data"].as_str().unwrap());
    (claims, a, b, c)
}

// ---------------------------------------------------------------------------------------
// 1. verifying and decoding one delivery

struct TokenFixture {
    token: String,
    data: String,
    verifier: WebhookVerifier,
    key: DecodingKey,
}

impl TokenFixture {
    fn new() -> Self {
        let signer = WebhookSigner::from_private_pem(&key_file("app-private.pem")).unwrap();
        let public = key_file("app-public.pem");
        let verifier = WebhookVerifier::from_public_pem(&public).unwrap();
        let key = DecodingKey::from_rsa_pem(&public).unwrap();
        let inbox = announcing_inbox();
        let k = 7;
        let a = announcements(&envelope(k), &inbox);
        let token = a[0].sign(&signer, now(), 300).unwrap();
        let data = data_of(&inbox, k);
        // Once, outside the timing: the token verifies and decodes to the message sent, and
        // the floors do their work on the same token.
        check_delivery(&verifier.verify(&token, now()).unwrap(), k);
        check_delivery(&Delivery::from_data(&data).unwrap(), k);
        assert!(floor_signature(&token, &key));
        let (claims, a, b, c) = floor_verify_decode(&token, &key);
        assert_eq!(claims["data"].as_str(), Some(data.as_str()));
        assert_eq!(a["instanceId"], SITE);
        assert_eq!(
            b["actionEvent"]["body"]["message"]["id"],
            visitor_message(k).id.to_string()
        );
        assert_eq!(c["identityType"], "ANONYMOUS_VISITOR");
        // A tampered token is refused by both.
        let mut bad = token.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verifier.verify(&bad, now()).is_err());
        assert!(!floor_signature(&bad, &key));
        println!(
            "webhook fixture: token {} bytes, data claim {} bytes",
            token.len(),
            data.len()
        );
        TokenFixture {
            token,
            data,
            verifier,
            key,
        }
    }
}

fn webhook(c: &mut Criterion) {
    let mut group = c.benchmark_group("webhook");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let fixture: OnceCell<TokenFixture> = OnceCell::new();
    let id = "one_delivery";

    group.bench_function(BenchmarkId::new("inbox_verify_decode", id), |b| {
        let fx = fixture.get_or_init(TokenFixture::new);
        b.iter(|| fx.verifier.verify(black_box(&fx.token), now()).unwrap());
    });
    group.bench_function(BenchmarkId::new("floor_rs256_json_value", id), |b| {
        let fx = fixture.get_or_init(TokenFixture::new);
        b.iter(|| floor_verify_decode(black_box(&fx.token), &fx.key));
    });
    group.bench_function(BenchmarkId::new("floor_rs256_only", id), |b| {
        let fx = fixture.get_or_init(TokenFixture::new);
        b.iter(|| floor_signature(black_box(&fx.token), &fx.key));
    });
    group.bench_function(BenchmarkId::new("inbox_decode_only", id), |b| {
        let fx = fixture.get_or_init(TokenFixture::new);
        b.iter(|| Delivery::from_data(black_box(&fx.data)).unwrap());
    });
    group.bench_function(BenchmarkId::new("floor_json_value", id), |b| {
        let fx = fixture.get_or_init(TokenFixture::new);
        b.iter(|| floor_layers(black_box(&fx.data)));
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// 2. a replica folding decoded deliveries

struct IngestFixture {
    /// The replica after the prior deliveries.
    replica: Replica,
    /// The floor's state after the same deliveries.
    seen: BTreeSet<EventId>,
    map: BTreeMap<ConversationId, Vec<Message>>,
    /// Deliveries it has folded already (the first `batch` of the prior ones).
    repeats: Vec<Delivery>,
    /// Deliveries it has not seen.
    new: Vec<Delivery>,
    /// When each new delivery is received.
    received: Vec<Timestamp>,
}

/// What the floor keeps of a delivery: its event id and its message.
fn floor_parts(d: &Delivery) -> (EventId, &Message) {
    match &d.event {
        WebhookEvent::MessageSentToBusiness { message, .. } => (d.event_id, message),
        other => panic!("not a message to the business: {other:?}"),
    }
}

fn floor_ingest(
    seen: &mut BTreeSet<EventId>,
    map: &mut BTreeMap<ConversationId, Vec<Message>>,
    d: &Delivery,
) -> bool {
    let (id, message) = floor_parts(d);
    if !seen.insert(id) {
        return false;
    }
    map.entry(message.conversation_id)
        .or_default()
        .push(message.clone());
    true
}

impl IngestFixture {
    fn new(s: &Sizes) -> Self {
        let inbox = announcing_inbox();
        let decode = |k: u64| {
            let d = Delivery::from_data(&data_of(&inbox, k)).unwrap();
            check_delivery(&d, k);
            d
        };
        let prior: Vec<Delivery> = (0..s.prior).map(decode).collect();
        let new: Vec<Delivery> = (s.prior..s.prior + s.batch).map(decode).collect();
        let received = (s.prior..s.prior + s.batch)
            .map(|k| visitor_message(k).created_date)
            .collect();
        let mut replica = Replica::new(InboxConfig::new(SiteId::new(SITE), [42; 16]));
        let mut seen = BTreeSet::new();
        let mut map = BTreeMap::new();
        for (k, d) in (0..).zip(&prior) {
            let got = replica.ingest(d, visitor_message(k).created_date);
            assert!(matches!(got, Ingested::Applied(ref e) if !e.is_empty()));
            assert!(floor_ingest(&mut seen, &mut map, d));
        }
        let repeats = prior
            .into_iter()
            .take(usize::try_from(s.batch).unwrap())
            .collect();
        let fx = IngestFixture {
            replica,
            seen,
            map,
            repeats,
            new,
            received,
        };
        fx.check(s);
        fx
    }

    /// Once, outside the timing: new deliveries are folded (each message lands once),
    /// repeats change nothing, in the replica and in the floor.
    fn check(&self, s: &Sizes) {
        let messages = |r: &Replica| -> u64 {
            (0..CONVERSATIONS)
                .map(|c| r.inbox().messages_of(conversation(c)).count() as u64)
                .sum()
        };
        assert_eq!(messages(&self.replica), s.prior);
        let mut r = self.replica.clone();
        for d in &self.repeats {
            assert_eq!(r.ingest(d, now()), Ingested::Duplicate);
        }
        assert_eq!(r, self.replica);
        for (d, t) in self.new.iter().zip(&self.received) {
            assert!(matches!(r.ingest(d, *t), Ingested::Applied(_)));
        }
        assert_eq!(messages(&r), s.prior + s.batch);
        for d in &self.new {
            assert_eq!(r.ingest(d, now()), Ingested::Duplicate);
        }
        assert_eq!(messages(&r), s.prior + s.batch);

        let (mut seen, mut map) = (self.seen.clone(), self.map.clone());
        assert!(self.repeats.iter().all(|d| seen.contains(&d.event_id)));
        assert!(
            self.new
                .iter()
                .all(|d| floor_ingest(&mut seen, &mut map, d))
        );
        assert!(
            !self
                .new
                .iter()
                .any(|d| floor_ingest(&mut seen, &mut map, d))
        );
        assert_eq!(
            map.values().map(Vec::len).sum::<usize>() as u64,
            s.prior + s.batch
        );
    }
}

fn webhook_ingest(c: &mut Criterion) {
    let s = sizes();
    let mut group = c.benchmark_group("webhook_ingest");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(s.batch));
    let fixture: OnceCell<IngestFixture> = OnceCell::new();
    let build = || IngestFixture::new(&s);
    let id = format!("{}_into_{}", pow10(s.batch), pow10(s.prior));

    group.bench_function(BenchmarkId::new("replica_ingest_new", &id), |b| {
        let fx = fixture.get_or_init(build);
        b.iter_batched(
            || fx.replica.clone(), // O(1)
            |mut replica| {
                for (d, t) in fx.new.iter().zip(&fx.received) {
                    black_box(replica.ingest(black_box(d), *t));
                }
                replica
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function(BenchmarkId::new("floor_btreeset_btreemap_vec", &id), |b| {
        let fx = fixture.get_or_init(build);
        b.iter_batched(
            || (fx.seen.clone(), fx.map.clone()),
            |(mut seen, mut map)| {
                for d in &fx.new {
                    black_box(floor_ingest(&mut seen, &mut map, black_box(d)));
                }
                (seen, map)
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function(BenchmarkId::new("replica_ingest_duplicate", &id), |b| {
        let fx = fixture.get_or_init(build);
        let mut replica = fx.replica.clone();
        b.iter(|| {
            for d in &fx.repeats {
                black_box(replica.ingest(black_box(d), now()));
            }
        });
    });
    group.bench_function(BenchmarkId::new("floor_btreeset_contains", &id), |b| {
        let fx = fixture.get_or_init(build);
        b.iter(|| {
            for d in &fx.repeats {
                black_box(fx.seen.contains(&black_box(d).event_id));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, webhook, webhook_ingest);
criterion_main!(benches);
