//! The engine against the reference model (`inbox-testkit`), on generated histories of the
//! three populations: decided commands alone (the emulator), observed events alone (a
//! replica), and both mixed on one site. Every command must be decided exactly as the model
//! decides it, every page read must be the model's page, every query must agree after every
//! step, and the log folded in other orders, by value and from a midway state must give the
//! live state.
//!
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` as in `inbox_testkit::proptest_config`; a deep
//! run: `PROPTEST_CASES=100000 cargo test --release -p inbox-core --test model`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use inbox_testkit::{Population, Runner, history, proptest_config};
use proptest::collection::vec;
use proptest::prelude::*;

/// Cases per population when `PROPTEST_CASES` is not set (sized for a debug build in CI).
const DEFAULT_CASES: u32 = 200;

fn check(
    population: Population,
    steps: &[inbox_testkit::Step],
    seeds: &[u64],
) -> Result<(), TestCaseError> {
    Runner::run(population, steps, seeds)
        .map(|_| ())
        .map_err(|m| TestCaseError::fail(m.to_string()))
}

proptest! {
    #![proptest_config(proptest_config(DEFAULT_CASES))]

    #[test]
    fn decided_histories_agree_with_the_model(
        steps in history(Population::Decided, 60),
        seeds in vec(any::<u64>(), 2),
    ) {
        check(Population::Decided, &steps, &seeds)?;
    }

    #[test]
    fn observed_histories_agree_with_the_model(
        steps in history(Population::Observed, 60),
        seeds in vec(any::<u64>(), 2),
    ) {
        check(Population::Observed, &steps, &seeds)?;
    }

    #[test]
    fn mixed_histories_agree_with_the_model(
        steps in history(Population::Mixed, 60),
        seeds in vec(any::<u64>(), 2),
    ) {
        check(Population::Mixed, &steps, &seeds)?;
    }
}

/// The generators reach every hard case: many mixed histories together hit each of them at
/// least once, so a change that makes them stop (a weight set to zero, a pool grown too big
/// for ids to collide) fails here rather than going unnoticed.
#[test]
fn the_generators_reach_every_hard_case() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    use std::collections::BTreeSet;

    let mut config = Config::with_cases(1);
    config.rng_seed = RngSeed::Fixed(inbox_testkit::FIXED_SEED);
    let mut runner = TestRunner::new(config);
    let mut reached: BTreeSet<&'static str> = BTreeSet::new();
    for population in [Population::Mixed, Population::Observed, Population::Decided] {
        let strategy = history(population, 60);
        for _ in 0..300 {
            let steps = strategy.new_tree(&mut runner).unwrap().current();
            let run = Runner::run(population, &steps, &[1]).unwrap();
            reached.extend(run.reached().iter().copied());
        }
    }
    let missed: Vec<&&str> = inbox_testkit::runner::HARD_CASES
        .iter()
        .filter(|c| !reached.contains(**c))
        .collect();
    assert!(missed.is_empty(), "never reached: {missed:?}");
}
