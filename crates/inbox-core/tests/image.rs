//! The state image (`inbox_core::image`) reads back as the state it was taken of, for the
//! reference model's hard histories of every population, split into any number of parts:
//! observed messages with sequences that are not their id, dates that are not their
//! sequence, messages held by a conversation other than the one they were sent to, senders
//! and apps that change from one message to the next.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use inbox_testkit::{Population, Runner, round_trip_image};
use proptest::prelude::*;

fn population() -> impl Strategy<Value = Population> {
    prop_oneof![
        Just(Population::Decided),
        Just(Population::Observed),
        Just(Population::Mixed)
    ]
}

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(128))]
    #[test]
    fn an_image_reads_back_as_the_state_of_any_history(
        (population, steps) in population()
            .prop_flat_map(|p| (Just(p), inbox_testkit::history(p, 60))),
        parts in 1usize..5,
    ) {
        let run = Runner::run(population, &steps, &[])
            .map_err(|m| TestCaseError::fail(m.to_string()))?;
        let back = round_trip_image(run.engine(), parts)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(&back == run.engine(), "image of {} parts differs", parts);
    }
}
