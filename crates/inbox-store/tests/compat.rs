//! Backward compatibility: logs written in event schema versions 1 and 2 (committed under
//! `tests/fixtures/v1` and `v2`) still open, and their events are upcast to the current
//! shape.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use inbox_core::message::ContentBody;
use inbox_core::{ConversationId, Event, Inbox, InboxConfig, Sequence, SiteId};
use inbox_store::{EventLog, FileLog};
use uuid::Uuid;

#[test]
fn a_version_1_log_reads_and_upcasts() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1/00000000000000000001.seg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("00000000000000000001.seg")).unwrap();
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!((report.events, report.torn_tail), (5, None));
    let events = log.read_all(1, 100).unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.envelope.schema_version == inbox_core::SCHEMA_VERSION)
    );
    let Event::MessageSent { message } = &events[1].envelope.event else {
        panic!("expected a message, got {:?}", events[1].envelope.event);
    };
    assert_eq!(
        message.content,
        inbox_core::message::Content::text("Hello, is anyone there?")
    );
    // v1 erasures covered everything, for ever: the upcast says so explicitly.
    let Event::ParticipantErased { up_to, .. } = &events[4].envelope.event else {
        panic!("expected an erasure");
    };
    assert_eq!(*up_to, Sequence(i64::MAX));

    // Folded, the conversation has both messages, redacted.
    let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("fixture-site"), [0; 16]));
    for e in events {
        inbox.apply_owned(e.envelope.event);
    }
    let conversation = ConversationId::from_uuid(Uuid::from_u128(0xC1));
    let messages: Vec<_> = inbox.messages_of(conversation).collect();
    assert_eq!(messages.len(), 2);
    assert!(
        messages
            .iter()
            .all(|m| m.content.body == ContentBody::Redacted)
    );
}

/// A log of schema version 2, written by the `FileLog` of commit 01faf5c (the last build that
/// wrote version 2): a contact, its registration as a member, the member's conversation and
/// message, and the member's erasure. Version 2 registrations had no stamp; they upcast to
/// `Sequence::ZERO`, which every erasure of their contact covers, as version 2's rule was.
#[test]
fn a_version_2_log_reads_and_upcasts() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v2/00000000000000000001.seg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("00000000000000000001.seg")).unwrap();
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!(report.torn_tail, None);
    let events = log.read_all(1, 100).unwrap();
    let registration = events
        .iter()
        .find_map(|e| match &e.envelope.event {
            Event::MemberRegistered {
                login_email, stamp, ..
            } => Some((login_email.clone(), *stamp)),
            _ => None,
        })
        .expect("a registration");
    assert_eq!(
        registration,
        (Some("jo@example.com".to_owned()), Sequence::ZERO)
    );
    let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("fixture-site"), [0; 16]));
    for e in events {
        inbox.apply_owned(e.envelope.event);
    }
    let member = inbox_core::MemberId::from_uuid(Uuid::from_u128(0xB1));
    let member = inbox.member(member).expect("registered");
    assert_eq!(
        member.login_email, None,
        "the erasure covers it, as in version 2"
    );
    let conversation = ConversationId::from_uuid(Uuid::from_u128(0x1003));
    let messages: Vec<_> = inbox.messages_of(conversation).collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content.body, ContentBody::Redacted);
}
