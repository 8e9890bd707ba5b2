//! Backward compatibility: a log written in event schema version 1 (committed under
//! `tests/fixtures/v1`) still opens, and its events are upcast to the current shape.
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
