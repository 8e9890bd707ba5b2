//! Backward compatibility: logs written in event schema versions 1 to 4 (committed under
//! `tests/fixtures/v1` to `v4`) still open, and their events are upcast to the current shape.
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

/// A log of schema version 3, written by the `FileLog` of commit f797f29 (the last build that
/// wrote version 3): two contacts, the second's conversation, its merge into the first, and
/// the first's registration as a member. Version 3 contacts had no details, source or
/// activity: they upcast with none, `Other`, and their creation as last activity; the merged
/// target keeps the merged data.
#[test]
fn a_version_3_log_reads_and_upcasts_its_contacts() {
    use inbox_core::contacts::{ActivityType, ContactDetails, ContactSource};

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v3/00000000000000000001.seg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("00000000000000000001.seg")).unwrap();
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!((report.events, report.torn_tail), (9, None));
    let events = log.read_all(1, 100).unwrap();
    let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("fixture-site"), [0; 16]));
    for e in events {
        assert_eq!(e.envelope.schema_version, inbox_core::SCHEMA_VERSION);
        inbox.apply_owned(e.envelope.event);
    }
    let jo = inbox_core::ContactId::from_uuid(Uuid::from_u128(0xA1));
    let joanna = inbox_core::ContactId::from_uuid(Uuid::from_u128(0xA2));
    let contact = inbox.contacts().get(jo).expect("the target is live");
    assert_eq!(contact.revision, 2);
    assert_eq!(contact.name.first.as_deref(), Some("Joanna"));
    assert_eq!(
        contact
            .emails
            .iter()
            .map(|e| e.email.as_str())
            .collect::<Vec<_>>(),
        ["jo@example.com", "joanna@example.com"]
    );
    assert_eq!(contact.details, ContactDetails::default());
    assert_eq!(contact.source, ContactSource::default());
    assert_eq!(contact.last_activity.kind, ActivityType::ContactCreated);
    assert_eq!(contact.last_activity.at, contact.created_date);
    assert_eq!(inbox.contacts().resolve(joanna), jo);
    let member = inbox_core::MemberId::from_uuid(Uuid::from_u128(0xB1));
    assert_eq!(inbox.member(member).map(|m| m.contact_id), Some(jo));
}

/// A log of schema version 4, written by the `FileLog` of commit 867c9a0 (the last build that
/// wrote version 4) from decided commands: a contact created with details, updated, labelled
/// and unlabelled; a second contact created and deleted. Version 5 only added events, so
/// these read as they were written.
#[test]
fn a_version_4_log_reads_as_written() {
    use inbox_core::contacts::ExtendedValue;

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v4/00000000000000000001.seg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("00000000000000000001.seg")).unwrap();
    let (log, report) = FileLog::open(dir.path()).unwrap();
    assert_eq!((report.events, report.torn_tail), (5, None));
    let events = log.read_all(1, 100).unwrap();
    let names: Vec<_> = events.iter().map(|e| e.envelope.event.kind()).collect();
    assert_eq!(
        names,
        [
            "contact_created",
            "contact_updated",
            "contact_updated",
            "contact_created",
            "contact_deleted"
        ]
    );
    let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("fixture-site"), [0; 16]));
    for e in events {
        assert_eq!(e.envelope.schema_version, inbox_core::SCHEMA_VERSION);
        inbox.apply_owned(e.envelope.event);
    }
    let jo = inbox_core::ContactId::from_uuid(Uuid::from_u128(0xA1));
    let sam = inbox_core::ContactId::from_uuid(Uuid::from_u128(0xA2));
    let contact = inbox.contacts().get(jo).expect("jo is live");
    assert_eq!(contact.revision, 3);
    assert_eq!(contact.details.company.as_deref(), Some("Acme"));
    assert_eq!(contact.details.job_title.as_deref(), Some("CTO"));
    assert_eq!(
        contact.details.labels.iter().collect::<Vec<_>>(),
        ["custom.lead"]
    );
    assert_eq!(
        contact.details.extended_fields.get("custom.age"),
        Some(&ExtendedValue::Number("41".into()))
    );
    assert!(inbox.contacts().get(sam).is_none());
    assert!(inbox.contacts().is_deleted(sam));
}
