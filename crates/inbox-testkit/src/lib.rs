//! # inbox-testkit
//!
//! The reference model of `inbox-core` and the generators that reach its hard cases, for
//! anyone who property-tests merge behaviour: the engine's own suites, its fuzz target, and a
//! service checking its own projection of conversations.
//!
//! * [`Model`] is the specification as code: a set of events and the plainest rules over it,
//!   every query computed from scratch. It shares no data structure with the engine.
//! * [`history`] generates histories ([`Step`]s) of decided commands, observed events or both,
//!   built to reach the hard cases: merge chains, conflicts and cycles, re-stamped merges,
//!   stamps at a cursor's watermark, ties, erasures around identity changes, extremes.
//! * [`Runner`] plays a history on the engine and the model side by side and reports the first
//!   [`Mismatch`]; [`agree`] compares any engine state with a model.
//!
//! Nothing here is compiled into a default build of the engine: depend on this crate from
//! `[dev-dependencies]`.
//!
//! # Checking your own projection
//!
//! A service that embeds the engine often keeps a read model of its own, fed by the events:
//! here, a search index of message texts. Whatever order the events arrive in, with repeats,
//! it must answer what the model answers: the version of each message that counts (the
//! smallest), and nothing of what a privacy erasure covers.
//!
//! ```
//! use std::collections::BTreeMap;
//! use inbox_core::message::{BasicItem, ContentBody};
//! use inbox_core::{ConversationId, Event, Message, MessageId, Sequence};
//! use inbox_testkit::{history, shuffled_with_duplicates, Population, Runner};
//! use proptest::prelude::*;
//!
//! /// The service's projection: message id -> its text, for search.
//! #[derive(Default)]
//! struct SearchIndex {
//!     versions: BTreeMap<MessageId, Message>,
//!     erased: Vec<(Vec<ConversationId>, Sequence)>,
//! }
//!
//! impl SearchIndex {
//!     fn fold(&mut self, event: &Event) {
//!         match event {
//!             Event::MessageSent { message } => {
//!                 let kept = self.versions.entry(message.id).or_insert_with(|| message.clone());
//!                 if message < kept {
//!                     *kept = message.clone();
//!                 }
//!             }
//!             Event::ParticipantErased { conversations, up_to, .. } => {
//!                 self.erased.push((conversations.clone(), *up_to));
//!             }
//!             _ => {}
//!         }
//!     }
//!
//!     fn text(&self, id: MessageId) -> Option<&str> {
//!         let m = self.versions.get(&id)?;
//!         let covered = self.erased.iter().any(|(cs, up_to)| {
//!             cs.contains(&m.conversation_id) && m.sequence <= *up_to
//!         });
//!         if covered { None } else { searchable(&m.content.body) }
//!     }
//! }
//!
//! fn searchable(body: &ContentBody) -> Option<&str> {
//!     match body {
//!         ContentBody::Basic(items) => items.iter().find_map(|i| match i {
//!             BasicItem::Text(t) => Some(&**t),
//!             _ => None,
//!         }),
//!         _ => None,
//!     }
//! }
//!
//! proptest! {
//!     #![proptest_config(inbox_testkit::proptest_config(32))]
//!     fn the_index_agrees_with_the_model(
//!         steps in history(Population::Mixed, 40),
//!         seed in any::<u64>(),
//!     ) {
//!         // Run the history (the engine and the model agree on it), then feed the log to
//!         // the projection shuffled, with repeats.
//!         let run = Runner::run(Population::Mixed, &steps, &[seed])
//!             .map_err(|m| TestCaseError::fail(m.to_string()))?;
//!         let mut index = SearchIndex::default();
//!         for e in shuffled_with_duplicates(run.log(), seed) {
//!             index.fold(&e.event);
//!         }
//!         for m in run.model().messages() {
//!             prop_assert_eq!(index.text(m.id), searchable(&m.content.body));
//!         }
//!     }
//! }
//! # fn main() { the_index_agrees_with_the_model(); }
//! ```

#![deny(missing_docs)]

pub mod history;
pub mod model;
pub mod runner;

pub use history::{Population, Step, history};
pub use model::{Cursor, Model, Page, PageRequest};
pub use runner::{Mismatch, Runner, agree, shuffled_with_duplicates};

/// A proptest configuration that every run can reproduce and that CI can move.
///
/// * `PROPTEST_CASES` sets the number of cases (default `default_cases`);
/// * `PROPTEST_RNG_SEED` sets the seed; unset, a fixed one is used, so a plain `cargo test`
///   checks the same histories every time. CI sets it from the commit, so that each commit
///   explores new histories; a failure prints the seed, and the same variable replays it.
pub fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default_cases);
    let mut config = Config::with_cases(cases);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(FIXED_SEED);
    config.rng_seed = RngSeed::Fixed(seed);
    eprintln!("proptest: {cases} cases, PROPTEST_RNG_SEED={seed}");
    config
}

/// The seed of a run that sets none.
pub const FIXED_SEED: u64 = 0x1b0c_5eed_2024;

/// Why a state did not come back through its image.
#[derive(Debug, thiserror::Error)]
pub enum RoundTripError {
    /// A piece of the image could not be encoded or decoded.
    #[error("encoding or decoding the image: {0}")]
    Codec(#[from] postcard::Error),
    /// The decoded image was refused as inconsistent.
    #[error(transparent)]
    Refused(#[from] inbox_core::image::ImageError),
}

/// The state taken apart into an image of `parts` parts ([`inbox_core::image`]), each piece
/// through postcard (as `inbox-store` writes snapshots), and put together again: what a
/// persisted state reads back as. Compare it with the original to check that nothing of
/// the state is lost.
pub fn round_trip_image(
    inbox: &inbox_core::Inbox,
    parts: usize,
) -> Result<inbox_core::Inbox, RoundTripError> {
    use inbox_core::image::{DecodedHead, DecodedPart};
    let image = inbox.image(parts);
    let head: DecodedHead = postcard::from_bytes(&postcard::to_allocvec(&image.head)?)?;
    let parts = image
        .parts
        .iter()
        .map(|p| postcard::from_bytes::<DecodedPart>(&postcard::to_allocvec(p)?))
        .collect::<Result<Vec<_>, postcard::Error>>()?;
    Ok(inbox_core::Inbox::from_image(head, parts)?)
}
