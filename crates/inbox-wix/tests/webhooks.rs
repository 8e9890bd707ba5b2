//! Webhooks: what we announce verifies and decodes back to the same facts; every refusal the
//! issue lists is a typed error with its Wix JSON; a replica converges whatever the order and
//! the repeats of its deliveries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use expect_test::expect;
use inbox_core::contacts::{ContactDraft, ContactEmail, EntryTag};
use inbox_core::message::{ButtonDraft, ContentDraft, TemplateDraft};
use inbox_core::{
    Command, Direction, Event, Inbox, InboxConfig, MessageDraft, ParticipantId, SendAs, SiteId,
    Timestamp,
};
use inbox_wix::webhook::{
    Delivery, Ingested, Replica, WebhookError, WebhookEvent, WebhookSigner, announcements,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: i64 = T0 + 3_600 * 1_000_000;

fn now() -> Timestamp {
    Timestamp::from_micros(NOW)
}

#[test]
fn every_announced_event_verifies_and_decodes_to_the_same_facts() {
    let (w, log) = flow();
    let signer = app_signer();
    let verifier = app_verifier();
    let announced = log;
    let kinds: Vec<String> = announced.iter().map(|a| a.event_type()).collect();
    assert_eq!(
        kinds,
        [
            "wix.crm.inbox.v2.message_message_sent_to_business",
            "wix.crm.inbox.v2.message_message_sent_to_participant",
            "wix.crm.inbox.v2.message_button_interacted",
            "wix.contacts.v4.contact_created",
            "wix.crm.inbox.v2.conversation_conversations_merged",
        ]
    );
    for a in &announced {
        let token = a.sign(&signer, now(), 300).unwrap();
        let delivery = verifier.verify(&token, now()).unwrap();
        assert_eq!(delivery.event_id, a.id, "the event id survives the trip");
        assert_eq!(delivery.instance_id, SiteId::new(SITE));
        match &delivery.event {
            WebhookEvent::MessageSentToBusiness { message, .. }
            | WebhookEvent::MessageSentToParticipant { message, .. } => {
                // Every field round-trips; the conversation is the one that was live when
                // the message was sent (here: the one it was sent to).
                assert_eq!(message, w.inbox.message(message.id).unwrap());
            }
            WebhookEvent::ButtonInteracted {
                interaction_id,
                message_id,
                app_id,
                ..
            } => {
                assert_eq!(interaction_id, "book-sunday");
                assert!(w.inbox.message(*message_id).is_some());
                assert_eq!(*app_id, Some(APP));
            }
            WebhookEvent::ConversationsMerged { sources, target } => {
                assert_eq!(sources.len(), 1);
                assert_eq!(w.inbox.root_of(sources[0]), *target);
            }
            WebhookEvent::ContactCreated { contact } => {
                assert_eq!(Some(contact), w.inbox.contacts().get(contact.id));
            }
            other => panic!("not announced by this flow: {other:?}"),
        }
    }
}

#[test]
fn an_announcement_has_the_documented_nesting() {
    let (_, log) = flow();
    let a = &log[0];
    let token = a.sign(&app_signer(), now(), 300).unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        300
    );
    let layer_a: Value = serde_json::from_str(payload["data"].as_str().unwrap()).unwrap();
    let layer_b: Value = serde_json::from_str(layer_a["data"].as_str().unwrap()).unwrap();
    let layer_c: Value = serde_json::from_str(layer_a["identity"].as_str().unwrap()).unwrap();
    expect![[r#"
        {
          "accountInfo": {
            "siteId": "6f1c0a3e-2b7d-4c55-9a0e-0d9c1b2a3f40"
          },
          "data": "{\"actionEvent\":{\"body\":{\"conversationId\":\"00000000-0000-0000-0000-000000010001\",\"message\":{\"appId\":\"00000000-0000-0000-0000-000000000a99\",\"badges\":[],\"content\":{\"basic\":{\"items\":[{\"text\":\"Do you open on Sundays?\"}]}},\"createdDate\":\"2023-11-14T22:13:21Z\",\"direction\":\"PARTICIPANT_TO_BUSINESS\",\"id\":\"1700000001000000\",\"sender\":{\"anonymousVisitorId\":\"00000000-0000-0000-0000-00000000a001\"},\"sequence\":\"1700000001000000\",\"silent\":false,\"targetChannelIds\":[],\"targetChannels\":[],\"visibility\":\"BUSINESS_AND_PARTICIPANT\"}}},\"entityFqdn\":\"wix.crm.inbox.v2.message\",\"entityId\":\"1700000001000000\",\"eventTime\":\"2023-11-14T22:13:21Z\",\"id\":\"00000000-0000-0000-0000-000000010003\",\"slug\":\"message_sent_to_business\"}",
          "eventType": "wix.crm.inbox.v2.message_message_sent_to_business",
          "identity": "{\"anonymousVisitorId\":\"00000000-0000-0000-0000-00000000a001\",\"identityType\":\"ANONYMOUS_VISITOR\"}",
          "instanceId": "6f1c0a3e-2b7d-4c55-9a0e-0d9c1b2a3f40"
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&layer_a).unwrap());
    assert_eq!(layer_b["slug"], "message_sent_to_business");
    assert_eq!(layer_b["id"], a.id.to_string());
    assert_eq!(
        layer_b["entityId"],
        layer_b["actionEvent"]["body"]["message"]["id"]
    );
    assert_eq!(layer_c["identityType"], "ANONYMOUS_VISITOR");
}

// ------------------------------------------------------------------------------------------
// refusals

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with any header and claims, signed RS256 with `pem` (or with `alg` by
/// jsonwebtoken where it can).
fn token_with(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn app_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&app_private_pem()).unwrap()
}

/// Layer A as a string, for a body of the given event.
fn data_for(fqdn: &str, slug: &str, entity_id: &str, body: Value) -> String {
    let b = json!({"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "entityFqdn": fqdn, "slug": slug,
        "entityId": entity_id, "eventTime": "2023-11-14T22:13:20Z", "actionEvent": {"body": body}});
    json!({"eventType": format!("{fqdn}_{slug}"), "instanceId": SITE, "data": b.to_string(),
        "identity": json!({"identityType": "APP", "appId": "00000000-0000-0000-0000-000000000a99"}).to_string()})
    .to_string()
}

fn merged_data() -> String {
    data_for(
        "wix.crm.inbox.v2.conversation",
        "conversations_merged",
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        json!({"oldConversationIds": ["6fa459ea-ee8a-3ca4-894e-db77e160355e"],
               "targetConversationId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}),
    )
}

fn claims(data: Value) -> Value {
    let iat = NOW / 1_000_000;
    json!({"data": data, "iat": iat, "exp": iat + 300})
}

/// Verifies `token` and returns the error with its Wix body, for the snapshots.
fn refusal(token: &str) -> (WebhookError, String) {
    let err = app_verifier().verify(token, now()).unwrap_err();
    let wix = err.to_wix();
    (err.clone(), format!("{} {}", wix.status(), wix.body()))
}

#[test]
fn alg_none_is_refused_before_any_key_is_used() {
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(Value::String(merged_data())))
    );
    let (err, wix) = refusal(&token);
    assert_eq!(err, WebhookError::AlgorithmRefused("none".into()));
    expect![[r#"401 {"details":{"applicationError":{"code":"INVALID_WEBHOOK_SIGNATURE","data":{},"description":"webhook JWT algorithm \"none\" is refused; only RS256 is accepted"}},"message":"webhook JWT algorithm \"none\" is refused; only RS256 is accepted"}"#]].assert_eq(&wix);
}

#[test]
fn every_hmac_algorithm_is_refused_even_keyed_with_the_public_key() {
    // The classic key-confusion attack: HMAC keyed with the (public) PEM text.
    let secret = EncodingKey::from_secret(app_public_pem().as_bytes());
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = token_with(alg, &secret, &claims(Value::String(merged_data())));
        let (err, _) = refusal(&token);
        assert_eq!(err, WebhookError::AlgorithmRefused(format!("{alg:?}")));
    }
}

#[test]
fn other_rsa_algorithms_are_refused_too() {
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = token_with(alg, &app_key(), &claims(Value::String(merged_data())));
        assert_eq!(
            refusal(&token).0,
            WebhookError::AlgorithmRefused(format!("{alg:?}"))
        );
    }
}

#[test]
fn a_wrong_key_and_a_tampered_payload_are_refused() {
    let other = EncodingKey::from_rsa_pem(&other_private_pem()).unwrap();
    let token = token_with(
        Algorithm::RS256,
        &other,
        &claims(Value::String(merged_data())),
    );
    let (err, wix) = refusal(&token);
    assert_eq!(err, WebhookError::BadSignature);
    expect![[r#"401 {"details":{"applicationError":{"code":"INVALID_WEBHOOK_SIGNATURE","data":{},"description":"webhook JWT signature does not verify with the configured public key"}},"message":"webhook JWT signature does not verify with the configured public key"}"#]].assert_eq(&wix);

    let good = token_with(
        Algorithm::RS256,
        &app_key(),
        &claims(Value::String(merged_data())),
    );
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = b64(&claims(Value::String(
        merged_data().replace("1b4e28ba", "2b4e28ba"),
    )));
    parts[1] = &forged;
    assert_eq!(refusal(&parts.join(".")).0, WebhookError::BadSignature);
}

#[test]
fn an_expired_token_and_one_without_expiry_are_refused() {
    let iat = NOW / 1_000_000 - 3_600;
    let stale = json!({"data": merged_data(), "iat": iat, "exp": iat + 300});
    let (err, wix) = refusal(&token_with(Algorithm::RS256, &app_key(), &stale));
    assert_eq!(
        err,
        WebhookError::Expired {
            exp: iat + 300,
            now: NOW / 1_000_000
        }
    );
    assert!(wix.starts_with("401 "), "{wix}");

    // Within the leeway it passes: clocks differ a little.
    let just = json!({"data": merged_data(), "iat": iat, "exp": NOW / 1_000_000 - 30});
    assert!(
        app_verifier()
            .verify(&token_with(Algorithm::RS256, &app_key(), &just), now())
            .is_ok()
    );

    let forever = json!({"data": merged_data(), "iat": iat});
    assert_eq!(
        refusal(&token_with(Algorithm::RS256, &app_key(), &forever)).0,
        WebhookError::MissingExpiry
    );
}

/// A header that marks extensions critical (RFC 7515 section 4.1.11): the recipient must
/// refuse what it does not understand, and this one understands none, even with a good
/// signature.
#[test]
fn a_header_with_critical_extensions_is_refused_though_signed() {
    let header = json!({"alg": "RS256", "typ": "JWT", "crit": ["exp-ext"], "exp-ext": true});
    let signing_input = format!(
        "{}.{}",
        b64(&header),
        b64(&claims(Value::String(merged_data())))
    );
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &app_key(), Algorithm::RS256).unwrap();
    let token = format!("{signing_input}.{signature}");
    let (err, wix) = refusal(&token);
    assert_eq!(err, WebhookError::CriticalExtension(vec!["exp-ext".into()]));
    assert!(wix.starts_with("401 "), "{wix}");
}

#[test]
fn a_token_not_valid_yet_is_refused_beyond_the_leeway() {
    let iat = NOW / 1_000_000;
    let later = json!({"data": merged_data(), "iat": iat, "exp": iat + 7_200, "nbf": iat + 3_600});
    let (err, wix) = refusal(&token_with(Algorithm::RS256, &app_key(), &later));
    assert_eq!(
        err,
        WebhookError::NotYetValid {
            nbf: iat + 3_600,
            now: iat
        }
    );
    assert!(wix.starts_with("401 "), "{wix}");
    // Within the leeway, and in the past, it passes.
    for nbf in [iat + 30, iat - 30] {
        let fine = json!({"data": merged_data(), "iat": iat, "exp": iat + 300, "nbf": nbf});
        assert!(
            app_verifier()
                .verify(&token_with(Algorithm::RS256, &app_key(), &fine), now())
                .is_ok(),
            "nbf {nbf}"
        );
    }
    let odd = json!({"data": merged_data(), "iat": iat, "exp": iat + 300, "nbf": "soon"});
    assert!(matches!(
        refusal(&token_with(Algorithm::RS256, &app_key(), &odd)).0,
        WebhookError::Payload { .. }
    ));
}

#[test]
fn a_payload_that_is_not_the_documented_nesting_is_refused() {
    let signed = |claims: Value| token_with(Algorithm::RS256, &app_key(), &claims);
    // `data` must be a string holding layer A, not the object itself.
    let a: Value = serde_json::from_str(&merged_data()).unwrap();
    let (err, wix) = refusal(&signed(claims(a.clone())));
    assert_eq!(
        err,
        WebhookError::Payload {
            layer: "jwt",
            reason: "data must be a JSON string".into()
        }
    );
    expect![[r#"400 {"details":{"applicationError":{"code":"INVALID_WEBHOOK_PAYLOAD","data":{},"description":"webhook payload, jwt: data must be a JSON string"}},"message":"webhook payload, jwt: data must be a JSON string"}"#]].assert_eq(&wix);

    // Layer A's `data` must be a string holding layer B.
    let mut nested = a.clone();
    nested["data"] = serde_json::from_str(a["data"].as_str().unwrap()).unwrap();
    let (err, _) = refusal(&signed(claims(Value::String(nested.to_string()))));
    assert!(
        matches!(err, WebhookError::Payload { layer: "data", .. }),
        "{err:?}"
    );

    // eventType must be entityFqdn_slug.
    let mut mismatched = a.clone();
    mismatched["eventType"] = json!("wix.crm.inbox.v2.message_message_sent_to_business");
    let (err, _) = refusal(&signed(claims(Value::String(mismatched.to_string()))));
    assert!(
        matches!(err, WebhookError::Payload { layer: "data", .. }),
        "{err:?}"
    );

    // The identity layer must be a string too.
    let mut identity = a.clone();
    identity["identity"] = json!({"identityType": "APP"});
    let (err, _) = refusal(&signed(claims(Value::String(identity.to_string()))));
    assert!(
        matches!(err, WebhookError::Payload { layer: "data", .. }),
        "{err:?}"
    );

    // Ids that are not GUIDs, a body that is missing.
    let bad_id = merged_data().replace("6fa459ea-ee8a-3ca4-894e-db77e160355e", "not-a-guid");
    let (err, _) = refusal(&signed(claims(Value::String(bad_id))));
    assert!(
        matches!(&err, WebhookError::Payload { layer: "actionEvent.body", reason } if reason.contains("not-a-guid")),
        "{err:?}"
    );
    let no_body = data_for(
        "wix.crm.inbox.v2.conversation",
        "conversations_merged",
        "x",
        Value::Null,
    )
    .replace(r#"\"body\":null"#, "");
    let (err, _) = refusal(&signed(claims(Value::String(no_body))));
    assert!(matches!(err, WebhookError::Payload { .. }), "{err:?}");

    // Not a JWT at all.
    assert!(matches!(refusal("hello").0, WebhookError::NotAJwt(_)));
    assert!(matches!(refusal("a.b.c.d").0, WebhookError::NotAJwt(_)));
}

#[test]
fn a_click_needs_the_message_id_in_entity_id() {
    let body = json!({"conversationId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "interactionId": "x",
        "interactedBy": {"anonymousVisitorId": "6fa459ea-ee8a-3ca4-894e-db77e160355e"}});
    let bad = data_for(
        "wix.crm.inbox.v2.message",
        "button_interacted",
        "1b4e28ba",
        body.clone(),
    );
    assert!(matches!(
        Delivery::from_data(&bad),
        Err(WebhookError::Payload {
            layer: "data.data",
            ..
        })
    ));
    let good = data_for(
        "wix.crm.inbox.v2.message",
        "button_interacted",
        "1640849952353627",
        body,
    );
    let d = Delivery::from_data(&good).unwrap();
    assert!(
        matches!(d.event, WebhookEvent::ButtonInteracted { message_id, .. } if message_id.0 == 1_640_849_952_353_627)
    );
}

#[test]
fn other_event_types_are_acknowledged_and_ignored() {
    let data = data_for(
        "wix.bookings.v2.booking",
        "booking_created",
        "x",
        json!({"booking": {}}),
    );
    let d = Delivery::from_data(&data).unwrap();
    assert_eq!(
        d.event,
        WebhookEvent::Unsupported {
            event_type: "wix.bookings.v2.booking_booking_created".into()
        }
    );
    assert!(d.core_events().is_empty());
}

#[test]
fn body_as_json_is_read_when_body_is_absent() {
    let data = merged_data();
    let mut a: Value = serde_json::from_str(&data).unwrap();
    let mut b: Value = serde_json::from_str(a["data"].as_str().unwrap()).unwrap();
    let body = b["actionEvent"]["body"].take();
    b["actionEvent"] = json!({"bodyAsJson": body.to_string()});
    a["data"] = Value::String(b.to_string());
    let d = Delivery::from_data(&a.to_string()).unwrap();
    assert!(matches!(d.event, WebhookEvent::ConversationsMerged { .. }));
}

#[test]
fn a_repeated_delivery_is_folded_once() {
    let d = Delivery::from_data(&merged_data()).unwrap();
    let mut replica = Replica::new(InboxConfig::new(SiteId::new(SITE), [1; 16]));
    let first = replica.ingest(&d, now());
    assert!(matches!(&first, Ingested::Applied(e) if e.len() == 1));
    assert_eq!(replica.ingest(&d, now()), Ingested::Duplicate);
    // The envelopes carry ids derived from the delivery: a repeat gets the same ones.
    assert_eq!(
        d.envelopes(now()),
        d.envelopes(Timestamp::from_micros(0))
            .into_iter()
            .map(|mut e| {
                e.recorded_at = now();
                e
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn keys_that_are_not_rsa_pem_are_refused() {
    assert!(WebhookSigner::from_private_pem(b"not a key").is_err());
    assert!(
        inbox_wix::webhook::WebhookVerifier::from_public_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err()
    );
}

// ------------------------------------------------------------------------------------------
// convergence of a replica

#[derive(Clone, Debug)]
enum Op {
    Write {
        visitor: u8,
        to_business: bool,
        visible: bool,
    },
    Identify {
        visitor: u8,
        contact: u8,
    },
    Click {
        visitor: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u8, any::<bool>(), any::<bool>()).prop_map(|(visitor, to_business, visible)| Op::Write { visitor, to_business, visible }),
        1 => (0..4u8, 0..3u8).prop_map(|(visitor, contact)| Op::Identify { visitor, contact }),
        1 => (0..4u8).prop_map(|visitor| Op::Click { visitor }),
    ]
}

/// Runs the ops on an emulator and returns every announcement as its delivery, with the
/// emulator's state.
fn emulated(ops: &[Op]) -> (Vec<Delivery>, Inbox) {
    let mut w = World::new();
    for c in 0..3u128 {
        w.run(&Command::CreateContact {
            contact_id: contact(c),
            draft: ContactDraft {
                emails: vec![ContactEmail {
                    email: format!("c{c}@example.com"),
                    tag: EntryTag::Main,
                    primary: true,
                }],
                ..ContactDraft::default()
            },
        });
    }
    let mut out = Vec::new();
    for op in ops {
        let events = match op {
            Op::Write {
                visitor: v,
                to_business,
                visible,
            } => {
                let p = ParticipantId::Visitor(visitor(u128::from(*v)));
                let mut events = w.run(&Command::GetOrCreateConversation { participant: p });
                let conv = w.inbox.live_conversation_of(p).unwrap();
                let direction = if *to_business {
                    Direction::ParticipantToBusiness
                } else {
                    Direction::BusinessToParticipant
                };
                let mut message = if *visible {
                    MessageDraft::text("hi", direction)
                } else {
                    MessageDraft {
                        content: ContentDraft {
                            template: Some(TemplateDraft {
                                buttons: vec![ButtonDraft {
                                    label: "ok".into(),
                                    interaction_id: Some("ok".into()),
                                    ..ButtonDraft::default()
                                }],
                                ..TemplateDraft::default()
                            }),
                            ..ContentDraft::default()
                        },
                        direction: Some(direction),
                        ..MessageDraft::default()
                    }
                };
                message.visibility = Some(if *visible {
                    inbox_core::Visibility::BusinessAndParticipant
                } else {
                    inbox_core::Visibility::Business
                });
                let send_as = if *to_business {
                    SendAs::Participant
                } else {
                    SendAs::Caller
                };
                events.extend(w.run(&Command::SendMessage {
                    conversation_id: conv,
                    message,
                    send_as,
                }));
                events
            }
            Op::Identify {
                visitor: v,
                contact: c,
            } => w
                .try_run(&Command::IdentifyVisitor {
                    visitor: visitor(u128::from(*v)),
                    contact: contact(u128::from(*c)),
                })
                .unwrap_or_default(),
            Op::Click { visitor: v } => {
                let p = ParticipantId::Visitor(visitor(u128::from(*v)));
                let Some(conv) = w.inbox.live_conversation_of(p) else {
                    continue;
                };
                let Some(m) = w
                    .inbox
                    .messages_of(conv)
                    .filter(|m| m.postback_button("ok").is_some())
                    .last()
                    .map(|m| m.id)
                else {
                    continue;
                };
                w.run(&Command::InteractWithButton {
                    conversation_id: conv,
                    message_id: m,
                    interaction_id: "ok".into(),
                })
            }
        };
        for e in &events {
            for a in announcements(e, &w.inbox) {
                out.push(Delivery::from_data(&a.data()).unwrap());
            }
        }
    }
    (out, w.inbox)
}

/// The replica holds what the emulator announced, grouped and ordered as the emulator holds
/// it: each of the emulator's live conversations with messages has the same messages, in the
/// same order, in the replica; and the replica agrees with the reference model of the events
/// it folded.
fn replica_matches_emulator(
    replica: &Replica,
    emulator: &Inbox,
    ds: &[Delivery],
) -> Result<(), String> {
    let ids = |inbox: &Inbox, c| inbox.messages_of(c).map(|m| m.id).collect::<Vec<_>>();
    for c in emulator.live_conversations() {
        let want = ids(emulator, c);
        if !want.is_empty() && ids(replica.inbox(), c) != want {
            return Err(format!(
                "{c:?}: the replica holds {:?}, the emulator {want:?}",
                ids(replica.inbox(), c)
            ));
        }
    }
    for c in replica.inbox().live_conversations() {
        let got = ids(replica.inbox(), c);
        if !got.is_empty() && ids(emulator, c) != got {
            return Err(format!(
                "{c:?}: the replica holds {got:?}, the emulator not"
            ));
        }
    }
    let events: Vec<Event> = ds.iter().flat_map(Delivery::core_events).collect();
    let model = inbox_testkit::Model::of(replica.inbox().config().clone(), &events);
    inbox_testkit::agree(replica.inbox(), &model)
}

fn fold(deliveries: &[Delivery]) -> Replica {
    let mut r = Replica::new(InboxConfig::new(SiteId::new(SITE), [1; 16]));
    for (i, d) in deliveries.iter().enumerate() {
        // The time of receipt differs with the order; the state must not.
        r.ingest(d, Timestamp::from_micros(NOW + i as i64));
    }
    r
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(64))]

    /// Any set of deliveries, shuffled and with repeats, folds to the state of folding them
    /// in order once.
    #[test]
    fn a_replica_converges_whatever_the_order_and_repeats(
        ops in proptest::collection::vec(op(), 1..24),
        order in any::<proptest::sample::Index>(),
        repeats in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        seed in any::<u64>(),
    ) {
        let (ds, emulator) = emulated(&ops);
        prop_assume!(!ds.is_empty());
        let in_order = fold(&ds);
        replica_matches_emulator(&in_order, &emulator, &ds).map_err(TestCaseError::fail)?;
        let mut shuffled = ds.clone();
        for r in &repeats {
            shuffled.push(ds[r.index(ds.len())].clone());
        }
        // A deterministic shuffle from the seed (Fisher-Yates over a xorshift stream).
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let j = (x % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let rotated = { let mut s = shuffled.clone(); let k = order.index(s.len()); s.rotate_left(k); s };
        prop_assert_eq!(&fold(&shuffled), &in_order);
        prop_assert_eq!(&fold(&rotated), &in_order);
        // And nothing was lost: every announced message is in the replica.
        for d in &ds {
            if let WebhookEvent::MessageSentToBusiness { message, .. } | WebhookEvent::MessageSentToParticipant { message, .. } = &d.event {
                prop_assert!(in_order.inbox().message(message.id).is_some());
            }
        }
    }
}

#[test]
fn the_replica_orders_each_conversation_as_the_emulator_does() {
    let ops: Vec<Op> = (0..30)
        .map(|i| match i % 7 {
            3 => Op::Identify {
                visitor: (i % 4) as u8,
                contact: (i % 3) as u8,
            },
            5 => Op::Click {
                visitor: (i % 4) as u8,
            },
            _ => Op::Write {
                visitor: (i % 4) as u8,
                to_business: i % 2 == 0,
                visible: i % 3 != 0,
            },
        })
        .collect();
    let (mut ds, emulator) = emulated(&ops);
    ds.reverse();
    let replica = fold(&ds);
    replica_matches_emulator(&replica, &emulator, &ds).unwrap();
    let events: Vec<Event> = ds.iter().flat_map(Delivery::core_events).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ConversationsMerged { .. }))
    );
}

/// The list a subscription is checked against is what `announcements` gives.
#[test]
fn the_announced_event_types_are_the_fqdn_and_slug_of_each_announcement() {
    use inbox_wix::webhook::{
        ANNOUNCED_EVENT_TYPES, BUTTON_INTERACTED, CONTACT_CREATED, CONTACT_DELETED, CONTACT_FQDN,
        CONTACT_MERGED, CONTACT_UPDATED, CONVERSATION_FQDN, CONVERSATIONS_MERGED,
        EXTENDED_FIELD_FQDN, LABEL_FQDN, MESSAGE_FQDN, SENT_TO_BUSINESS, SENT_TO_PARTICIPANT,
        event_type,
    };
    let made: Vec<String> = [
        (MESSAGE_FQDN, SENT_TO_BUSINESS),
        (MESSAGE_FQDN, SENT_TO_PARTICIPANT),
        (MESSAGE_FQDN, BUTTON_INTERACTED),
        (CONVERSATION_FQDN, CONVERSATIONS_MERGED),
        (CONTACT_FQDN, CONTACT_CREATED),
        (CONTACT_FQDN, CONTACT_UPDATED),
        (CONTACT_FQDN, CONTACT_DELETED),
        (CONTACT_FQDN, CONTACT_MERGED),
        (LABEL_FQDN, CONTACT_CREATED),
        (LABEL_FQDN, CONTACT_UPDATED),
        (LABEL_FQDN, CONTACT_DELETED),
        (EXTENDED_FIELD_FQDN, CONTACT_CREATED),
        (EXTENDED_FIELD_FQDN, CONTACT_UPDATED),
        (EXTENDED_FIELD_FQDN, CONTACT_DELETED),
    ]
    .iter()
    .map(|(f, s)| event_type(f, s))
    .collect();
    assert_eq!(made, ANNOUNCED_EVENT_TYPES);
    // Every announcement of the catalog flow has one of these types.
    let (_, recorded) = catalog_flow();
    for (_, announced) in &recorded {
        for a in announced {
            assert!(
                ANNOUNCED_EVENT_TYPES.contains(&a.event_type().as_str()),
                "{a:?}"
            );
        }
    }
}

/// Label and extended field events, announced and received back by a replica, fold to the
/// definitions the emulator holds, in any order and twice over: the saves (made, renamed) to
/// the renamed definitions, and with the deletions to none, since each fact is ordered by its
/// event time.
#[test]
fn catalog_events_round_trip_in_any_order() {
    let (_, recorded) = catalog_flow();
    let signer = app_signer();
    let verifier = app_verifier();
    let deliveries: Vec<(Event, inbox_wix::webhook::Delivery)> = recorded
        .iter()
        .flat_map(|(e, announced)| {
            announced.iter().map(|a| {
                let token = a.sign(&signer, now(), 300).unwrap();
                (e.event.clone(), verifier.verify(&token, now()).unwrap())
            })
        })
        .collect();
    let fold = |picked: &[&inbox_wix::webhook::Delivery]| {
        let mut replica = Replica::new(InboxConfig::new(SiteId::new(SITE), [1; 16]));
        for d in picked {
            replica.ingest(d, now());
        }
        replica
    };
    let saves: Vec<_> = deliveries
        .iter()
        .filter(|(e, _)| {
            matches!(
                e,
                Event::LabelSaved { .. } | Event::ExtendedFieldSaved { .. }
            )
        })
        .map(|(_, d)| d)
        .collect();
    let mut reversed = saves.clone();
    reversed.reverse();
    reversed.extend(saves.iter().copied());
    let replica = fold(&reversed);
    let catalog = replica.inbox().contacts().catalog();
    let renamed_label = recorded.iter().rev().find_map(|(e, _)| match &e.event {
        Event::LabelSaved { label, .. } => Some(label.clone()),
        _ => None,
    });
    assert_eq!(
        catalog.labels().iter().cloned().collect::<Vec<_>>(),
        renamed_label.into_iter().collect::<Vec<_>>()
    );
    assert_eq!(
        catalog
            .fields()
            .iter()
            .map(|f| f.display_name.as_str())
            .collect::<Vec<_>>(),
        ["Points"]
    );
    let mut all: Vec<_> = deliveries.iter().map(|(_, d)| d).collect();
    all.reverse();
    let replica = fold(&all);
    assert!(replica.inbox().contacts().catalog().labels().is_empty());
    assert!(replica.inbox().contacts().catalog().fields().is_empty());
}

/// Wix's entity events (a contact created, updated, deleted: `createdEvent`, `updatedEvent`,
/// `deletedEvent` instead of `actionEvent`) are verified and folded (a revision written as a
/// string, as protobuf's JSON mapping of an int64 may, is read); a layer B with no event at
/// all is refused.
#[test]
fn entity_events_are_verified_and_folded() {
    let id = "3b1e7c9a-0000-4000-8000-000000000001";
    let entity = |kind: &str, payload: Value| {
        let mut b = json!({"id": "9b2f4a1e-1c1d-4b7e-9a51-3f2f0c9d1e11",
            "entityFqdn": "wix.contacts.v4.contact", "slug": kind,
            "entityId": id,
            "eventTime": "2023-11-14T22:13:20Z"});
        if let (Some(b), Some(p)) = (b.as_object_mut(), payload.as_object()) {
            b.extend(p.clone());
        }
        json!({"eventType": format!("wix.contacts.v4.contact_{kind}"), "instanceId": SITE,
            "data": b.to_string()})
        .to_string()
    };
    let mut folded = Vec::new();
    for (kind, payload) in [
        (
            "created",
            json!({"createdEvent": {"entity": {"id": id, "revision": "1"}}}),
        ),
        (
            "updated",
            json!({"updatedEvent": {"currentEntity": {"id": id, "revision": "2",
                "info": {"name": {"first": "Jo"}}}}}),
        ),
        ("deleted", json!({"deletedEvent": {}})),
    ] {
        let token = token_with(
            Algorithm::RS256,
            &app_key(),
            &claims(Value::String(entity(kind, payload))),
        );
        let delivery = app_verifier().verify(&token, now()).unwrap();
        assert_eq!(
            delivery.event_type,
            format!("wix.contacts.v4.contact_{kind}")
        );
        folded.extend(delivery.core_events().into_iter().map(|e| e.kind()));
    }
    assert_eq!(
        folded,
        ["contact_created", "contact_updated", "contact_deleted"]
    );
    let token = token_with(
        Algorithm::RS256,
        &app_key(),
        &claims(Value::String(entity("created", json!({})))),
    );
    assert!(matches!(
        refusal(&token).0,
        WebhookError::Payload {
            layer: "data.data",
            ..
        }
    ));
}

// ------------------------------------------------------------------------------------------
// Contact events

/// Every contact change the emulator records is announced as Wix's contact events, and a
/// replica that receives them folds them back to the same records: a creation (with every
/// detail), an update, a label change, a merge (`contact_merged`, then `contact_updated` of
/// the target and `contact_deleted` of the source, both `originatedFrom: merge`, the second
/// changing nothing when folded: the merge is the fact), and a deletion.
#[test]
fn contact_events_round_trip_to_the_same_records() {
    let (w, recorded) = contacts_flow();
    let signer = app_signer();
    let verifier = app_verifier();
    let mut replica = Replica::new(InboxConfig::new(SiteId::new(SITE), [1; 16]));
    let mut types = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for (envelope, announced) in &recorded {
        for a in announced {
            assert!(ids.insert(a.id), "every announcement has its own id: {a:?}");
            types.push(a.event_type());
            let token = a.sign(&signer, now(), 300).unwrap();
            let delivery = verifier.verify(&token, now()).unwrap();
            let folded = delivery.core_events();
            match (&envelope.event, &delivery.event) {
                (Event::ContactsMerged { .. }, WebhookEvent::ContactMerged { .. }) => {
                    assert_eq!(folded, vec![envelope.event.clone()]);
                }
                (
                    Event::ContactsMerged { target, .. },
                    WebhookEvent::ContactUpdated {
                        contact,
                        originated_from,
                    },
                ) => {
                    assert_eq!(
                        (contact, originated_from.as_deref()),
                        (target, Some("merge"))
                    );
                }
                (Event::ContactsMerged { .. }, WebhookEvent::Unsupported { .. }) => {
                    assert!(folded.is_empty(), "a deletion by merge folds to nothing");
                }
                (
                    Event::ContactDeleted { contact_id, .. },
                    WebhookEvent::ContactDeleted {
                        contact_id: got, ..
                    },
                ) => {
                    assert_eq!(got, contact_id);
                }
                _ => assert_eq!(folded, vec![envelope.event.clone()], "{a:?}"),
            }
            replica.ingest(&delivery, now());
        }
    }
    assert_eq!(
        types,
        [
            "wix.contacts.v4.contact_created",
            "wix.contacts.v4.contact_created",
            "wix.contacts.v4.contact_created",
            "wix.contacts.v4.contact_updated",
            "wix.contacts.v4.contact_updated",
            "wix.contacts.v4.contact_merged",
            "wix.contacts.v4.contact_updated",
            "wix.contacts.v4.contact_deleted",
            "wix.contacts.v4.contact_deleted",
        ]
    );
    // The replica holds what the emulator holds.
    let (mine, theirs) = (w.inbox.contacts(), replica.inbox().contacts());
    assert_eq!(
        theirs.iter().collect::<Vec<_>>(),
        mine.iter().collect::<Vec<_>>()
    );
    assert_eq!(theirs.resolve(contact(2)), contact(1));
    assert!(theirs.is_deleted(contact(3)));
}

/// Wix's older deliveries carry the entity as JSON text (`entityAsJson`); a contact event
/// without its entity, or with an id that is no GUID, is refused naming the place.
#[test]
fn contact_events_read_entities_as_json_text_and_refuse_what_is_missing() {
    let jo = json!({"id": contact(1).to_string(), "revision": 2,
        "info": {"name": {"first": "Jo"}}});
    let b = |slug: &str, extra: Value| {
        let mut b = json!({"id": "e1", "entityFqdn": "wix.contacts.v4.contact", "slug": slug,
            "entityId": contact(1).to_string(), "eventTime": "2024-01-01T00:00:00Z"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"eventType": format!("wix.contacts.v4.contact_{slug}"), "instanceId": SITE,
            "data": b.to_string()})
        .to_string()
    };
    let d = Delivery::from_data(&b(
        "updated",
        json!({"updatedEvent": {"currentEntityAsJson": jo.to_string()}}),
    ))
    .unwrap();
    let WebhookEvent::ContactUpdated { contact: c, .. } = &d.event else {
        panic!("{d:?}");
    };
    assert_eq!((c.revision, c.name.first.as_deref()), (2, Some("Jo")));
    let missing = Delivery::from_data(&b("created", json!({"createdEvent": {}})));
    assert!(
        matches!(&missing, Err(e) if e.to_string().contains("createdEvent.entity")),
        "{missing:?}"
    );
    let bad_id = Delivery::from_data(&b(
        "created",
        json!({"createdEvent": {"entity": {"id": "nope", "revision": 1}}}),
    ));
    assert!(
        matches!(&bad_id, Err(e) if e.to_string().contains("not a GUID")),
        "{bad_id:?}"
    );
    // A deletion a merge caused is acknowledged and folds to nothing.
    let by_merge = Delivery::from_data(&b(
        "deleted",
        json!({"deletedEvent": {}, "originatedFrom": "merge"}),
    ))
    .unwrap();
    assert!(by_merge.core_events().is_empty());
    let deleted = Delivery::from_data(&b("deleted", json!({"deletedEvent": {}}))).unwrap();
    assert_eq!(
        deleted.core_events(),
        vec![Event::ContactDeleted {
            contact_id: contact(1),
            revision: 0
        }]
    );
}
