//! Golden tests: every JSON example of the Wix reference pages (copied into
//! `tests/reference/`, so the repository stands alone) parses, maps to the
//! expected core command, and, run through the engine, answers with the snapshotted JSON.
//!
//! The pages write comments (`// Hides the message…`) and placeholders
//! (`<EMAIL_ADDRESS_FROM_INCOMING_MESSAGE>`) inside their JSON; comment lines are dropped,
//! as anyone copying the example would, and placeholders are kept where they are only
//! strings. `UPDATE_EXPECT=1 cargo test -p inbox-wix --test golden` refreshes snapshots;
//! read every change before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;

use common::*;
use expect_test::{Expect, expect};
use inbox_core::{Command, ContactId, ParticipantId};
use inbox_wix::WixError;
use inbox_wix::contacts_query::parse_query_request;
use inbox_wix::rest::{
    ContactResponse, CreateContactRequest, GetOrCreateConversationRequest,
    GetOrCreateConversationResponse, ListMessagesRequest, ListMessagesResponse,
    QueryContactsResponse, SendMessageRequest, SendMessageResponse, parse_body,
};
use serde_json::{Value, json};

fn reference(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "a reference page is missing from tests/reference ({}): {e}",
            path.display()
        )
    })
}

fn without_comments(lines: &[&str]) -> Value {
    let text: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    serde_json::from_str(&text.join("\n"))
        .unwrap_or_else(|e| panic!("example is not JSON ({e}):\n{}", text.join("\n")))
}

/// The ```json blocks of a markdown page.
fn markdown_examples(name: &str) -> Vec<Value> {
    let page = reference(name);
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in page.lines() {
        match (&mut block, line.trim()) {
            (None, "```json") => block = Some(Vec::new()),
            (Some(b), "```") => {
                out.push(without_comments(b));
                block = None;
            }
            (Some(b), _) => b.push(line),
            _ => {}
        }
    }
    out
}

/// The examples of the REST page: from a line `{` to the line `json | Copy Code`.
fn rest_page_examples(name: &str) -> Vec<Value> {
    let page = reference(name);
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in page.lines() {
        match (&mut block, line.trim()) {
            (None, "{") => block = Some(vec![line]),
            (Some(b), "json | Copy Code") => {
                out.push(without_comments(b));
                block = None;
            }
            (Some(b), _) => b.push(line),
            _ => {}
        }
    }
    out
}

/// The examples of the message types page: after `Copy`, numbered lines until a blank one.
fn numbered_examples(name: &str) -> Vec<Value> {
    let page = reference(name);
    let mut out = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "Copy" {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim().is_empty())
            .filter(|l| !l.trim().chars().all(|c| c.is_ascii_digit()))
            .collect();
        out.push(without_comments(&block));
    }
    out
}

fn check(actual: impl std::fmt::Debug, expect: Expect) {
    expect.assert_debug_eq(&actual);
}

fn check_json(actual: &impl serde::Serialize, expect: Expect) {
    expect.assert_eq(&serde_json::to_string_pretty(actual).unwrap());
}

fn refusal(e: &WixError) -> String {
    format!(
        "{} {}",
        e.status(),
        serde_json::to_string_pretty(&e.body()).unwrap()
    )
}

const EXAMPLE_CONTACT: &str = "4e600edc-db48-5260-9d04-7ea5c3e5fffd";

#[test]
fn the_pages_have_the_examples_this_file_covers() {
    assert_eq!(markdown_examples("example-flows.md").len(), 6);
    assert_eq!(numbered_examples("messages-and-message-types.txt").len(), 5);
    // The REST page is the same two flows: its examples equal the markdown page's.
    assert_eq!(
        rest_page_examples("example-flows-rest-page.txt"),
        markdown_examples("example-flows.md")
    );
}

#[test]
fn example_flow_queries_map_to_the_core_query() {
    let examples = markdown_examples("example-flows.md");
    // The activity flow's query is the same with another placeholder.
    let mut activity = parse_query_request(&examples[3]).unwrap();
    activity.filter = parse_query_request(&examples[0]).unwrap().filter;
    assert_eq!(activity, parse_query_request(&examples[0]).unwrap());
    check(
        parse_query_request(&examples[0]).unwrap(),
        expect![[r#"
            ContactQuery {
                filter: Field(
                    Email,
                    Eq(
                        Text(
                            "<EMAIL_ADDRESS_FROM_INCOMING_MESSAGE>",
                        ),
                    ),
                ),
                sort: [],
                parts: Some(
                    [],
                ),
                offset: 0,
                limit: None,
            }
        "#]],
    );
}

#[test]
fn example_flow_get_or_create_maps_to_the_core_command() {
    let examples = markdown_examples("example-flows.md");
    for i in [1, 4] {
        let req: GetOrCreateConversationRequest =
            parse_body(examples[i].to_string().as_bytes()).unwrap();
        check(
            req.to_command().unwrap(),
            expect![[r#"
                GetOrCreateConversation {
                    participant: Contact(
                        ContactId(4e600edc-db48-5260-9d04-7ea5c3e5fffd),
                    ),
                }
            "#]],
        );
    }
}

/// A Send Message body from an example, with the conversation id the flow says to set.
fn send_body(example: &Value, conversation_id: &str) -> SendMessageRequest {
    let mut body = example.clone();
    body["conversationId"] = json!(conversation_id);
    parse_body(body.to_string().as_bytes()).unwrap()
}

const SOME_CONVERSATION: &str = "00000000-0000-0000-0000-0000000000c1";

#[test]
fn example_flow_sends_map_to_the_core_command() {
    let examples = markdown_examples("example-flows.md");
    check(
        send_body(&examples[2], SOME_CONVERSATION)
            .to_command()
            .unwrap(),
        expect![[r#"
            SendMessage {
                conversation_id: ConversationId(00000000-0000-0000-0000-0000000000c1),
                message: MessageDraft {
                    content: ContentDraft {
                        preview_text: None,
                        title: None,
                        basic: Some(
                            [
                                Text(
                                    "<INCOMING_MESSAGE_FROM_EXTERNAL_SERVICE>",
                                ),
                            ],
                        ),
                        template: None,
                        minimal: None,
                        form: None,
                        system: None,
                    },
                    badges: [
                        Badge {
                            text: "Facebook",
                            icon_url: Some(
                                "https://static.wixstatic.com/media/aebe5b6fd55f471a936c72ff2c8289d7.png/v1/fill/w_43,h_43,al_c,q_85,usm_0.66_1.00_0.01/aebe5b6fd55f471a936c72ff2c8289d7.webp",
                            ),
                            badge_visibility: None,
                        },
                    ],
                    target_channels: [],
                    source_channel: None,
                    visibility: Some(
                        Business,
                    ),
                    direction: Some(
                        ParticipantToBusiness,
                    ),
                    silent: false,
                },
                send_as: Caller,
            }
        "#]],
    );
    // The activity flow's `payload: {type: "MINIMAL", minimal}` is the types page's
    // `content: {minimal}`.
    let payload_form = send_body(&examples[5], SOME_CONVERSATION)
        .to_command()
        .unwrap();
    let mut content_form = examples[5].clone();
    let minimal = content_form["message"]["payload"]["minimal"].take();
    content_form["message"]
        .as_object_mut()
        .unwrap()
        .remove("payload");
    content_form["message"]["content"] = json!({"minimal": minimal});
    assert_eq!(
        payload_form,
        send_body(&content_form, SOME_CONVERSATION)
            .to_command()
            .unwrap()
    );
    check(
        payload_form,
        expect![[r#"
            SendMessage {
                conversation_id: ConversationId(00000000-0000-0000-0000-0000000000c1),
                message: MessageDraft {
                    content: ContentDraft {
                        preview_text: None,
                        title: None,
                        basic: None,
                        template: None,
                        minimal: Some(
                            Minimal {
                                text: "Booked Spa Treatment",
                                icon_url: Some(
                                    "https://static.wixstatic.com/media/bd4a2aff643141cb8cbacde1a4007a2f.png/v1/fill/w_43,h_50,al_c,lg_1,q_85/bd4a2aff643141cb8cbacde1a4007a2f.webp",
                                ),
                                url: None,
                            },
                        ),
                        form: None,
                        system: None,
                    },
                    badges: [],
                    target_channels: [],
                    source_channel: None,
                    visibility: Some(
                        Business,
                    ),
                    direction: Some(
                        ParticipantToBusiness,
                    ),
                    silent: false,
                },
                send_as: Caller,
            }
        "#]],
    );
}

/// Runs a request's command on the emulator and returns the message it stored.
fn send(w: &mut World, req: &SendMessageRequest) -> Result<SendMessageResponse, WixError> {
    let events = w.try_run(&req.to_command()?)?;
    let message = events
        .iter()
        .find_map(|e| match &e.event {
            inbox_core::Event::MessageSent { message } => Some(message),
            _ => None,
        })
        .unwrap();
    Ok(SendMessageResponse::new(message))
}

/// The "sync messages from an external service" flow, end to end, with its answers.
#[test]
fn the_sync_flow_answers_in_wix_shapes() {
    let examples = markdown_examples("example-flows.md");
    let mut w = World::new();
    let email = "jo@example.com";

    let create: CreateContactRequest = parse_body(
        json!({"info": {"name": {"first": "Jo", "last": "Doe"},
            "emails": {"items": [{"email": email, "tag": "MAIN", "primary": true}]}}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let id: ContactId = EXAMPLE_CONTACT.parse().unwrap();
    w.run(&create.to_command(id, Default::default()).unwrap());
    check_json(
        &ContactResponse::new(w.inbox.contacts().get(id).unwrap()),
        expect![[r#"
            {
              "contact": {
                "id": "4e600edc-db48-5260-9d04-7ea5c3e5fffd",
                "revision": 1,
                "source": {
                  "sourceType": "OTHER"
                },
                "createdDate": "2023-11-14T22:13:20Z",
                "updatedDate": "2023-11-14T22:13:20Z",
                "lastActivity": {
                  "activityDate": "2023-11-14T22:13:20Z",
                  "activityType": "CONTACT_CREATED"
                },
                "primaryInfo": {
                  "email": "jo@example.com"
                },
                "info": {
                  "name": {
                    "first": "Jo",
                    "last": "Doe"
                  },
                  "emails": {
                    "items": [
                      {
                        "id": "6946dee2-4094-4855-a228-8dbd6c5f608a",
                        "email": "jo@example.com",
                        "tag": "MAIN",
                        "primary": true
                      }
                    ]
                  },
                  "phones": {
                    "items": []
                  },
                  "addresses": {
                    "items": []
                  },
                  "labelKeys": {
                    "items": []
                  },
                  "extendedFields": {
                    "items": {}
                  }
                },
                "primaryEmail": {
                  "email": "jo@example.com",
                  "subscriptionStatus": "NOT_SET",
                  "deliverabilityStatus": "NOT_SET"
                },
                "primaryPhone": {
                  "subscriptionStatus": "NO_SUBSCRIPTION_STATUS",
                  "deliverabilityStatus": "NO_PHONE_DELIVERABILITY_STATUS"
                }
              }
            }"#]],
    );

    // Step 2: find the contact by email, asking for `id` only.
    let mut query = examples[0].clone();
    query["query"]["filter"]["info.emails.email"]["$eq"] = json!("JO@example.com");
    let page = w
        .inbox
        .contacts()
        .query(&parse_query_request(&query).unwrap())
        .unwrap();
    check_json(
        &QueryContactsResponse::new(&page),
        expect![[r#"
            {
              "contacts": [
                {
                  "id": "4e600edc-db48-5260-9d04-7ea5c3e5fffd",
                  "revision": 1
                }
              ],
              "pagingMetadata": {
                "count": 1,
                "offset": 0,
                "total": 1,
                "tooManyToCount": false
              }
            }"#]],
    );

    // Step 3: get or create the contact's conversation.
    let req: GetOrCreateConversationRequest =
        parse_body(examples[1].to_string().as_bytes()).unwrap();
    let events = w.run(&req.to_command().unwrap());
    let participant = ParticipantId::Contact(id);
    let view = w.inbox.conversation_of(participant).unwrap();
    check_json(
        &GetOrCreateConversationResponse::new(&view, !events.is_empty()),
        expect![[r#"
            {
              "conversation": {
                "id": "00000000-0000-0000-0000-000000010002",
                "participant": {
                  "contactId": "4e600edc-db48-5260-9d04-7ea5c3e5fffd"
                },
                "channels": [
                  "CHAT",
                  "EMAIL"
                ],
                "businessDisplayData": {},
                "participantDisplayData": {
                  "name": "Jo Doe"
                }
              },
              "newConversation": true
            }"#]],
    );

    // Step 4: send the incoming message into it.
    let conv = view.id.to_string();
    let sent = send(&mut w, &send_body(&examples[2], &conv)).unwrap();
    check_json(
        &sent,
        expect![[r#"
            {
              "message": {
                "id": "1700000002000000",
                "content": {
                  "basic": {
                    "items": [
                      {
                        "text": "<INCOMING_MESSAGE_FROM_EXTERNAL_SERVICE>"
                      }
                    ]
                  }
                },
                "sender": {
                  "appId": "00000000-0000-0000-0000-000000000a99"
                },
                "badges": [
                  {
                    "text": "Facebook",
                    "iconUrl": "https://static.wixstatic.com/media/aebe5b6fd55f471a936c72ff2c8289d7.png/v1/fill/w_43,h_43,al_c,q_85,usm_0.66_1.00_0.01/aebe5b6fd55f471a936c72ff2c8289d7.webp"
                  }
                ],
                "targetChannels": [],
                "targetChannelIds": [],
                "appId": "00000000-0000-0000-0000-000000000a99",
                "visibility": "BUSINESS",
                "sequence": "1700000002000000",
                "direction": "PARTICIPANT_TO_BUSINESS",
                "createdDate": "2023-11-14T22:13:22Z",
                "silent": false
              }
            }"#]],
    );

    // Listing it back: the SDK's `.r=` form and hand-written dotted parameters agree.
    let sdk = ListMessagesRequest::from_query(&format!(
        ".r={}",
        base64_url(&json!({"conversationId": conv, "visibility": "BUSINESS",
            "paging": {"limit": 10}, "sorting": {"fieldName": "sequence", "order": "ASC"}}))
    ))
    .unwrap();
    let dotted = ListMessagesRequest::from_query(&format!(
        "conversationId={conv}&visibility=BUSINESS&paging.limit=10&sorting.fieldName=sequence&sorting.order=ASC"
    ))
    .unwrap();
    assert_eq!(sdk.to_core().unwrap(), dotted.to_core().unwrap());
    let page = w.inbox.list_messages(&sdk.to_core().unwrap()).unwrap();
    let listed = ListMessagesResponse::new(&page);
    assert_eq!(listed.messages, vec![sent.message]);
    assert_eq!(
        serde_json::to_value(&listed.paging_metadata).unwrap(),
        json!({"count": 1, "cursors": {}}),
        "no next cursor at the end, and no hasNext"
    );
    // The participant cannot see a BUSINESS message.
    let participant_view = ListMessagesRequest::from_query(&format!(
        "conversation_id={conv}&visibility=BUSINESS_AND_PARTICIPANT"
    ))
    .unwrap();
    assert!(
        w.inbox
            .list_messages(&participant_view.to_core().unwrap())
            .unwrap()
            .messages
            .is_empty()
    );
}

fn base64_url(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Every example of the message types page, sent by an app: the four an app may send are
/// stored and answered; `system` is refused with a validation error.
#[test]
fn every_message_type_example_is_sent_or_refused_as_documented() {
    let examples = numbered_examples("messages-and-message-types.txt");
    let mut w = World::new();
    let visitor = ParticipantId::Visitor(visitor(1));
    w.run(&Command::GetOrCreateConversation {
        participant: visitor,
    });
    let conv = w.inbox.live_conversation_of(visitor).unwrap().to_string();
    let answers: Vec<String> = examples
        .iter()
        .map(|e| match send(&mut w, &send_body(e, &conv)) {
            Ok(sent) => serde_json::to_string_pretty(&sent.message.content).unwrap(),
            Err(e) => refusal(&e),
        })
        .collect();
    expect![[r#"
        {
          "previewText": "Thanks for booking your spa day with us!",
          "basic": {
            "items": [
              {
                "image": {
                  "url": "https://static.wixstatic.com/media/f93e3d633e79921f14330f1911fc1139.jpg/v1/fill/w_1200,h_798,al_c,q_85,usm_0.66_1.00_0.01/f93e3d633e79921f14330f1911fc1139.webp",
                  "width": 1200,
                  "height": 798
                }
              },
              {
                "text": "Thanks for booking your spa day with us!"
              },
              {
                "text": "We've emailed your invoice. You'll find everything you need to know there."
              }
            ]
          }
        }
        ---
        {
          "previewText": "JoJo Doe made an appointment",
          "form": {
            "title": "New Spa Appointment",
            "description": "JoJo Doe made an appointment",
            "fields": [
              {
                "name": "First Name",
                "value": "JoJo"
              },
              {
                "name": "Last Name",
                "value": "Doe"
              },
              {
                "name": "Treatments",
                "value": "Massage, Mud Bath, Facial"
              },
              {
                "name": "Appointment Date",
                "value": "May 9, 2021"
              }
            ],
            "media": [
              {
                "image": {
                  "url": "https://static.wixstatic.com/media/f93e3d633e79921f14330f1911fc1139.jpg/v1/fill/w_1200,h_798,al_c,q_85,usm_0.66_1.00_0.01/f93e3d633e79921f14330f1911fc1139.webp",
                  "width": 1200,
                  "height": 798
                }
              }
            ]
          }
        }
        ---
        {
          "previewText": "Booked a spa appointment",
          "minimal": {
            "text": "Booked a spa appointment",
            "iconUrl": "https://static.wixstatic.com/media/727514_1a58537f1b6a44a7b09956cdbc5ac774~mv2.png/v1/fill/w_297,h_324,al_c,lg_1,q_85/727514_1a58537f1b6a44a7b09956cdbc5ac774~mv2.webp"
          }
        }
        ---
        {
          "previewText": "JoJo, you're getting a spa day!",
          "template": {
            "title": "JoJo, you're getting a spa day!",
            "textLines": [
              "Thanks for booking with us!",
              "You're booked for a massage, mud bath, and facial on May 9, 2021."
            ],
            "imageUrl": "https://static.wixstatic.com/media/f93e3d633e79921f14330f1911fc1139.jpg/v1/fill/w_1200,h_798,al_c,q_85,usm_0.66_1.00_0.01/f93e3d633e79921f14330f1911fc1139.webp",
            "buttons": [
              {
                "label": "View My Invoice",
                "launchUrl": "https://www.example.com/customer_12345/spa_day_54321/invoice.pdf"
              },
              {
                "label": "Change My Appointment",
                "postbackProperties": {
                  "interactionId": "spa_day_54321__change_appointment",
                  "appId": "00000000-0000-0000-0000-000000000a99"
                }
              }
            ]
          }
        }
        ---
        400 {
          "details": {
            "validationError": {
              "fieldViolations": [
                {
                  "description": "system messages cannot be sent by apps",
                  "field": "message.content.system",
                  "violatedRule": "FIELD_NOT_ALLOWED"
                }
              ]
            }
          },
          "message": "system messages cannot be sent by apps"
        }"#]]
    .assert_eq(&answers.join("\n---\n"));
}

/// The system example is still a message an app may *receive*: as an observed message (a
/// webhook) it is kept whole.
#[test]
fn the_system_example_is_kept_when_observed() {
    let examples = numbered_examples("messages-and-message-types.txt");
    let mut m: inbox_wix::wire::Message =
        serde_json::from_value(examples[4]["message"].clone()).unwrap();
    m.id = Some("1640849952353627".into());
    m.sequence = Some(inbox_wix::wire::Int64(1_640_849_952_353_627));
    let observed = m
        .into_observed(
            SOME_CONVERSATION.parse().unwrap(),
            inbox_core::Timestamp::from_micros(T0),
        )
        .unwrap();
    check(
        &observed.content,
        expect![[r#"
            Content {
                extras: Some(
                    ContentExtras {
                        preview_text: Some(
                            "Facebook policy requires you to respond to\nvisitors' messages within 7 days.",
                        ),
                        title: None,
                    },
                ),
                body: System(
                    System {
                        text: "Facebook policy requires you to respond to\nvisitors' messages within 7 days.",
                        buttons: [
                            Button {
                                label: "Learn More",
                                action: Launch {
                                    url: "https://support.wix.com/en/article/wix-inbox-connecting-your-facebook-page",
                                },
                            },
                        ],
                        image_url: None,
                    },
                ),
            }
        "#]],
    );
    assert_eq!(
        observed.source_channel,
        Some(inbox_core::message::Channel::Facebook)
    );
}

/// `docs/WIX-MAPPING.md` prints [`inbox_wix::error::ERROR_CODES`]; they must agree.
#[test]
fn the_error_table_in_the_docs_is_the_one_in_the_code() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/WIX-MAPPING.md"),
    )
    .unwrap();
    let start = doc.find("<!-- error table").unwrap();
    let end = doc.find("<!-- end of error table -->").unwrap();
    let rows: Vec<String> = doc[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = inbox_wix::error::ERROR_CODES
        .iter()
        .map(|(code, status, when)| format!("| `{code}` | {status} | {when} |"))
        .collect();
    assert_eq!(rows, expected);
    // And every code the query parser can give is in it.
    for code in [
        "MALFORMED_FILTER",
        "UNSUPPORTED_FILTER",
        "UNSUPPORTED_FILTER_FIELD_UNKNOWN",
        "UNSUPPORTED_FILTER_OPERATOR",
        "UNSUPPORTED_FILTER_VALUE_TYPE",
        "UNSUPPORTED_FILTER_VALUE",
        "ILLEGAL_LIMIT",
        "UNSUPPORTED_SORT_FIELD",
        "INVALID_QUERY",
    ] {
        assert!(expected.iter().any(|r| r.contains(code)), "{code}");
    }
}
