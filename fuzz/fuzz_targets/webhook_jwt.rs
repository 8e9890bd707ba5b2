//! Webhook JWTs: whatever the token, `WebhookVerifier::verify` answers (never panics), and a
//! refusal maps to a Wix error with an HTTP status.
//!
//! Three modes: raw text as the token; a token assembled from an arbitrary header JSON, an
//! arbitrary payload and an arbitrary signature; and a token *signed* with the test key
//! (from a table signed at start-up: claims with `data` and `exp` of every shape, real
//! deliveries among them), possibly with a byte flipped, checked at an arbitrary time: this
//! gets past the signature to the claims, the expiry and the payload layers.

#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inbox_core::Timestamp;
use inbox_fuzz::{Json, START, check_error, sample_deliveries};
use inbox_wix::webhook::WebhookVerifier;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

static VERIFIER: LazyLock<WebhookVerifier> = LazyLock::new(|| {
    WebhookVerifier::from_public_pem(include_bytes!(
        "../../crates/inbox-wix/tests/keys/app-public.pem"
    ))
    .expect("test public key")
});

static SIGNER: LazyLock<EncodingKey> = LazyLock::new(|| {
    EncodingKey::from_rsa_pem(include_bytes!(
        "../../crates/inbox-wix/tests/keys/app-private.pem"
    ))
    .expect("test private key")
});

#[derive(Arbitrary, Debug)]
enum Header {
    /// `{"alg": "RS256", "typ": "JWT"}` and arbitrary extra members.
    Rs256(Vec<(String, Json)>),
    /// Any `alg` string.
    Alg(String),
    /// Any JSON at all.
    Any(Json),
    /// Not JSON.
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String),
    Parts {
        header: Header,
        payload: Vec<u8>,
        signature: Vec<u8>,
        /// Encode the parts with padding and the standard alphabet instead.
        standard_base64: bool,
        now: i64,
    },
    /// One of the tokens signed with the test key at start-up (RSA signing costs about a
    /// millisecond, too slow to do per input), possibly with a byte flipped, checked at an
    /// arbitrary time around its expiry.
    Signed {
        index: u16,
        flip: Option<(u16, u8)>,
        now_offset: i32,
    },
}

/// Claims of every shape that matters after the signature: `data` absent, not a string, not
/// JSON, a real delivery, a real delivery cut short; `exp` absent, past, future, within the
/// leeway, not a number, huge, fractional.
static SIGNED: LazyLock<Vec<String>> = LazyLock::new(|| {
    let now_secs = START / 1_000_000;
    let mut datas: Vec<Option<Value>> = vec![
        None,
        Some(Value::Null),
        Some(json!(42)),
        Some(json!({"eventType": "x"})),
        Some(json!("")),
        Some(json!("not json")),
        Some(json!("{}")),
    ];
    for d in sample_deliveries() {
        datas.push(Some(json!(d.chars().take(d.len() / 2).collect::<String>())));
        datas.push(Some(json!(d)));
    }
    let exps: Vec<Option<Value>> = vec![
        None,
        Some(Value::Null),
        Some(json!(now_secs + 3600)),
        Some(json!(now_secs - 3600)),
        Some(json!(now_secs - 59)),
        Some(json!(now_secs - 61)),
        Some(json!((now_secs as f64) + 0.5)),
        Some(json!("9999999999")),
        Some(json!(1e300)),
        Some(json!(-1e300)),
        Some(json!(i64::MAX)),
        Some(json!(u64::MAX)),
        Some(json!(i64::MIN)),
    ];
    let headers = [
        json!({"alg": "RS256", "typ": "JWT"}),
        json!({"alg": "RS256", "kid": "k1", "x": [1, {"y": null}]}),
    ];
    let mut out = Vec::new();
    for h in &headers {
        for d in &datas {
            for e in &exps {
                let mut claims = Map::new();
                if let Some(d) = d {
                    claims.insert("data".into(), d.clone());
                }
                if let Some(e) = e {
                    claims.insert("exp".into(), e.clone());
                }
                claims.insert("iat".into(), json!(now_secs));
                let message = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(serde_json::to_vec(h).unwrap()),
                    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Value::Object(claims)).unwrap())
                );
                let signature =
                    jsonwebtoken::crypto::sign(message.as_bytes(), &SIGNER, Algorithm::RS256)
                        .expect("RS256 signs anything");
                out.push(format!("{message}.{signature}"));
            }
        }
    }
    out
});

fn encode(bytes: &[u8], standard: bool) -> String {
    if standard {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    } else {
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

fn header_bytes(h: &Header) -> Vec<u8> {
    match h {
        Header::Rs256(extra) => {
            let mut map = Map::new();
            for (k, v) in extra {
                map.insert(k.clone(), v.0.clone());
            }
            map.insert("alg".into(), json!("RS256"));
            map.insert("typ".into(), json!("JWT"));
            serde_json::to_vec(&Value::Object(map)).unwrap()
        }
        Header::Alg(alg) => serde_json::to_vec(&json!({"alg": alg, "typ": "JWT"})).unwrap(),
        Header::Any(v) => serde_json::to_vec(&v.0).unwrap(),
        Header::Bytes(b) => b.clone(),
    }
}

fn check(token: &str, now: Timestamp) {
    match VERIFIER.verify(token, now) {
        Ok(delivery) => {
            let _ = delivery.core_events();
            let _ = delivery.envelopes(now);
        }
        Err(e) => check_error(&e.to_wix()),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(token) => check(&token, Timestamp::from_micros(START)),
        Input::Parts {
            header,
            payload,
            signature,
            standard_base64,
            now,
        } => {
            let token = format!(
                "{}.{}.{}",
                encode(&header_bytes(&header), standard_base64),
                encode(&payload, standard_base64),
                encode(&signature, standard_base64)
            );
            check(&token, Timestamp::from_micros(now));
        }
        Input::Signed {
            index,
            flip,
            now_offset,
        } => {
            let mut token = SIGNED[usize::from(index) % SIGNED.len()]
                .clone()
                .into_bytes();
            if let Some((at, byte)) = flip {
                let at = usize::from(at) % token.len();
                token[at] ^= byte;
            }
            let token = String::from_utf8_lossy(&token);
            let now = Timestamp::from_micros(
                START.saturating_add(i64::from(now_offset).saturating_mul(1_000_000)),
            );
            check(&token, now);
        }
    }
});
