//! Webhook payloads: the JWT's `data` string (layer A, with layer B in `data` and layer C in
//! `identity`, each a JSON document inside a JSON string) into a `Delivery`; when it decodes,
//! its core events and envelopes, applied to an inbox, never panic.
//!
//! Two modes: the raw string; and a structured delivery whose three layers are built from
//! arbitrary JSON values (with the documented field names and event types most of the time),
//! so that the fuzzer gets past the outer layers.

#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use arbitrary::{Arbitrary, Result, Unstructured};
use inbox_core::{Inbox, Timestamp};
use inbox_fuzz::{Json, START, site_config, string, value};
use inbox_wix::webhook::{
    BUTTON_INTERACTED, CONVERSATION_FQDN, CONVERSATIONS_MERGED, Delivery, MESSAGE_FQDN,
    SENT_TO_BUSINESS, SENT_TO_PARTICIPANT,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const FQDNS: &[&str] = &[MESSAGE_FQDN, CONVERSATION_FQDN, "wix.contacts.v4.contact"];
const SLUGS: &[&str] = &[
    SENT_TO_BUSINESS,
    SENT_TO_PARTICIPANT,
    BUTTON_INTERACTED,
    CONVERSATIONS_MERGED,
    "created",
];

/// One documented member: its name, and how to make a plausible value of it.
type Member<'a> = (&'a str, &'a dyn Fn(&mut Unstructured<'_>) -> Result<Value>);

/// A JSON object with some documented members (each present or not, each either plausible
/// or arbitrary) plus arbitrary extra members.
fn object(u: &mut Unstructured<'_>, members: &[Member<'_>]) -> Result<Value> {
    let mut map = Map::new();
    for (name, make) in members {
        if u.ratio(7, 8)? {
            let v = if u.ratio(7, 8)? {
                make(u)?
            } else {
                value(u, 3)?
            };
            map.insert((*name).to_owned(), v);
        }
    }
    for _ in 0..u.int_in_range(0..=2)? {
        map.insert(string(u)?, value(u, 3)?);
    }
    Ok(Value::Object(map))
}

fn guid(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=3)? {
        0 => json!(format!(
            "00000000-0000-0000-0000-{:012x}",
            u.int_in_range(0u64..=5)?
        )),
        1 => json!("6fa459ea-ee8a-3ca4-894e-db77e160355e"),
        2 => json!(String::arbitrary(u)?),
        _ => value(u, 1)?,
    })
}

fn text(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(Value::String(string(u)?))
}

fn date(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=2)? {
        0 => json!("2024-01-02T03:04:05.678Z"),
        1 => json!(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            u.int_in_range(0..=9999)?,
            u.int_in_range(0..=13)?,
            u.int_in_range(0..=32)?,
            u.int_in_range(0..=25)?,
            u.int_in_range(0..=61)?,
            u.int_in_range(0..=61)?,
            u.int_in_range(0..=999)?
        )),
        _ => json!(String::arbitrary(u)?),
    })
}

fn identity(u: &mut Unstructured<'_>) -> Result<Value> {
    object(
        u,
        &[
            ("identityType", &|u| {
                Ok(json!(*u.choose(&[
                    "ANONYMOUS_VISITOR",
                    "MEMBER",
                    "WIX_USER",
                    "APP",
                    "UNKNOWN"
                ])?))
            }),
            ("anonymousVisitorId", &guid),
            ("memberId", &guid),
            ("wixUserId", &guid),
            ("appId", &guid),
            ("contactId", &guid),
        ],
    )
}

fn message(u: &mut Unstructured<'_>) -> Result<Value> {
    object(
        u,
        &[
            ("id", &|u| {
                Ok(json!(format!(
                    "{}",
                    u.int_in_range(0u64..=2_000_000_000_000_000)?
                )))
            }),
            ("sequence", &|u| {
                Ok(json!(format!("{}", i64::arbitrary(u)?)))
            }),
            ("createdDate", &date),
            ("direction", &|u| {
                Ok(json!(*u.choose(&[
                    "BUSINESS_TO_PARTICIPANT",
                    "PARTICIPANT_TO_BUSINESS",
                    "UNKNOWN_DIRECTION"
                ])?))
            }),
            ("visibility", &|u| {
                Ok(json!(*u.choose(&[
                    "BUSINESS",
                    "BUSINESS_AND_PARTICIPANT",
                    "UNKNOWN_VISIBILITY"
                ])?))
            }),
            ("sender", &identity),
            ("content", &|u| {
                Ok(match u.int_in_range(0..=4)? {
                    0 => json!({"basic": {"items": [{"text": string(u)?}]}}),
                    1 => json!({"minimal": {"text": string(u)?}}),
                    2 => json!({"template": {"title": string(u)?, "buttons": [
                        {"label": string(u)?, "postbackProperties": {"interactionId": string(u)?}}]}}),
                    3 => json!({"system": {"text": string(u)?}}),
                    _ => value(u, 4)?,
                })
            }),
            ("badges", &|u| value(u, 2)),
            ("targetChannels", &|u| {
                Ok(json!([*u.choose(&["CHAT", "EMAIL", "SMS", "X"])?]))
            }),
            ("appId", &guid),
            ("silent", &|u| value(u, 0)),
        ],
    )
}

fn body(u: &mut Unstructured<'_>, slug: &str) -> Result<Value> {
    match slug {
        SENT_TO_BUSINESS | SENT_TO_PARTICIPANT => {
            object(u, &[("conversationId", &guid), ("message", &message)])
        }
        BUTTON_INTERACTED => object(
            u,
            &[
                ("conversationId", &guid),
                ("appId", &guid),
                ("interactionId", &text),
                ("interactedBy", &identity),
            ],
        ),
        CONVERSATIONS_MERGED => object(
            u,
            &[
                ("oldConversationIds", &|u| {
                    let n = u.int_in_range(0..=3)?;
                    let mut v = Vec::new();
                    for _ in 0..n {
                        v.push(guid(u)?);
                    }
                    Ok(Value::Array(v))
                }),
                ("targetConversationId", &guid),
            ],
        ),
        _ => value(u, 4),
    }
}

#[derive(Debug)]
struct Structured(String);

impl<'a> Arbitrary<'a> for Structured {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let fqdn = if u.ratio(7, 8)? {
            (*u.choose(FQDNS)?).to_owned()
        } else {
            string(u)?
        };
        let slug = if u.ratio(7, 8)? {
            (*u.choose(SLUGS)?).to_owned()
        } else {
            string(u)?
        };
        let body_value = body(u, &slug)?;
        let action_event = match u.int_in_range(0..=3)? {
            0 | 1 => json!({"body": body_value}),
            2 => json!({"bodyAsJson": body_value.to_string()}),
            _ => value(u, 2)?,
        };
        let entity_id = if u.ratio(1, 2)? {
            json!(format!("{}", u.int_in_range(0u64..=2_000_000_000_000_000)?))
        } else {
            value(u, 0)?
        };
        let b = object(
            u,
            &[
                ("id", &guid),
                ("entityFqdn", &|_| Ok(json!(fqdn))),
                ("slug", &|_| Ok(json!(slug))),
                ("entityId", &|_| Ok(entity_id.clone())),
                ("eventTime", &date),
                ("actionEvent", &|_| Ok(action_event.clone())),
            ],
        )?;
        let c = identity(u)?;
        let event_type = if u.ratio(7, 8)? {
            format!("{fqdn}_{slug}")
        } else {
            string(u)?
        };
        let b_text = if u.ratio(15, 16)? {
            b.to_string()
        } else {
            Json::arbitrary(u)?.0.to_string()
        };
        let a = object(
            u,
            &[
                ("eventType", &|_| Ok(json!(event_type))),
                ("instanceId", &|u| Ok(json!(string(u)?))),
                ("data", &|_| Ok(json!(b_text))),
                ("identity", &|_| Ok(json!(c.to_string()))),
            ],
        )?;
        Ok(Structured(a.to_string()))
    }
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String),
    Structured(Structured),
}

fuzz_target!(|input: Input| {
    let text = match &input {
        Input::Raw(s) => s.as_str(),
        Input::Structured(s) => s.0.as_str(),
    };
    match Delivery::from_data(text) {
        Ok(delivery) => {
            let _ = delivery.core_events();
            let envelopes = delivery.envelopes(Timestamp::from_micros(START));
            let mut inbox = Inbox::new(site_config());
            for e in &envelopes {
                inbox.apply(e);
            }
            // Applying a delivery twice changes nothing (invariant 4).
            let once = inbox.clone();
            for e in &envelopes {
                inbox.apply(e);
            }
            assert!(inbox == once, "a delivery applied twice differs from once");
        }
        Err(e) => {
            let w = e.to_wix();
            inbox_fuzz::check_error(&w);
        }
    }
});
