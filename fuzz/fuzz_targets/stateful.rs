//! The engine against the reference model, driven by libFuzzer: an arbitrary history of
//! decided commands, events observed from outside, redeliveries and page reads (the same
//! [`Step`]s the property tests generate, built from raw bytes) is played on an `Inbox` and
//! on `inbox_testkit::Model` side by side. Every decision, every page and every query must
//! agree after every step, and the log refolded in shuffled orders, by value and from a
//! midway state must give the live state (`Runner::run`). Any disagreement panics with the
//! step and both sides.
//!
//! The oracle is the model, which shares no data structure with the engine: nothing here asks
//! the engine what it should have answered.

#![no_main]

use arbitrary::Arbitrary;
use inbox_testkit::{Population, Runner, Step};
use libfuzzer_sys::fuzz_target;

/// Steps beyond this are dropped: long histories cost time without reaching new states.
const MAX_STEPS: usize = 96;

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0: decided only (then the stricter checks of a decided history apply), 1: observed
    /// only, else both mixed.
    population: u8,
    steps: Vec<Step>,
    shuffle_seed: u64,
}

fuzz_target!(|input: Input| {
    let population = match input.population % 4 {
        0 => Population::Decided,
        1 => Population::Observed,
        _ => Population::Mixed,
    };
    // A decided history has no observed events; drop them rather than waste the input.
    let steps: Vec<Step> = input
        .steps
        .into_iter()
        .filter(|s| population != Population::Decided || !matches!(s, Step::Observe(_)))
        .filter(|s| population != Population::Observed || !matches!(s, Step::Command { .. }))
        .take(MAX_STEPS)
        .collect();
    if let Err(mismatch) = Runner::run(population, &steps, &[input.shuffle_seed]) {
        panic!("{mismatch}\nhistory ({population:?}): {steps:#?}");
    }
});
