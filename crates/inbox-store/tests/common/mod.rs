//! Shared helpers of the store's tests.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use inbox_core::message::{ChannelSet, Content, Direction, Sender, Visibility};
use inbox_core::{
    ConversationId, Event, EventEnvelope, EventId, Message, MessageId, ParticipantId, Sequence,
    SiteId, Timestamp, VisitorId,
};
use uuid::Uuid;

pub fn site(n: u8) -> SiteId {
    SiteId::new(format!("site-{n}"))
}

pub fn conversation(n: u64) -> ConversationId {
    ConversationId::from_uuid(Uuid::from_u128(0xC0 << 64 | u128::from(n)))
}

pub fn envelope(site: &SiteId, id: u128, event: Event) -> EventEnvelope {
    EventEnvelope::new(
        site.clone(),
        EventId::from_uuid(Uuid::from_u128(id)),
        Timestamp::from_micros(1_700_000_000_000_000),
        event,
    )
}

pub fn message(seq: i64, conv: ConversationId, text: &str) -> Event {
    Event::MessageSent {
        message: Message {
            id: MessageId(seq as u64),
            sequence: Sequence(seq),
            created_date: Timestamp::from_micros(seq),
            conversation_id: conv,
            sender: Sender::Visitor(VisitorId::from_uuid(Uuid::from_u128(7))),
            target_channels: ChannelSet::EMPTY,
            source_channel: None,
            app_id: None,
            visibility: Visibility::BusinessAndParticipant,
            direction: Direction::ParticipantToBusiness,
            silent: false,
            content: Content::text(text),
            badges: Box::new([]),
        },
    }
}

pub fn started(conv: ConversationId, visitor: u128) -> Event {
    Event::ConversationStarted {
        conversation_id: conv,
        participant: ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(visitor))),
    }
}

/// Appends the `i`-th one-message event of a site (its version before is `i`), as many tests
/// build a log.
pub fn append_nth(log: &dyn inbox_store::EventLog, site: &SiteId, i: u64, text: &str) {
    log.append(
        site,
        inbox_store::ExpectedVersion::Exactly(i),
        &[envelope(
            site,
            u128::from(i) + 1,
            message(i as i64 + 1, conversation(1), text),
        )],
    )
    .unwrap();
}

/// The engine's configuration the engine tests share: a fixed cursor key.
pub fn config() -> inbox_store::EngineConfig {
    inbox_store::EngineConfig::new(|s: &SiteId| inbox_core::InboxConfig::new(s.clone(), [7; 16]))
}

/// Visitor `n` as a participant.
pub fn visitor(n: u128) -> ParticipantId {
    ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(0x51 + n)))
}

/// A command context `micros` after a fixed instant.
pub fn at(micros: i64) -> inbox_core::Context {
    inbox_core::Context::at(Timestamp::from_micros(1_700_000_000_000_000 + micros))
}

/// Get Or Create Conversation for visitor `v`.
pub fn get_or_create(v: u128) -> inbox_core::Command {
    inbox_core::Command::GetOrCreateConversation {
        participant: visitor(v),
    }
}

/// Send Message of `text` from the participant of `conversation_id`.
pub fn send(conversation_id: ConversationId, text: &str) -> inbox_core::Command {
    inbox_core::Command::SendMessage {
        conversation_id,
        message: inbox_core::MessageDraft::text(text, Direction::ParticipantToBusiness),
        send_as: inbox_core::SendAs::Participant,
    }
}
