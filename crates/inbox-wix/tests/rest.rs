//! REST requests: they round-trip through serde (camelCase and snake_case in), List Messages
//! reads the same request from dotted parameters and from the SDK's `.r=` form, and every
//! refusal is a typed error with Wix's JSON and status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use expect_test::{Expect, expect};
use inbox_core::contacts::{ContactDraft, ContactEmail, EntryTag};
use inbox_core::{Command, ParticipantId, Timestamp};
use inbox_wix::WixError;
use inbox_wix::rest::*;
use inbox_wix::wire::{
    Badge, Basic, Button, ChannelType, ContactInfo, Content, Count, Direction, EmailItem, EmailTag,
    Form, FormField, Image, Int64, Item, Items, Message, Minimal, Name, Orientation,
    ParticipantRef, PhoneItem, PhoneTag, Postback, Template, Visibility,
};
use proptest::prelude::*;
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------
// round trips

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.:/-]{0,12}"
}

fn guid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        text().prop_map(|t| Item {
            text: Some(t),
            ..Item::default()
        }),
        (text(), proptest::option::of(0..4000u32)).prop_map(|(url, width)| Item {
            image: Some(Image {
                url: Some(url),
                width,
                ..Image::default()
            }),
            ..Item::default()
        }),
    ]
}

fn button() -> impl Strategy<Value = Button> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(label, launch, postback)| Button {
            label: Some(label),
            launch_url: launch,
            postback_properties: postback.map(|id| Postback {
                interaction_id: Some(id),
                app_id: None,
            }),
        })
}

fn content() -> impl Strategy<Value = Content> {
    (
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(item(), 0..3)),
        proptest::option::of((
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(button(), 0..3),
            proptest::option::of(prop_oneof![
                Just(Orientation::Portrait),
                Just(Orientation::Landscape)
            ]),
        )),
        proptest::option::of((text(), proptest::option::of(text()))),
        proptest::option::of(proptest::collection::vec((text(), text()), 0..3)),
    )
        .prop_map(|(preview, basic, template, minimal, form)| Content {
            preview_text: preview,
            basic: basic.map(|items| Basic { items }),
            template: template.map(|(text_lines, buttons, orientation)| Template {
                text_lines,
                buttons,
                orientation,
                ..Template::default()
            }),
            minimal: minimal.map(|(t, icon)| Minimal {
                text: Some(t),
                icon_url: icon,
                url: None,
            }),
            form: form.map(|fields| Form {
                fields: fields
                    .into_iter()
                    .map(|(name, value)| FormField { name, value })
                    .collect(),
                ..Form::default()
            }),
            ..Content::default()
        })
}

fn channel() -> impl Strategy<Value = ChannelType> {
    prop_oneof![
        Just(ChannelType::Chat),
        Just(ChannelType::Sms),
        Just(ChannelType::Whatsapp),
        Just(ChannelType::Unknown)
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        proptest::option::of(content()),
        proptest::collection::vec(
            (text(), proptest::option::of(text())).prop_map(|(text, icon_url)| Badge {
                text,
                icon_url,
                badge_visibility: None,
            }),
            0..2,
        ),
        proptest::collection::vec(channel(), 0..2),
        proptest::option::of(channel()),
        proptest::option::of(prop_oneof![
            Just(Visibility::Business),
            Just(Visibility::BusinessAndParticipant),
            Just(Visibility::Unknown)
        ]),
        proptest::option::of(prop_oneof![
            Just(Direction::BusinessToParticipant),
            Just(Direction::ParticipantToBusiness)
        ]),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<i64>().prop_map(Int64)),
    )
        .prop_map(
            |(
                content,
                badges,
                target_channels,
                source_channel,
                visibility,
                direction,
                silent,
                sequence,
            )| Message {
                content,
                badges,
                target_channels,
                source_channel,
                visibility,
                direction,
                silent,
                sequence,
                ..Message::default()
            },
        )
}

fn send_request() -> impl Strategy<Value = SendMessageRequest> {
    (
        proptest::option::of(guid()),
        proptest::option::of(message()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![
            Just(SendAsWire::Caller),
            Just(SendAsWire::Participant),
            Just(SendAsWire::BusinessUser)
        ]),
    )
        .prop_map(|(conversation_id, message, send_notifications, send_as)| {
            SendMessageRequest {
                conversation_id,
                message,
                send_notifications,
                silent: send_notifications.map(|n| !n),
                send_as,
                direction: None,
            }
        })
}

fn list_request() -> impl Strategy<Value = ListMessagesRequest> {
    (
        proptest::option::of(guid()),
        proptest::option::of(prop_oneof![
            Just(ListVisibility::Business),
            Just(ListVisibility::BusinessAndParticipant)
        ]),
        proptest::option::of((
            proptest::option::of(0..200u64),
            proptest::option::of("[A-Za-z0-9_-]{1,20}"),
        )),
        proptest::option::of(proptest::option::of(prop_oneof![
            Just(Order::Asc),
            Just(Order::Desc)
        ])),
    )
        .prop_map(
            |(conversation_id, visibility, paging, sorting)| ListMessagesRequest {
                conversation_id,
                visibility,
                paging: paging.map(|(limit, cursor)| CursorPaging {
                    limit: limit.map(Count),
                    cursor,
                }),
                sorting: sorting.map(|order| Sorting {
                    field_name: Some("sequence".into()),
                    order,
                }),
            },
        )
}

fn contact_request() -> impl Strategy<Value = CreateContactRequest> {
    (
        proptest::option::of((proptest::option::of(text()), proptest::option::of(text()))),
        proptest::collection::vec((text(), any::<bool>()), 0..3),
        proptest::collection::vec(text(), 0..2),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |(name, emails, phones, allow_duplicates)| CreateContactRequest {
                info: Some(ContactInfo {
                    name: name.map(|(first, last)| Name { first, last }),
                    emails: Some(Items {
                        items: emails
                            .into_iter()
                            .map(|(email, primary)| EmailItem {
                                email,
                                tag: Some(EmailTag::Work),
                                primary: Some(primary),
                                ..EmailItem::default()
                            })
                            .collect(),
                    }),
                    phones: Some(Items {
                        items: phones
                            .into_iter()
                            .map(|phone| PhoneItem {
                                phone,
                                tag: Some(PhoneTag::Mobile),
                                ..PhoneItem::default()
                            })
                            .collect(),
                    }),
                    ..ContactInfo::default()
                }),
                allow_duplicates,
            },
        )
}

/// Rewrites every key to snake_case, as the documentation's curl examples spell them.
fn snake(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let mut s = String::new();
                    for c in k.chars() {
                        if c.is_ascii_uppercase() {
                            s.push('_');
                            s.push(c.to_ascii_lowercase());
                        } else {
                            s.push(c);
                        }
                    }
                    (s, snake(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(snake).collect()),
        other => other,
    }
}

fn round_trip<T>(req: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_value(req).unwrap();
    let camel: T = parse_body(json.to_string().as_bytes()).unwrap();
    prop_assert_eq!(&camel, req);
    let snake: T = parse_body(snake(json).to_string().as_bytes()).unwrap();
    prop_assert_eq!(&snake, req);
    Ok(())
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(256))]

    #[test]
    fn send_message_requests_round_trip(req in send_request()) {
        round_trip(&req)?;
        // Whatever the body, mapping it to a command never panics: a command or a 400.
        if let Err(e) = req.to_command() {
            prop_assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn get_or_create_requests_round_trip(c in proptest::option::of(guid()), v in proptest::option::of(guid()), m in proptest::option::of(guid())) {
        let req = GetOrCreateConversationRequest { participant_id: Some(ParticipantRef { contact_id: c, anonymous_visitor_id: v, member_id: m }) };
        round_trip(&req)?;
        let ids = [&req.participant_id.as_ref().unwrap().contact_id, &req.participant_id.as_ref().unwrap().anonymous_visitor_id, &req.participant_id.as_ref().unwrap().member_id];
        prop_assert_eq!(req.to_command().is_ok(), ids.iter().filter(|i| i.is_some()).count() == 1);
    }

    #[test]
    fn create_contact_requests_round_trip(req in contact_request()) {
        round_trip(&req)?;
    }

    #[test]
    fn merge_requests_round_trip(revision in proptest::option::of(any::<i64>()), sources in proptest::collection::vec(guid(), 0..7)) {
        round_trip(&MergeContactsRequest { target_contact_revision: revision.map(Int64), source_contact_ids: sources })?;
    }

    /// List Messages reads the same request from JSON, from the SDK's `.r=` form and from
    /// dotted query parameters (camelCase or snake_case).
    #[test]
    fn list_requests_read_the_same_in_every_form(req in list_request()) {
        round_trip(&req)?;
        let json = serde_json::to_value(&req).unwrap();
        let r_form = ListMessagesRequest::from_query(&format!(".r={}", URL_SAFE_NO_PAD.encode(json.to_string()))).unwrap();
        prop_assert_eq!(&r_form, &req);
        let mut dotted = form_urlencoded::Serializer::new(String::new());
        let mut snake_dotted = form_urlencoded::Serializer::new(String::new());
        flatten(&json, "", &mut |k, v| { dotted.append_pair(k, v); });
        flatten(&snake(json.clone()), "", &mut |k, v| { snake_dotted.append_pair(k, v); });
        let dotted = ListMessagesRequest::from_query(&dotted.finish()).unwrap();
        let snake_dotted = ListMessagesRequest::from_query(&snake_dotted.finish()).unwrap();
        // Dotted parameters cannot spell an empty object (`paging: {}`), so these are
        // compared as the core request they make.
        prop_assert_eq!(dotted.to_core(), req.to_core());
        prop_assert_eq!(snake_dotted.to_core(), req.to_core());
    }
}

fn flatten(v: &Value, prefix: &str, out: &mut dyn FnMut(&str, &str)) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        Value::String(s) => out(prefix, s),
        other => out(prefix, &other.to_string()),
    }
}

// ------------------------------------------------------------------------------------------
// refusals: the typed error and its Wix JSON

fn check(result: Result<impl std::fmt::Debug, WixError>, expect: Expect) {
    let e = result.expect_err("refused");
    expect.assert_eq(&format!("{} {}", e.status(), e.body()));
}

/// An emulator with one contact (Jo) and the conversation of one visitor.
fn world() -> (World, String) {
    use inbox_core::catalog::FieldDataType;
    let mut w = World::new();
    w.define(
        &["VIP", "Lead"],
        &[
            ("Tier", FieldDataType::Text),
            ("Score", FieldDataType::Number),
        ],
    );
    w.run(&Command::CreateContact {
        contact_id: contact(1),
        draft: ContactDraft {
            emails: vec![ContactEmail {
                email: "jo@example.com".into(),
                tag: EntryTag::Main,
                primary: true,
            }],
            ..ContactDraft::default()
        },
    });
    let p = ParticipantId::Visitor(visitor(1));
    w.run(&Command::GetOrCreateConversation { participant: p });
    let conv = w.inbox.live_conversation_of(p).unwrap().to_string();
    (w, conv)
}

fn send(w: &mut World, body: Value) -> Result<Vec<inbox_core::EventEnvelope>, WixError> {
    let req: SendMessageRequest = parse_body(body.to_string().as_bytes())?;
    Ok(w.try_run(&req.to_command()?)?)
}

#[test]
fn bodies_that_are_not_json_objects_are_refused() {
    check(
        parse_body::<SendMessageRequest>(b"{\"conversationId\": "),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"request body is not valid JSON: EOF while parsing a value at line 1 column 19","field":"","violatedRule":"FORMAT"}]}},"message":"request body is not valid JSON: EOF while parsing a value at line 1 column 19"}"#
        ]],
    );
    check(
        parse_body::<SendMessageRequest>(b"[1, 2]"),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"request body must be a JSON object","field":"","violatedRule":"FORMAT"}]}},"message":"request body must be a JSON object"}"#
        ]],
    );
}

#[test]
fn a_field_of_the_wrong_type_or_enum_is_named_by_its_path() {
    check(
        parse_body::<SendMessageRequest>(br#"{"message": {"visibility": "EVERYONE"}}"#),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"message.visibility: unknown variant `EVERYONE`, expected one of `UNKNOWN_VISIBILITY`, `BUSINESS_AND_PARTICIPANT`, `BUSINESS`","field":"message.visibility","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"message.visibility: unknown variant `EVERYONE`, expected one of `UNKNOWN_VISIBILITY`, `BUSINESS_AND_PARTICIPANT`, `BUSINESS`"}"#
        ]],
    );
    check(
        parse_body::<SendMessageRequest>(
            br#"{"message": {"content": {"basic": {"items": [{"text": 5}]}}}}"#,
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"message.content.basic.items[0].text: invalid type: integer `5`, expected a string","field":"message.content.basic.items[0].text","violatedRule":"FORMAT"}]}},"message":"message.content.basic.items[0].text: invalid type: integer `5`, expected a string"}"#
        ]],
    );
    // snake_case input is named in camelCase, the way the answer spells it.
    check(
        parse_body::<SendMessageRequest>(br#"{"send_as": "SOMEONE"}"#),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"sendAs: unknown variant `SOMEONE`, expected one of `CALLER`, `PARTICIPANT`, `BUSINESS_USER`","field":"sendAs","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"sendAs: unknown variant `SOMEONE`, expected one of `CALLER`, `PARTICIPANT`, `BUSINESS_USER`"}"#
        ]],
    );
}

#[test]
fn get_or_create_needs_exactly_one_valid_participant_id() {
    let cmd = |body: &str| {
        parse_body::<GetOrCreateConversationRequest>(body.as_bytes()).and_then(|r| r.to_command())
    };
    check(
        cmd("{}"),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"participantId is required","field":"participantId","violatedRule":"REQUIRED_FIELD"}]}},"message":"participantId is required"}"#
        ]],
    );
    check(
        cmd(
            r#"{"participantId": {"contactId": "4e600edc-db48-5260-9d04-7ea5c3e5fffd", "memberId": "4e600edc-db48-5260-9d04-7ea5c3e5fffd"}}"#,
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"exactly one of contactId, anonymousVisitorId or memberId is required","field":"participantId","violatedRule":"REQUIRED_FIELD"}]}},"message":"exactly one of contactId, anonymousVisitorId or memberId is required"}"#
        ]],
    );
    check(
        cmd(r#"{"participant_id": {"anonymous_visitor_id": "visitor-7"}}"#),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"must be a GUID; got \"visitor-7\"","field":"participantId.anonymousVisitorId","violatedRule":"FORMAT"}]}},"message":"must be a GUID; got \"visitor-7\""}"#
        ]],
    );
    // An unknown contact is the core's refusal.
    let (mut w, _) = world();
    let unknown =
        cmd(r#"{"participantId": {"contactId": "4e600edc-db48-5260-9d04-7ea5c3e5fffd"}}"#).unwrap();
    check(
        w.try_run(&unknown).map_err(WixError::from),
        expect![[
            r#"404 {"details":{"applicationError":{"code":"CONTACT_NOT_FOUND","data":{},"description":"contact 4e600edc-db48-5260-9d04-7ea5c3e5fffd not found"}},"message":"contact 4e600edc-db48-5260-9d04-7ea5c3e5fffd not found"}"#
        ]],
    );
}

#[test]
fn send_message_refusals() {
    let (mut w, conv) = world();
    let basic = json!({"basic": {"items": [{"text": "hi"}]}});
    check(
        send(
            &mut w,
            json!({"message": {"content": basic, "direction": "BUSINESS_TO_PARTICIPANT"}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"conversationId is required","field":"conversationId","violatedRule":"REQUIRED_FIELD"}]}},"message":"conversationId is required"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "message": {"content": basic, "direction": "BUSINESS_TO_PARTICIPANT"}}),
        ),
        expect![[
            r#"404 {"details":{"applicationError":{"code":"CONVERSATION_NOT_FOUND","data":{},"description":"conversation 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}},"message":"conversation 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}"#
        ]],
    );
    check(
        send(&mut w, json!({"conversationId": conv})),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"message is required","field":"message","violatedRule":"REQUIRED_FIELD"}]}},"message":"message is required"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "message": {"content": basic}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"direction is required and must not be UNKNOWN_DIRECTION","field":"message.direction","violatedRule":"REQUIRED_FIELD"}]}},"message":"direction is required and must not be UNKNOWN_DIRECTION"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "PARTICIPANT_TO_BUSINESS", "message": {"content": basic, "direction": "BUSINESS_TO_PARTICIPANT"}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"direction is given twice (beside and inside message) with different values","field":"direction","violatedRule":"OTHER"}]}},"message":"direction is given twice (beside and inside message) with different values"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "PARTICIPANT_TO_BUSINESS", "message": {"content": basic, "payload": {"type": "BASIC", "basic": {"items": [{"text": "hi"}]}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"message.content and message.payload are two spellings of one field; send one","field":"message.payload","violatedRule":"OTHER"}]}},"message":"message.content and message.payload are two spellings of one field; send one"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "PARTICIPANT_TO_BUSINESS", "message": {"payload": {"type": "FORM", "minimal": {"text": "x"}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"payload.type is \"FORM\" but payload.form is missing","field":"message.payload","violatedRule":"REQUIRED_FIELD"}]}},"message":"payload.type is \"FORM\" but payload.form is missing"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "PARTICIPANT_TO_BUSINESS", "message": {"content": {"basic": {"items": [{"text": "a", "file": {"url": "u"}}]}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"an item has exactly one of text, image or file","field":"message.content.basic.items[0]","violatedRule":"OTHER"}]}},"message":"an item has exactly one of text, image or file"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "PARTICIPANT_TO_BUSINESS", "message": {"content": basic, "badges": [{"text": "a"}, {"text": "b"}]}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":1},"description":"at most 1 badge is supported; got 2","field":"message.badges","ruleName":"MAX_BADGES","violatedRule":"MAX_SIZE"}]}},"message":"at most 1 badge is supported; got 2"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "PARTICIPANT_TO_BUSINESS", "message": {"content": {"previewText": "x".repeat(257), "basic": {"items": [{"text": "a"}]}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":256},"description":"previewText must be at most 256 characters; got 257","field":"message.content.previewText","ruleName":"MAX_PREVIEW_TEXT","violatedRule":"MAX_LENGTH"}]}},"message":"previewText must be at most 256 characters; got 257"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "BUSINESS_TO_PARTICIPANT", "message": {"content": {"template": {"buttons": [{"label": "x"}]}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{},"description":"template button 0 must have exactly one of launchUrl or postbackProperties.interactionId","field":"message.content.template.buttons[0]","ruleName":"ONE_BUTTON_ACTION","violatedRule":"OTHER"}]}},"message":"template button 0 must have exactly one of launchUrl or postbackProperties.interactionId"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "BUSINESS_TO_PARTICIPANT", "message": {"content": basic, "targetChannels": ["UNKNOWN_CHANNEL_TYPE"]}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"target channel must not be UNKNOWN_CHANNEL_TYPE","field":"message.targetChannels","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"target channel must not be UNKNOWN_CHANNEL_TYPE"}"#
        ]],
    );
    check(
        send(
            &mut w,
            json!({"conversationId": conv, "direction": "BUSINESS_TO_PARTICIPANT", "message": {"content": {"form": {"fields": []}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":15,"min":1},"description":"form fields must number 1 to 15; got 0","field":"message.content.form.fields","ruleName":"FORM_FIELD_COUNT","violatedRule":"MIN_SIZE"}]}},"message":"form fields must number 1 to 15; got 0"}"#
        ]],
    );
    // None of those changed anything.
    assert_eq!(w.inbox.message_count(), 0);
    // And the same conversation accepts a good one, sent silently through the deprecated
    // top-level `silent`...
    let ok = send(&mut w, json!({"conversation_id": conv, "silent": true, "message": {"content": basic.clone(), "direction": "BUSINESS_TO_PARTICIPANT"}})).unwrap();
    assert!(matches!(&ok[0].event, inbox_core::Event::MessageSent { message } if message.silent));
    // ...while `sendNotifications: false` is about notifications, not silence.
    let loud = send(&mut w, json!({"conversationId": conv, "sendNotifications": false, "message": {"content": basic, "direction": "BUSINESS_TO_PARTICIPANT"}})).unwrap();
    assert!(
        matches!(&loud[0].event, inbox_core::Event::MessageSent { message } if !message.silent)
    );
}

#[test]
fn list_messages_refusals() {
    let (w, conv) = world();
    let list = |q: String| list_messages(&w.inbox, &q);
    check(
        list("visibility=BUSINESS".into()),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"conversationId is required","field":"conversationId","violatedRule":"REQUIRED_FIELD"}]}},"message":"conversationId is required"}"#
        ]],
    );
    check(
        list(format!("conversationId={conv}&paging.limit=101")),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":100,"min":1},"description":"limit must be 1 to 100; got 101","field":"paging.limit","ruleName":"PAGING_LIMIT","violatedRule":"MAX"}]}},"message":"limit must be 1 to 100; got 101"}"#
        ]],
    );
    check(
        list(format!("conversationId={conv}&paging.limit=0")),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":100,"min":1},"description":"limit must be 1 to 100; got 0","field":"paging.limit","ruleName":"PAGING_LIMIT","violatedRule":"MIN"}]}},"message":"limit must be 1 to 100; got 0"}"#
        ]],
    );
    check(
        list(format!("conversationId={conv}&paging.limit=-3")),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"paging.limit: expected a non-negative integer, got -3","field":"paging.limit","violatedRule":"FORMAT"}]}},"message":"paging.limit: expected a non-negative integer, got -3"}"#
        ]],
    );
    check(
        list(format!(
            "conversationId={conv}&sorting.fieldName=createdDate"
        )),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"messages can be sorted by sequence only; got \"createdDate\"","field":"sorting.fieldName","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"messages can be sorted by sequence only; got \"createdDate\""}"#
        ]],
    );
    check(
        list(format!("conversationId={conv}&paging.cursor=abc")),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"INVALID_CURSOR","data":{},"description":"cursor is malformed"}},"message":"cursor is malformed"}"#
        ]],
    );
    check(
        list(".r=!!!".into()),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":".r must be base64url of the request as JSON: Invalid symbol 33, offset 0.","field":".r","violatedRule":"FORMAT"}]}},"message":".r must be base64url of the request as JSON: Invalid symbol 33, offset 0."}"#
        ]],
    );
    check(
        list(format!(".r={}", URL_SAFE_NO_PAD.encode("[1]"))),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":".r must be base64url of a JSON object","field":".r","violatedRule":"FORMAT"}]}},"message":".r must be base64url of a JSON object"}"#
        ]],
    );
    check(
        list("conversationId=1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()),
        expect![[
            r#"404 {"details":{"applicationError":{"code":"CONVERSATION_NOT_FOUND","data":{},"description":"conversation 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}},"message":"conversation 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}"#
        ]],
    );
    check(
        list(format!("paging=1&paging.limit=2&conversationId={conv}")),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"query parameter paging.limit conflicts with paging","field":"paging.limit","violatedRule":"FORMAT"}]}},"message":"query parameter paging.limit conflicts with paging"}"#
        ]],
    );
    check(
        list("x".repeat(20_000)),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"query string is longer than 16384 bytes","field":"","violatedRule":"MAX_LENGTH"}]}},"message":"query string is longer than 16384 bytes"}"#
        ]],
    );
}

#[test]
fn a_cursor_pages_to_the_end_and_then_is_absent() {
    let (mut w, conv) = world();
    for i in 0..5 {
        send(&mut w, json!({"conversationId": conv, "message": {"content": {"basic": {"items": [{"text": format!("m{i}")}]}}, "direction": "BUSINESS_TO_PARTICIPANT"}})).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("conversationId={conv}&paging.limit=2&sorting.order=ASC");
        if let Some(c) = &cursor {
            q.push_str(&format!("&paging.cursor={c}"));
        }
        let page = list_messages(&w.inbox, &q).unwrap();
        seen.extend(page.messages.iter().map(|m| {
            m.content.clone().unwrap().basic.unwrap().items[0]
                .text
                .clone()
                .unwrap()
        }));
        match page.paging_metadata.cursors.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4"]);
    // A cursor reused with another order is refused.
    let first = list_messages(&w.inbox, &format!("conversationId={conv}&paging.limit=2")).unwrap();
    let next = first.paging_metadata.cursors.next.unwrap();
    check(
        list_messages(
            &w.inbox,
            &format!("conversationId={conv}&sorting.order=ASC&paging.cursor={next}"),
        ),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"INVALID_CURSOR","data":{},"description":"cursor was issued for a different sort order or visibility; repeat the first request's"}},"message":"cursor was issued for a different sort order or visibility; repeat the first request's"}"#
        ]],
    );
}

#[test]
fn contacts_refusals() {
    let (mut w, _) = world();
    let create = |w: &mut World, body: Value, id: u128| -> Result<_, WixError> {
        let req: CreateContactRequest = parse_body(body.to_string().as_bytes())?;
        Ok(w.try_run(&req.to_command(contact(id), Default::default())?)?)
    };
    check(
        create(
            &mut w,
            json!({"info": {"emails": {"items": [{"email": "JO@example.com"}]}}}),
            2,
        ),
        expect![[
            r#"409 {"details":{"applicationError":{"code":"DUPLICATE_CONTACT_EXISTS","data":{"duplicateContactId":"00000000-0000-0000-0000-00000000c001","duplicateEmail":"JO@example.com"},"description":"email \"JO@example.com\" already belongs to contact 00000000-0000-0000-0000-00000000c001"}},"message":"email \"JO@example.com\" already belongs to contact 00000000-0000-0000-0000-00000000c001"}"#
        ]],
    );
    create(&mut w, json!({"info": {"emails": {"items": [{"email": "JO@example.com"}]}}, "allowDuplicates": true}), 2).unwrap();
    check(
        create(&mut w, json!({}), 3),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"info is required","field":"info","violatedRule":"REQUIRED_FIELD"}]}},"message":"info is required"}"#
        ]],
    );
    check(
        create(
            &mut w,
            json!({"info": {"emails": {"items": [{"email": "not an email"}]}}}),
            3,
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"invalid email address \"not an email\"","field":"info.emails.items","violatedRule":"FORMAT"}]}},"message":"invalid email address \"not an email\""}"#
        ]],
    );
    check(
        create(
            &mut w,
            json!({"info": {"name": {"first": "A"}, "phones": {"items": [{"phone": "+1 555 0100", "tag": "PAGER"}]}}}),
            3,
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"info.phones.items[0].tag: unknown variant `PAGER`, expected one of `UNTAGGED`, `MAIN`, `HOME`, `MOBILE`, `WORK`, `FAX`","field":"info.phones.items[0].tag","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"info.phones.items[0].tag: unknown variant `PAGER`, expected one of `UNTAGGED`, `MAIN`, `HOME`, `MOBILE`, `WORK`, `FAX`"}"#
        ]],
    );

    check(
        get_contact(&w.inbox, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", ""),
        expect![[
            r#"404 {"details":{"applicationError":{"code":"CONTACT_NOT_FOUND","data":{"contactId":"1b4e28ba-2fa1-11d2-883f-0016d3cca427"},"description":"contact 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}},"message":"contact 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}"#
        ]],
    );
    check(
        get_contact(&w.inbox, "nope", ""),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"must be a GUID; got \"nope\"","field":"contactId","violatedRule":"FORMAT"}]}},"message":"must be a GUID; got \"nope\""}"#
        ]],
    );

    let merge = |w: &mut World, body: Value| -> Result<_, WixError> {
        let req: MergeContactsRequest = parse_body(body.to_string().as_bytes())?;
        Ok(w.try_run(&req.to_command(contact(1))?)?)
    };
    let source = contact(2).to_string();
    check(
        merge(&mut w, json!({"sourceContactIds": [source]})),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"targetContactRevision is required: the target's current revision","field":"targetContactRevision","violatedRule":"REQUIRED_FIELD"}]}},"message":"targetContactRevision is required: the target's current revision"}"#
        ]],
    );
    check(
        merge(
            &mut w,
            json!({"targetContactRevision": 7, "sourceContactIds": [source]}),
        ),
        expect![[
            r#"428 {"details":{"applicationError":{"code":"FAILED_PRECONDITION","data":{"currentRevision":1,"expectedRevision":7},"description":"target contact revision is 1, but the request expected 7"}},"message":"target contact revision is 1, but the request expected 7"}"#
        ]],
    );
    check(
        merge(
            &mut w,
            json!({"targetContactRevision": 1, "sourceContactIds": []}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":5,"min":1},"description":"a merge takes 1 to 5 source contacts; got 0","field":"sourceContactIds","ruleName":"SOURCE_CONTACT_COUNT","violatedRule":"MAX_SIZE"}]}},"message":"a merge takes 1 to 5 source contacts; got 0"}"#
        ]],
    );
    check(
        merge(
            &mut w,
            json!({"targetContactRevision": 1, "sourceContactIds": [contact(1).to_string()]}),
        ),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"ILLEGAL_MERGE","data":{"contactId":"00000000-0000-0000-0000-00000000c001","reason":"SOURCE_IS_TARGET"},"description":"contact 00000000-0000-0000-0000-00000000c001 cannot be merged into itself"}},"message":"contact 00000000-0000-0000-0000-00000000c001 cannot be merged into itself"}"#
        ]],
    );
    check(
        merge(
            &mut w,
            json!({"targetContactRevision": "1", "sourceContactIds": [source, source]}),
        ),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"ILLEGAL_MERGE","data":{"contactId":"00000000-0000-0000-0000-00000000c002","reason":"DUPLICATE_SOURCE"},"description":"source contact 00000000-0000-0000-0000-00000000c002 is listed twice"}},"message":"source contact 00000000-0000-0000-0000-00000000c002 is listed twice"}"#
        ]],
    );
    check(
        merge(
            &mut w,
            json!({"targetContactRevision": 1, "sourceContactIds": ["1b4e28ba-2fa1-11d2-883f-0016d3cca427"]}),
        ),
        expect![[
            r#"404 {"details":{"applicationError":{"code":"CONTACT_NOT_FOUND","data":{"contactId":"1b4e28ba-2fa1-11d2-883f-0016d3cca427"},"description":"source contact 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}},"message":"source contact 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}"#
        ]],
    );

    // Preview shows the merge and saves nothing; then the merge with the right revision.
    let body = json!({"sourceContactIds": [source]}).to_string();
    let preview = preview_merge(
        &w.inbox,
        &contact(1).to_string(),
        body.as_bytes(),
        Timestamp::from_micros(T0),
    )
    .unwrap();
    assert_eq!(preview.contact.revision, 2);
    assert_eq!(
        get_contact(&w.inbox, &contact(1).to_string(), "")
            .unwrap()
            .contact
            .revision,
        1
    );
    assert!(get_contact(&w.inbox, &source, "").is_ok());
    merge(
        &mut w,
        json!({"targetContactRevision": 1, "sourceContactIds": [source]}),
    )
    .unwrap();
    let merged = get_contact(&w.inbox, &contact(1).to_string(), "")
        .unwrap()
        .contact;
    assert_eq!(merged.revision, 2);
    assert_eq!(merged.info, preview.contact.info);
    // The id merged away answers with the target, saying so.
    let via_source = get_contact(&w.inbox, &source, "").unwrap();
    assert_eq!(
        (via_source.contact, via_source.response_type.as_str()),
        (merged, "MERGED")
    );
    assert_eq!(
        get_contact(&w.inbox, &contact(1).to_string(), "")
            .unwrap()
            .response_type,
        "REGULAR"
    );
}

#[test]
fn query_contacts_refusals_carry_the_wix_codes() {
    let (w, _) = world();
    let q = |body: Value| query_contacts(&w.inbox, body.to_string().as_bytes());
    check(
        q(json!({"query": {"filter": {"info.emails.email": {"$regex": "x"}}}})),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"MALFORMED_FILTER","data":{},"description":"malformed filter at query.filter.info.emails.email.$regex: unknown operator \"$regex\""}},"message":"malformed filter at query.filter.info.emails.email.$regex: unknown operator \"$regex\""}"#
        ]],
    );
    check(
        q(json!({"query": {"filter": {"id": {"$startsWith": "x"}}}})),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"UNSUPPORTED_FILTER_OPERATOR","data":{},"description":"unsupported filter at query.filter.id.$startsWith: $startsWith is not supported on id"}},"message":"unsupported filter at query.filter.id.$startsWith: $startsWith is not supported on id"}"#
        ]],
    );
    check(
        q(json!({"query": {"paging": {"limit": 1001}}})),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"ILLEGAL_LIMIT","data":{},"description":"query.paging.limit must be an integer from 1 to 1000; got 1001"}},"message":"query.paging.limit must be an integer from 1 to 1000; got 1001"}"#
        ]],
    );
    check(
        q(json!({"query": {"sort": [{"fieldName": "info.locale"}]}})),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"UNSUPPORTED_SORT_FIELD","data":{},"description":"query.sort[0].fieldName: contacts cannot be sorted by \"info.locale\"; sortable fields: createdDate, updatedDate, lastActivity.activityDate, info.name.first, info.name.last, info.company, info.jobTitle, info.birthdate, primaryInfo.email, id"}},"message":"query.sort[0].fieldName: contacts cannot be sorted by \"info.locale\"; sortable fields: createdDate, updatedDate, lastActivity.activityDate, info.name.first, info.name.last, info.company, info.jobTitle, info.birthdate, primaryInfo.email, id"}"#
        ]],
    );
    check(
        query_contacts(&w.inbox, b"not json"),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"request body is not valid JSON: expected ident at line 1 column 2","field":"","violatedRule":"FORMAT"}]}},"message":"request body is not valid JSON: expected ident at line 1 column 2"}"#
        ]],
    );
    let all = q(json!({})).unwrap();
    assert_eq!(all.paging_metadata.total, 1);
}

#[test]
fn get_conversation_follows_merges() {
    let (mut w, conv) = world();
    w.run(&Command::IdentifyVisitor {
        visitor: visitor(1),
        contact: contact(1),
    });
    let got = get_conversation(&w.inbox, &conv).unwrap();
    assert_ne!(
        got.conversation.id, conv,
        "a merged id answers with the survivor"
    );
    assert_eq!(
        got.conversation.participant.unwrap().contact_id,
        Some(contact(1).to_string())
    );
    check(
        get_conversation(&w.inbox, "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        expect![[
            r#"404 {"details":{"applicationError":{"code":"CONVERSATION_NOT_FOUND","data":{},"description":"conversation 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}},"message":"conversation 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found"}"#
        ]],
    );
}

#[test]
fn a_badge_visibility_outside_wixs_enum_is_refused_and_each_of_its_values_is_kept() {
    let (mut w, conv) = world();
    let with = |visibility: &str| {
        json!({"conversationId": conv, "message": {
            "direction": "BUSINESS_TO_PARTICIPANT",
            "content": {"basic": {"items": [{"text": "hi"}]}},
            "badges": [{"text": "VIP", "badgeVisibility": visibility}],
        }})
    };
    check(
        send(&mut w, with("SOMETIMES")),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"badgeVisibility must be one of UNKNOWN_BADGE_VISIBILITY, BUSINESS_AND_PARTICIPANT, BUSINESS; got \"SOMETIMES\"","field":"message.badges[0].badgeVisibility","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"badgeVisibility must be one of UNKNOWN_BADGE_VISIBILITY, BUSINESS_AND_PARTICIPANT, BUSINESS; got \"SOMETIMES\""}"#
        ]],
    );
    assert_eq!(w.inbox.message_count(), 0);
    for v in inbox_wix::wire::BADGE_VISIBILITIES {
        let sent = send(&mut w, with(v)).unwrap();
        let inbox_core::Event::MessageSent { message } = &sent[0].event else {
            panic!("{sent:?}");
        };
        assert_eq!(message.badges[0].badge_visibility.as_deref(), Some(v));
    }
}

// ------------------------------------------------------------------------------------------
// Contacts v4: update, labels, delete, list

fn update(w: &mut World, id: u128, body: Value) -> Result<ContactResponse, WixError> {
    let req: UpdateContactRequest = parse_body(body.to_string().as_bytes())?;
    w.try_run(&req.to_command(contact(id))?)?;
    Ok(ContactResponse::new(
        w.inbox.contacts().get(contact(id)).unwrap(),
    ))
}

/// Update Contact changes what `info` gives (a field given as `null` is cleared), keeps the
/// rest, and answers the contact at its next revision; the stale revision, a phone tag on an
/// email and a value that is not a string or a number are refused in Wix's shapes.
#[test]
fn update_contact_replaces_what_info_gives_and_keeps_the_rest() {
    let (mut w, _) = world();
    let c = update(
        &mut w,
        1,
        json!({"revision": "1", "info": {
            "name": {"first": "Jo", "last": "Doe"},
            "company": "Acme",
            "jobTitle": "CTO",
            "birthdate": "1990-04-01",
            "locale": "en-US",
            "labelKeys": {"items": ["custom.vip"]},
            "extendedFields": {"items": {"custom.tier": "gold", "custom.score": 4.5}},
            "addresses": {"items": [{"tag": "HOME", "address": {"city": "Lisbon", "country": "PT",
                "streetAddress": {"number": "12", "name": "Rua Augusta"}}}]},
            "picture": {"image": {"url": "https://example.com/jo.png"}},
        }}),
    )
    .unwrap()
    .contact;
    assert_eq!(c.revision, 2);
    let info = c.info.clone().unwrap();
    assert_eq!(
        (info.company.as_deref(), info.job_title.as_deref()),
        (Some("Acme"), Some("CTO"))
    );
    assert_eq!(info.label_keys.unwrap().items, ["custom.vip"]);
    assert_eq!(
        info.extended_fields.unwrap().items,
        [
            ("custom.score".to_owned(), json!(4.5)),
            ("custom.tier".to_owned(), json!("gold"))
        ]
        .into()
    );
    let address = &info.addresses.unwrap().items[0];
    assert_eq!(
        (
            address.address.street_address.name.as_str(),
            address.id.is_some()
        ),
        ("Rua Augusta", true)
    );
    // The email given at creation is kept, with the same entry id.
    let email_id = info.emails.unwrap().items[0].id.clone();
    assert!(email_id.is_some());

    // Only the company, cleared; an extended field removed; the rest stays.
    let c = update(
        &mut w,
        1,
        json!({"revision": 2, "info": {"company": null, "extendedFields": {"items": {"custom.tier": null}}}}),
    )
    .unwrap()
    .contact;
    let info = c.info.unwrap();
    assert_eq!(
        (c.revision, info.company, info.job_title.as_deref()),
        (3, None, Some("CTO"))
    );
    assert_eq!(
        info.extended_fields.unwrap().items,
        [("custom.score".to_owned(), json!(4.5))].into()
    );
    assert_eq!(info.emails.unwrap().items[0].id, email_id);

    check(
        update(&mut w, 1, json!({"revision": 1, "info": {}})),
        expect![[
            r#"409 {"details":{"applicationError":{"code":"CONTACT_ALREADY_CHANGED","data":{"currentRevision":3,"expectedRevision":1},"description":"contact revision is 3, but the request expected 1"}},"message":"contact revision is 3, but the request expected 1"}"#
        ]],
    );
    check(
        update(&mut w, 1, json!({"info": {}})),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"revision is required","field":"revision","violatedRule":"REQUIRED_FIELD"}]}},"message":"revision is required"}"#
        ]],
    );
    check(
        update(
            &mut w,
            1,
            json!({"revision": 3, "info": {"emails": {"items": [{"email": "jo@example.com", "tag": "MOBILE"}]}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"info.emails.items[0].tag: unknown variant `MOBILE`, expected one of `UNTAGGED`, `MAIN`, `HOME`, `WORK`","field":"info.emails.items[0].tag","violatedRule":"INVALID_ENUM_VALUE"}]}},"message":"info.emails.items[0].tag: unknown variant `MOBILE`, expected one of `UNTAGGED`, `MAIN`, `HOME`, `WORK`"}"#
        ]],
    );
    check(
        update(
            &mut w,
            1,
            json!({"revision": 3, "info": {"extendedFields": {"items": {"custom.flag": true}}}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"an extended field holds a string or a number; got a boolean","field":"info.extendedFields.items.custom.flag","violatedRule":"FORMAT"}]}},"message":"an extended field holds a string or a number; got a boolean"}"#
        ]],
    );
    check(
        update(
            &mut w,
            1,
            json!({"revision": 3, "info": {"name": null, "emails": {"items": []}}}),
        ),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"INSUFFICIENT_CONTACT_DATA","data":{},"description":"a contact needs at least a name, an email or a phone"}},"message":"a contact needs at least a name, an email or a phone"}"#
        ]],
    );
    check(
        update(
            &mut w,
            1,
            json!({"revision": 3, "info": {"birthdate": "1990-13-01"}}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"invalid info.birthdate: \"1990-13-01\" is not a YYYY-MM-DD date","field":"info.birthdate","violatedRule":"FORMAT"}]}},"message":"invalid info.birthdate: \"1990-13-01\" is not a YYYY-MM-DD date"}"#
        ]],
    );
}

/// Label Contact takes its keys in the body, Unlabel Contact in the query string (as the
/// SDK sends a DELETE); a key without a namespace is refused.
#[test]
fn labels_come_and_go() {
    let (mut w, _) = world();
    let label: LabelContactRequest = parse_body(
        json!({"labelKeys": ["custom.vip", "contacts.customers"]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    w.run(&label.to_command(contact(1)));
    let labels = |w: &World| {
        w.inbox
            .contacts()
            .get(contact(1))
            .unwrap()
            .details
            .labels
            .iter()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(labels(&w), ["contacts.customers", "custom.vip"]);
    w.run(&unlabel_contact_command(
        contact(1),
        &format!("contactId={}&labelKeys=custom.vip", contact(1)),
    ));
    assert_eq!(labels(&w), ["contacts.customers"]);
    let bad: LabelContactRequest =
        parse_body(json!({"labelKeys": ["vip"]}).to_string().as_bytes()).unwrap();
    check(
        w.try_run(&bad.to_command(contact(1)))
            .map_err(WixError::from),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"invalid label key \"vip\": a label key is namespace.key, e.g. custom.vip","field":"labelKeys","violatedRule":"FORMAT"}]}},"message":"invalid label key \"vip\": a label key is namespace.key, e.g. custom.vip"}"#
        ]],
    );
    check(
        w.try_run(&unlabel_contact_command(contact(1), ""))
            .map_err(WixError::from),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"data":{"max":100,"min":1},"description":"a label change takes 1 to 100 keys; got 0","field":"labelKeys","ruleName":"LABEL_KEY_COUNT","violatedRule":"MIN_SIZE"}]}},"message":"a label change takes 1 to 100 keys; got 0"}"#
        ]],
    );
}

/// List Contacts reads the SDK's query string: paging, one sort, fieldsets and fields.
#[test]
fn list_contacts_reads_the_sdks_query_string() {
    let (mut w, _) = world();
    for (n, first) in [(2, "Ann"), (3, "Bo")] {
        w.run(&Command::CreateContact {
            contact_id: contact(n),
            draft: ContactDraft {
                name: inbox_core::contacts::ContactName {
                    first: Some(first.into()),
                    last: None,
                },
                ..ContactDraft::default()
            },
        });
    }
    let page = list_contacts(
        &w.inbox,
        "paging.limit=2&paging.offset=1&sort.fieldName=info.name.first&sort.order=ASC&fieldsets=BASIC",
    )
    .unwrap();
    let names: Vec<_> = page
        .contacts
        .iter()
        .map(|c| {
            c.info
                .as_ref()
                .and_then(|i| i.name.clone())
                .and_then(|n| n.first)
        })
        .collect();
    // Jo has no first name, which sorts first; the page starts after it.
    assert_eq!(names, [Some("Ann".to_owned()), Some("Bo".to_owned())]);
    assert_eq!(
        (page.paging_metadata.count, page.paging_metadata.total),
        (2, 3)
    );
    // BASIC: no emails, no source.
    assert!(page.contacts[0].source.is_none());
    assert!(page.contacts[0].info.as_ref().unwrap().emails.is_none());
    check(
        list_contacts(&w.inbox, "paging.limit=0"),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"ILLEGAL_LIMIT","data":{},"description":"query.paging.limit must be an integer from 1 to 1000; got 0"}},"message":"query.paging.limit must be an integer from 1 to 1000; got 0"}"#
        ]],
    );
    check(
        list_contacts(&w.inbox, "fieldsets=EVERYTHING"),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"INVALID_QUERY","data":{},"description":"query.fieldsets[0]: unknown fieldset \"EVERYTHING\"; known: BASIC, COMMUNICATION_DETAILS, EXTENDED, FULL"}},"message":"query.fieldsets[0]: unknown fieldset \"EVERYTHING\"; known: BASIC, COMMUNICATION_DETAILS, EXTENDED, FULL"}"#
        ]],
    );
}

/// Delete Contact: gone for good; a member's contact stays, refused in Wix's code.
#[test]
fn delete_contact_refuses_members() {
    let (mut w, _) = world();
    w.run(&Command::RegisterMember {
        member: inbox_core::MemberId::from_uuid(uuid::Uuid::from_u128(0xB1)),
        contact: contact(1),
        login_email: None,
    });
    check(
        w.try_run(&Command::DeleteContact {
            contact_id: contact(1),
        })
        .map_err(WixError::from),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"CANNOT_DELETE_MEMBER","data":{"memberId":"00000000-0000-0000-0000-0000000000b1"},"description":"contact 00000000-0000-0000-0000-00000000c001 is site member 00000000-0000-0000-0000-0000000000b1 and cannot be deleted"}},"message":"contact 00000000-0000-0000-0000-00000000c001 is site member 00000000-0000-0000-0000-0000000000b1 and cannot be deleted"}"#
        ]],
    );
}

/// List and Query Facets: all contacts, those without a label, one facet per label key (with
/// the filter that lists them), paged; a bad filter is refused like Query Contacts'.
#[test]
fn facets_count_contacts_by_label() {
    let (mut w, _) = world();
    w.run(&Command::LabelContact {
        contact_id: contact(1),
        add: ["custom.vip".to_owned()].into(),
        remove: Default::default(),
    });
    w.run(&Command::CreateContact {
        contact_id: contact(2),
        draft: ContactDraft {
            name: inbox_core::contacts::ContactName {
                first: Some("Ann".into()),
                last: None,
            },
            ..ContactDraft::default()
        },
    });
    let all = list_facets(&w.inbox, "").unwrap();
    let shown: Vec<(String, Option<String>, u64)> = all
        .facets
        .iter()
        .map(|f| (f.facet_type.clone(), f.facet_key.clone(), f.count))
        .collect();
    assert_eq!(
        shown,
        [
            ("ALL_CONTACTS".to_owned(), None, 2),
            ("NOT_LABELED".to_owned(), None, 1),
            ("LABEL".to_owned(), Some("custom.vip".to_owned()), 1),
        ]
    );
    assert_eq!(
        all.facets[2].query_filter,
        Some(json!({"info.labelKeys": {"$hasSome": ["custom.vip"]}}))
    );
    assert_eq!(all.facets[2].namespace.as_deref(), Some("custom"));
    assert_eq!(
        all.facets[2].facet_display_name.as_deref(),
        Some("VIP"),
        "the label's display name"
    );
    let second = list_facets(&w.inbox, "paging.limit=1&paging.offset=1").unwrap();
    assert_eq!(
        (
            second.facets.len(),
            second.paging_metadata.total,
            second.facets[0].facet_type.as_str()
        ),
        (1, 3, "NOT_LABELED")
    );
    let ann = query_facets(
        &w.inbox,
        json!({"filter": {"info.name.first": "Ann"}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(ann.facets[0].count, 1);
    assert_eq!(ann.facets.len(), 2, "no label among those matched");
    check(
        query_facets(
            &w.inbox,
            json!({"filter": {"info.labelKeys": "custom.vip"}})
                .to_string()
                .as_bytes(),
        ),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"UNSUPPORTED_FILTER_OPERATOR","data":{},"description":"unsupported filter at query.filter.info.labelKeys: $eq is not supported on info.labelKeys"}},"message":"unsupported filter at query.filter.info.labelKeys: $eq is not supported on info.labelKeys"}"#
        ]],
    );
}

/// A bulk call's commands: one per contact the filter matches, decided from the state; no
/// filter, a search, and label changes naming nothing or a bad key are refused up front.
#[test]
fn bulk_calls_become_one_command_per_matching_contact() {
    let (mut w, _) = world();
    w.run(&Command::CreateContact {
        contact_id: contact(2),
        draft: ContactDraft {
            name: inbox_core::contacts::ContactName {
                first: Some("Ann".into()),
                last: None,
            },
            ..ContactDraft::default()
        },
    });
    let bulk = |kind, body: Value| bulk_commands(&w.inbox, kind, body.to_string().as_bytes());
    let all = bulk(BulkKind::Delete, json!({"filter": {}})).unwrap();
    assert_eq!(all.len(), 2);
    let ann = bulk(
        BulkKind::Labels,
        json!({"filter": {"info.name.first": "Ann"}, "labelKeysToAdd": ["custom.vip"]}),
    )
    .unwrap();
    assert_eq!(
        ann,
        [Command::LabelContact {
            contact_id: contact(2),
            add: ["custom.vip".to_owned()].into(),
            remove: Default::default(),
        }]
    );
    let updates = bulk(
        BulkKind::Update,
        json!({"filter": {}, "info": {"company": "Acme"}}),
    )
    .unwrap();
    assert!(updates.iter().all(|c| matches!(
        c,
        Command::UpdateContact {
            expected_revision: 1,
            ..
        }
    )));
    check(
        bulk(BulkKind::Delete, json!({})),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"NEITHER_FILTER_NOR_SEARCH","data":{},"description":"a bulk call needs a filter (or a search) of the contacts it changes"}},"message":"a bulk call needs a filter (or a search) of the contacts it changes"}"#
        ]],
    );
    check(
        bulk(BulkKind::Delete, json!({"search": "jo"})),
        expect![[
            r#"400 {"details":{"applicationError":{"code":"UNSUPPORTED_FILTER","data":{},"description":"search: free-text search is not supported; filter with query.filter instead"}},"message":"search: free-text search is not supported; filter with query.filter instead"}"#
        ]],
    );
    check(
        bulk(BulkKind::Labels, json!({"filter": {}})),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"labelKeysToAdd or labelKeysToRemove must name a label key","field":"labelKeysToAdd","violatedRule":"MIN_SIZE"}]}},"message":"labelKeysToAdd or labelKeysToRemove must name a label key"}"#
        ]],
    );
    check(
        bulk(
            BulkKind::Labels,
            json!({"filter": {}, "labelKeysToRemove": ["nope"]}),
        ),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"invalid label key \"nope\": a label key is namespace.key, e.g. custom.vip","field":"labelKeys[0]","violatedRule":"FORMAT"}]}},"message":"invalid label key \"nope\": a label key is namespace.key, e.g. custom.vip"}"#
        ]],
    );
    check(
        bulk(BulkKind::Update, json!({"filter": {}})),
        expect![[
            r#"400 {"details":{"validationError":{"fieldViolations":[{"description":"info is required","field":"info","violatedRule":"REQUIRED_FIELD"}]}},"message":"info is required"}"#
        ]],
    );
}
