//! Helpers shared by the fuzz targets: a bounded-depth arbitrary JSON value, the checks on
//! Wix errors, and small fixed inboxes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use arbitrary::{Arbitrary, Result, Unstructured};
use inbox_core::contacts::{ContactDraft, ContactEmail, ContactName, ContactPhone, EntryTag};
use inbox_core::{
    Command, ContactId, Context, Inbox, InboxConfig, SequentialIds, SiteId, Timestamp,
};
use inbox_wix::WixError;
use serde_json::{Map, Number, Value};
use uuid::Uuid;

/// The virtual clock of the fixtures starts here (2023-11-14).
pub const START: i64 = 1_700_000_000_000_000;

/// How deep an arbitrary JSON value nests.
pub const MAX_DEPTH: usize = 6;

/// Strings the fuzzer is likely to need to get anywhere in the Wix shapes: field names,
/// operators, enum values, GUIDs and numbers in strings.
pub const WORDS: &[&str] = &[
    "query",
    "filter",
    "sort",
    "paging",
    "limit",
    "offset",
    "fields",
    "fieldsets",
    "search",
    "fieldName",
    "order",
    "ASC",
    "DESC",
    "id",
    "revision",
    "info",
    "info.emails.email",
    "primaryInfo.email",
    "primaryInfo.phone",
    "info.name.first",
    "info.name.last",
    "createdDate",
    "updatedDate",
    "$eq",
    "$ne",
    "$in",
    "$exists",
    "$startsWith",
    "$and",
    "$or",
    "$not",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$hasSome",
    "FULL",
    "BASIC",
    "name",
    "first",
    "last",
    "emails",
    "phones",
    "items",
    "email",
    "phone",
    "tag",
    "primary",
    "MAIN",
    "HOME",
    "WORK",
    "allowDuplicates",
    "participantId",
    "contactId",
    "anonymousVisitorId",
    "memberId",
    "conversationId",
    "message",
    "content",
    "basic",
    "text",
    "template",
    "minimal",
    "form",
    "system",
    "previewText",
    "title",
    "textLines",
    "buttons",
    "label",
    "launchUrl",
    "postbackProperties",
    "interactionId",
    "visibility",
    "BUSINESS",
    "BUSINESS_AND_PARTICIPANT",
    "direction",
    "BUSINESS_TO_PARTICIPANT",
    "PARTICIPANT_TO_BUSINESS",
    "sendAs",
    "CALLER",
    "PARTICIPANT",
    "BUSINESS_USER",
    "targetChannels",
    "CHAT",
    "EMAIL",
    "SMS",
    "badges",
    "sourceChannel",
    "silent",
    "sequence",
    "cursor",
    "sorting",
    "targetContactRevision",
    "sourceContactIds",
    "image",
    "file",
    "url",
    "width",
    "height",
    "mimeType",
    "fields",
    "value",
    "media",
    "orientation",
    "PORTRAIT",
    "imageUrl",
    "sender",
    "appId",
    "wixUserId",
    "eventType",
    "instanceId",
    "data",
    "identity",
    "entityFqdn",
    "entityId",
    "eventTime",
    "actionEvent",
    "body",
    "bodyAsJson",
    "createdEvent",
    "oldConversationIds",
    "targetConversationId",
    "interactedBy",
    "identityType",
    "ANONYMOUS_VISITOR",
    "MEMBER",
    "WIX_USER",
    "APP",
    "wix.crm.inbox.v2.message",
    "wix.crm.inbox.v2.conversation",
    "message_sent_to_business",
    "message_sent_to_participant",
    "button_interacted",
    "conversations_merged",
    "wix.crm.inbox.v2.message_message_sent_to_business",
    "2024-01-02T03:04:05.678Z",
    "1640849952353627",
    "6fa459ea-ee8a-3ca4-894e-db77e160355e",
    "00000000-0000-0000-0000-000000000001",
    "jo@example.com",
    "+1 555 0100",
    "",
    "a",
    "-1",
    "9223372036854775807",
    "1e400",
    "NaN",
];

/// A JSON value of bounded depth, built from fuzzer bytes.
#[derive(Clone, Debug)]
pub struct Json(pub Value);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        value(u, MAX_DEPTH).map(Json)
    }
}

/// A string: usually one of [`WORDS`], sometimes arbitrary.
pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(WORDS)?).to_owned())
    } else {
        String::arbitrary(u)
    }
}

/// A JSON value at most `depth` deep.
pub fn value(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => match u.int_in_range(0..=3)? {
            0 => Value::Number(i64::arbitrary(u)?.into()),
            1 => Value::Number(u64::arbitrary(u)?.into()),
            2 => Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
            _ => Value::Number(u.int_in_range(-3i64..=1100)?.into()),
        },
        3 | 4 => Value::String(string(u)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(u, depth - 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(string(u)?, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// A refusal must be an HTTP error with Wix's body.
pub fn check_error(e: &WixError) {
    let status = e.status();
    assert!((400..=599).contains(&status), "status {status} for {e:?}");
    let body = e.body();
    assert!(
        body.get("message").is_some_and(Value::is_string),
        "no message in {body}"
    );
    assert!(body.get("details").is_some(), "no details in {body}");
}

/// A fixed site config.
pub fn site_config() -> InboxConfig {
    InboxConfig::new(SiteId::new("site-fuzz"), [7; 16])
}

/// An id far above what `SequentialIds` issues.
pub fn fixed_uuid(kind: u128, i: u8) -> Uuid {
    Uuid::from_u128((kind << 96) | u128::from(i))
}

/// An inbox holding a few contacts (some with emails and phones, one merged away).
pub fn contacts_inbox() -> Inbox {
    let mut inbox = Inbox::new(site_config());
    let mut ids = SequentialIds::default();
    let names = [
        (
            Some("Jo"),
            Some("March"),
            Some("jo@example.com"),
            Some("+1 555 0100"),
        ),
        (Some("Amy"), None, Some("amy@example.com"), None),
        (None, Some("Laurence"), None, Some("+44 20 7946 0000")),
        (Some("beth"), Some("march"), Some("BETH@Example.com"), None),
        (Some("Meg"), None, Some("meg@example.org"), Some("555-0199")),
    ];
    for (i, (first, last, email, phone)) in names.into_iter().enumerate() {
        let draft = ContactDraft {
            name: ContactName {
                first: first.map(str::to_owned),
                last: last.map(str::to_owned),
            },
            emails: email
                .map(|e| ContactEmail {
                    email: e.to_owned(),
                    tag: EntryTag::Main,
                    primary: true,
                })
                .into_iter()
                .collect(),
            phones: phone
                .map(|p| ContactPhone {
                    phone: p.to_owned(),
                    tag: EntryTag::Mobile,
                    primary: true,
                })
                .into_iter()
                .collect(),
            ..ContactDraft::default()
        };
        let ctx = Context::at(Timestamp::from_micros(START + i as i64 * 1_000_000));
        inbox
            .execute(
                &Command::CreateContact {
                    contact_id: ContactId::from_uuid(fixed_uuid(0x72, i as u8)),
                    draft,
                },
                &ctx,
                &mut ids,
            )
            .expect("fixture contact");
    }
    // One merge, so the directory has an alias and a revision above 1.
    let ctx = Context::at(Timestamp::from_micros(START + 10_000_000));
    inbox
        .execute(
            &Command::MergeContacts {
                target: ContactId::from_uuid(fixed_uuid(0x72, 0)),
                expected_revision: 1,
                sources: vec![ContactId::from_uuid(fixed_uuid(0x72, 3))],
            },
            &ctx,
            &mut ids,
        )
        .expect("fixture merge");
    inbox
}

/// Real webhook `data` strings (layer A) for every announced event type: a visitor writes,
/// the business answers with a postback button, the visitor clicks it, then is identified
/// as a contact (its conversation merges into the contact's).
pub fn sample_deliveries() -> Vec<String> {
    use inbox_core::message::{ButtonDraft, ContentDraft, TemplateDraft};
    use inbox_core::{Caller, Direction, MessageDraft, ParticipantId, SendAs, VisitorId};

    let mut inbox = Inbox::new(site_config());
    let mut ids = SequentialIds::default();
    let mut out = Vec::new();
    let mut now = START;
    let mut run = |inbox: &mut Inbox, cmd: Command, out: &mut Vec<String>| {
        now += 1_000_000;
        let ctx = Context {
            now: Timestamp::from_micros(now),
            caller: Caller::App(inbox_core::AppId::from_uuid(fixed_uuid(0x74, 0))),
        };
        let events = inbox.execute(&cmd, &ctx, &mut ids).expect("sample flow");
        for e in &events {
            for a in inbox_wix::webhook::announcements(e, inbox) {
                out.push(a.data());
            }
        }
    };
    let v = ParticipantId::Visitor(VisitorId::from_uuid(fixed_uuid(0x71, 0)));
    let c = ContactId::from_uuid(fixed_uuid(0x72, 0));
    run(
        &mut inbox,
        Command::GetOrCreateConversation { participant: v },
        &mut out,
    );
    let conv = inbox.live_conversation_of(v).expect("conversation");
    run(
        &mut inbox,
        Command::SendMessage {
            conversation_id: conv,
            message: MessageDraft::text(
                "Do you open on Sundays?",
                Direction::ParticipantToBusiness,
            ),
            send_as: SendAs::Participant,
        },
        &mut out,
    );
    run(
        &mut inbox,
        Command::SendMessage {
            conversation_id: conv,
            message: MessageDraft {
                content: ContentDraft {
                    preview_text: Some("We do!".into()),
                    template: Some(TemplateDraft {
                        title: Some("We open 10-16".into()),
                        text_lines: vec!["Book a table?".into()],
                        buttons: vec![ButtonDraft {
                            label: "Book".into(),
                            interaction_id: Some("book-sunday".into()),
                            ..ButtonDraft::default()
                        }],
                        ..TemplateDraft::default()
                    }),
                    ..ContentDraft::default()
                },
                direction: Some(Direction::BusinessToParticipant),
                ..MessageDraft::default()
            },
            send_as: SendAs::Caller,
        },
        &mut out,
    );
    let button_message = inbox.messages_of(conv).last().expect("message").id;
    run(
        &mut inbox,
        Command::InteractWithButton {
            conversation_id: conv,
            message_id: button_message,
            interaction_id: "book-sunday".into(),
        },
        &mut out,
    );
    run(
        &mut inbox,
        Command::CreateContact {
            contact_id: c,
            draft: ContactDraft {
                name: ContactName {
                    first: Some("Jo".into()),
                    last: None,
                },
                ..ContactDraft::default()
            },
        },
        &mut out,
    );
    run(
        &mut inbox,
        Command::GetOrCreateConversation {
            participant: ParticipantId::Contact(c),
        },
        &mut out,
    );
    let cc = inbox
        .live_conversation_of(ParticipantId::Contact(c))
        .expect("contact conversation");
    run(
        &mut inbox,
        Command::SendMessage {
            conversation_id: cc,
            message: MessageDraft::text("Thanks, see you", Direction::ParticipantToBusiness),
            send_as: SendAs::Participant,
        },
        &mut out,
    );
    run(
        &mut inbox,
        Command::IdentifyVisitor {
            visitor: VisitorId::from_uuid(fixed_uuid(0x71, 0)),
            contact: c,
        },
        &mut out,
    );
    out
}
