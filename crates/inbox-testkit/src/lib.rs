//! # inbox-testkit
//!
//! The reference model of `inbox-core` and the generators that reach its hard cases, for
//! anyone who property-tests merge behaviour: the engine's own suites, its fuzz target, and a
//! service checking its own projection of conversations.
//!
//! * [`Model`] is the specification as code: a set of events and the plainest rules over it,
//!   every query computed from scratch. It shares no data structure with the engine.
//!
//! Nothing here is compiled into a default build of the engine: depend on this crate from
//! `[dev-dependencies]`.

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
