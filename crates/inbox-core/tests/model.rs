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

    /// A merge followed by its revert leaves every query as if the merge had never been
    /// folded: the same live conversations, the same root for every id, the same messages in
    /// each (nothing was sent after the revert), the same identities and anomalies.
    #[test]
    fn a_merge_then_its_revert_is_as_if_the_merge_never_happened(
        steps in history(Population::Observed, 60),
        which in any::<u16>(),
    ) {
        reverted_is_never_merged(&steps, which)?;
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

fn reverted_is_never_merged(
    steps: &[inbox_testkit::Step],
    which: u16,
) -> Result<(), TestCaseError> {
    use inbox_core::{Event, EventEnvelope, Inbox, ParticipantId, Sequence};
    use inbox_testkit::runner::site_config;
    let run = Runner::run(Population::Observed, steps, &[])
        .map_err(|m| TestCaseError::fail(m.to_string()))?;
    let log: Vec<EventEnvelope> = run.log().to_vec();
    let edges: Vec<(usize, usize)> = log
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.event {
            Event::ConversationsMerged {
                sources, target, ..
            } => Some(
                (0..sources.len())
                    .filter(|k| sources[*k] != *target)
                    .map(move |k| (i, k))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    if edges.is_empty() {
        return Ok(());
    }
    let (at, k) = edges[usize::from(which) % edges.len()];
    let Event::ConversationsMerged {
        sources,
        target,
        stamp,
    } = &log[at].event
    else {
        unreachable!()
    };
    let (source, target, merged_at) = (sources[k], *target, *stamp);
    // Without the merge: the event keeps its other sources; a revert of a merge that never
    // comes keeps the source known, changing nothing else.
    // (The same merge may be in the log more than once: it goes from every event carrying it.)
    let mut without = log.clone();
    for e in &mut without {
        if let Event::ConversationsMerged {
            sources,
            target: t,
            stamp,
        } = &mut e.event
            && *t == target
            && *stamp == merged_at
        {
            sources.retain(|s| *s != source);
        }
    }
    // (A merge of a conversation into itself is never folded as a merge, so this revert
    // names no merge the log has.)
    let keep_known = Event::ConversationMergeReverted {
        source,
        target: source,
        merged_at: Sequence(i64::MIN),
        stamp: Sequence(i64::MIN),
    };
    let after_all = Sequence(run.engine().last_sequence().0.saturating_add(1));
    let revert = Event::ConversationMergeReverted {
        source,
        target,
        merged_at,
        stamp: after_all,
    };
    let fold = |events: &[EventEnvelope], extra: Event| {
        let mut inbox = Inbox::new(site_config());
        for e in events {
            inbox.apply(e);
        }
        inbox.apply_event(&extra);
        inbox
    };
    let never = fold(&without, keep_known);
    let reverted = fold(&log, revert);
    let same = |what: String, a: String, b: String| {
        if a == b {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{what}:\n  reverted {b}\n  never    {a}\n  reverting {source:?} -> {target:?} at {merged_at:?}\n  log {:?}",
                log.iter().map(|e| &e.event).collect::<Vec<_>>()
            )))
        }
    };
    let live = |i: &Inbox| i.live_conversations().collect::<Vec<_>>();
    same(
        "live conversations".into(),
        format!("{:?}", live(&never)),
        format!("{:?}", live(&reverted)),
    )?;
    let mut named = std::collections::BTreeSet::from([source, target]);
    for e in &log {
        match &e.event {
            Event::ConversationStarted {
                conversation_id, ..
            } => {
                named.insert(*conversation_id);
            }
            Event::MessageSent { message } => {
                named.insert(message.conversation_id);
            }
            Event::ConversationsMerged {
                sources, target, ..
            } => {
                named.extend(sources.iter().copied());
                named.insert(*target);
            }
            _ => {}
        }
    }
    for c in named {
        same(
            format!("root of {c:?}"),
            format!("{:?}", never.root_of(c)),
            format!("{:?}", reverted.root_of(c)),
        )?;
        same(
            format!("messages of {c:?}"),
            format!("{:?}", never.messages_of(c).collect::<Vec<_>>()),
            format!("{:?}", reverted.messages_of(c).collect::<Vec<_>>()),
        )?;
        same(
            format!("conversation {c:?}"),
            format!("{:?}", never.conversation(c)),
            format!("{:?}", reverted.conversation(c)),
        )?;
    }
    for p in (0..8u8)
        .map(|i| ParticipantId::Visitor(inbox_testkit::runner::visitor(i)))
        .chain((0..8u8).map(|i| ParticipantId::Contact(inbox_testkit::runner::contact(i))))
        .chain((0..8u8).map(|i| ParticipantId::Member(inbox_testkit::runner::member(i))))
    {
        same(
            format!("live conversation of {p:?}"),
            format!("{:?}", never.live_conversation_of(p)),
            format!("{:?}", reverted.live_conversation_of(p)),
        )?;
    }
    let anomalies = |i: &Inbox| {
        let mut a: Vec<_> = i.anomalies().cloned().collect();
        a.sort();
        format!("{a:?}")
    };
    same("anomalies".into(), anomalies(&never), anomalies(&reverted))
}
