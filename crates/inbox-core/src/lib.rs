//! # inbox-core
//!
//! A pure, deterministic, event-sourced conversation engine with the merge semantics of the
//! Wix Inbox. No I/O, no clock, no randomness: time and fresh ids are arguments, so the same
//! inputs always give the same state (the sans-IO style of quinn-proto and str0m).
//!
//! * [`Inbox::decide`] turns a [`Command`] into [`Event`]s without changing anything;
//! * [`Inbox::apply`] folds an [`EventEnvelope`] into the state, never failing;
//! * queries read the state: [`Inbox::conversation`], [`Inbox::live_conversation_of`],
//!   [`Inbox::list_messages`], [`ContactDirectory::query`].
//!
//! Events come two ways: decided here (the emulator issues ids and sequences) or observed
//! from outside (webhooks, ids and sequences given). Either way the state is a function of the
//! *set* of events: any order, any duplicates, the same result (see `ARCHITECTURE.md` for
//! the ten invariants and how each is kept).

#![deny(missing_docs)]

pub mod catalog;
pub mod command;
pub mod contacts;
mod cursor;
pub mod event;
pub mod ids;
mod inbox;
mod index;
pub mod message;
pub mod participant;
mod timeline;

pub use command::{
    Caller, Command, Context, IdSource, Rejection, RevertMergeError, SendAs, SequentialIds,
};
pub use contacts::{ContactDirectory, SortOrder};
pub use cursor::CursorError;
pub use event::{Event, EventEnvelope, SCHEMA_VERSION};
pub use ids::{
    AppId, ContactId, ConversationId, EventId, MemberId, MessageId, Sequence, SiteId, Timestamp,
    VisitorId, WixUserId,
};
pub use inbox::image;
pub use inbox::{
    Anomaly, ConversationView, DEFAULT_PAGE_LIMIT, DisplayData, GetConversationError, Inbox,
    InboxConfig, Interaction, ListMessages, ListMessagesError, MAX_PAGE_LIMIT, MergeRecord,
    MessagePage, VisibilityFilter,
};
pub use message::{Direction, Message, MessageDraft, MessageRejection, Sender, Visibility};
pub use participant::{Member, Participant, ParticipantId};

/// The proptest configuration of the unit tests: `PROPTEST_CASES` cases (default 256) from
/// `PROPTEST_RNG_SEED`, or a fixed seed when it is unset, so every run is reproducible (the
/// integration tests use `inbox_testkit::proptest_config`, the same rule).
#[cfg(test)]
fn test_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(256);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0x1b0c_5eed_2024);
    let mut config = proptest::test_runner::Config::with_cases(cases);
    config.rng_seed = proptest::test_runner::RngSeed::Fixed(seed);
    config
}
