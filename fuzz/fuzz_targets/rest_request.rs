//! REST requests: any body into every request type (`parse_body`, then `to_command` /
//! `to_core` / `to_preview`), any query string into List Messages (`from_query`, dotted or
//! `.r=`), List Contacts, Get Contact's projection and Unlabel Contact. Never a panic; every refusal is a 4xx/5xx with Wix's error body. A request that
//! decodes into a command is also run against a small inbox (its conversation id pointed at a
//! real conversation), and the answer converted back to the wire.

#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inbox_core::{
    Command, ContactId, Context, ConversationId, Inbox, ParticipantId, SequentialIds, Timestamp,
    VisitorId,
};
use inbox_fuzz::{Json, START, check_error, contacts_inbox, fixed_uuid};
use inbox_wix::WixError;
use inbox_wix::rest::{
    self, ContactResponse, CreateContactRequest, GetOrCreateConversationRequest,
    LabelContactRequest, ListMessagesRequest, ListMessagesResponse, MergeContactsRequest,
    QueryContactsResponse, SendMessageRequest, SendMessageResponse, UpdateContactRequest,
    parse_body,
};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    inbox: Inbox,
    conversation: ConversationId,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let mut inbox = contacts_inbox();
    let mut ids = SequentialIds::starting_at(1 << 40);
    let visitor = ParticipantId::Visitor(VisitorId::from_uuid(fixed_uuid(0x71, 0)));
    let ctx = Context::at(Timestamp::from_micros(START + 20_000_000));
    inbox
        .execute(
            &Command::GetOrCreateConversation {
                participant: visitor,
            },
            &ctx,
            &mut ids,
        )
        .expect("conversation");
    let conversation = inbox.live_conversation_of(visitor).expect("live");
    Fixture {
        inbox,
        conversation,
    }
});

#[derive(Arbitrary, Debug)]
enum Body {
    Bytes(Vec<u8>),
    Json(Json),
}

#[derive(Arbitrary, Debug)]
enum Input {
    GetOrCreate(Body),
    Send(Body),
    CreateContact(Body),
    UpdateContact(Body),
    LabelContact(Body),
    Merge(Body),
    /// List Contacts, Get Contact's projection and Unlabel Contact, from a query string.
    ContactsQuery(String),
    ListBody(Body),
    Query(String),
    /// The SDK's form: `.r=<base64url of JSON>`, with more parameters after.
    QueryR(Json, String),
    Path(String),
}

fn bytes(body: &Body) -> Vec<u8> {
    match body {
        Body::Bytes(b) => b.clone(),
        Body::Json(v) => serde_json::to_vec(&v.0).unwrap(),
    }
}

fn ok_or_check<T>(r: Result<T, WixError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            check_error(&e);
            None
        }
    }
}

/// Runs a command on a copy of the fixture; refusals must map to Wix errors.
fn run(command: &Command) -> Option<(Inbox, Vec<inbox_core::EventEnvelope>)> {
    let mut inbox = FIXTURE.inbox.clone();
    let mut ids = SequentialIds::starting_at(1 << 50);
    let ctx = Context::at(Timestamp::from_micros(START + 30_000_000));
    match inbox.execute(command, &ctx, &mut ids) {
        Ok(events) => Some((inbox, events)),
        Err(rejection) => {
            check_error(&WixError::from(rejection));
            None
        }
    }
}

fn list(query: &str) {
    let Some(req) = ok_or_check(ListMessagesRequest::from_query(query)) else {
        return;
    };
    let Some(mut core) = ok_or_check(req.to_core()) else {
        return;
    };
    core.conversation_id = FIXTURE.conversation;
    match FIXTURE.inbox.list_messages(&core) {
        Ok(page) => {
            let _ = serde_json::to_vec(&ListMessagesResponse::new(&page)).unwrap();
        }
        Err(e) => check_error(&WixError::from(e)),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::GetOrCreate(body) => {
            let Some(req) =
                ok_or_check(parse_body::<GetOrCreateConversationRequest>(&bytes(&body)))
            else {
                return;
            };
            if let Some(cmd) = ok_or_check(req.to_command()) {
                run(&cmd);
            }
        }
        Input::Send(body) => {
            let Some(req) = ok_or_check(parse_body::<SendMessageRequest>(&bytes(&body))) else {
                return;
            };
            let Some(mut cmd) = ok_or_check(req.to_command()) else {
                return;
            };
            if let Command::SendMessage {
                conversation_id, ..
            } = &mut cmd
            {
                *conversation_id = FIXTURE.conversation;
            }
            if let Some((inbox, events)) = run(&cmd) {
                for e in &events {
                    if let inbox_core::Event::MessageSent { message } = &e.event {
                        let wire = SendMessageResponse::new(message);
                        let _ = serde_json::to_vec(&wire).unwrap();
                        assert!(inbox.message(message.id).is_some());
                    }
                }
            }
        }
        Input::CreateContact(body) => {
            let Some(req) = ok_or_check(parse_body::<CreateContactRequest>(&bytes(&body))) else {
                return;
            };
            let id = ContactId::from_uuid(fixed_uuid(0x72, 200));
            let Some(cmd) = ok_or_check(req.to_command(id, Default::default())) else {
                return;
            };
            if let Some((inbox, _)) = run(&cmd) {
                let contact = inbox.contacts().get(id).expect("created contact is there");
                let _ = serde_json::to_vec(&ContactResponse::new(contact)).unwrap();
            }
        }
        Input::UpdateContact(body) => {
            let Some(req) = ok_or_check(parse_body::<UpdateContactRequest>(&bytes(&body))) else {
                return;
            };
            let id = ContactId::from_uuid(fixed_uuid(0x72, 0));
            if let Some(cmd) = ok_or_check(req.to_command(id))
                && let Some((inbox, _)) = run(&cmd)
            {
                let contact = inbox.contacts().get(id).expect("updated contact is there");
                let _ = serde_json::to_vec(&ContactResponse::new(contact)).unwrap();
            }
        }
        Input::LabelContact(body) => {
            let Some(req) = ok_or_check(parse_body::<LabelContactRequest>(&bytes(&body))) else {
                return;
            };
            run(&req.to_command(ContactId::from_uuid(fixed_uuid(0x72, 1))));
        }
        Input::ContactsQuery(q) => {
            if let Some(page) = ok_or_check(rest::list_contacts(&FIXTURE.inbox, &q)) {
                let _ = serde_json::to_vec::<QueryContactsResponse>(&page).unwrap();
            }
            let id = ContactId::from_uuid(fixed_uuid(0x72, 0));
            let _ = ok_or_check(rest::get_contact(&FIXTURE.inbox, &id.to_string(), &q));
            run(&rest::unlabel_contact_command(id, &q));
        }
        Input::Merge(body) => {
            let b = bytes(&body);
            let Some(req) = ok_or_check(parse_body::<MergeContactsRequest>(&b)) else {
                return;
            };
            let target = ContactId::from_uuid(fixed_uuid(0x72, 0));
            let _ = ok_or_check(req.to_preview());
            let _ = ok_or_check(rest::preview_merge(
                &FIXTURE.inbox,
                &target.to_string(),
                &b,
                Timestamp::from_micros(START),
            ));
            if let Some(cmd) = ok_or_check(req.to_command(target)) {
                run(&cmd);
            }
        }
        Input::ListBody(body) => {
            if let Some(req) = ok_or_check(parse_body::<ListMessagesRequest>(&bytes(&body))) {
                let _ = ok_or_check(req.to_core());
            }
        }
        Input::Query(q) => {
            list(&q);
            let _ = ok_or_check(rest::list_messages(&FIXTURE.inbox, &q));
        }
        Input::QueryR(json, rest) => {
            let q = format!(
                ".r={}&{rest}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json.0).unwrap())
            );
            list(&q);
        }
        Input::Path(segment) => {
            let _ = ok_or_check(rest::get_conversation(&FIXTURE.inbox, &segment));
            let _ = ok_or_check(rest::get_contact(&FIXTURE.inbox, &segment, ""));
        }
    }
});
