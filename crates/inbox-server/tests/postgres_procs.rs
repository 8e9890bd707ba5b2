//! Two real `inboxd` processes on one PostgreSQL database, under load, one of them SIGKILLed.
//!
//! Eight clients on two sites take visitors, get or create their conversations, send
//! messages and now and then identify a visitor as a contact that has a conversation of its
//! own, which merges the two. Every call of a client goes to the other process than its
//! previous call, so every conversation is written through both processes, and so is every
//! merge. After a number of acknowledged sends (fixed-seed, deterministic in what it asks
//! for) process A is SIGKILLed under the load. Then:
//!
//! * B alone lists every acknowledged message exactly once, each conversation's sequences
//!   strictly increasing;
//! * A restarts on the same database and lists the same, and a second load on both
//!   processes is acknowledged and listed the same way through each;
//! * every acknowledged message reaches the webhook receiver at least once, under one event
//!   id; every acknowledged merge is announced (both processes deliver to the same URL,
//!   one at a time by its lease, and B took over if A held it when it died);
//! * both stop with SIGTERM, and `inboxd export --postgres` holds every message once, each
//!   acknowledged one with the text sent.
//!
//! Needs a PostgreSQL server (`INBOX_TEST_POSTGRES`, see `scripts/throwaway-postgres.sh`);
//! skipped loudly without one, a failure under `CI=true`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod procs;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::time::Instant;

use procs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_database_one_killed_under_load_lose_nothing_acknowledged() {
    let Some(url) = inbox_store::postgres::testing::fresh_database("two_inboxd_processes") else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let args = |name: &str| -> Vec<OsString> {
        vec![
            "--postgres".into(),
            url.clone().into(),
            // Unused with --postgres (everything is in the database); each its own anyway.
            "--data".into(),
            dir.path().join(name).into(),
            "--webhook-url".into(),
            receiver.url.clone().into(),
            "--webhook-retries".into(),
            vec!["20ms"; 500].join(",").into(),
        ]
    };
    let mut rng = Rng::new(0x2905_76E5);
    let mut acked: HashMap<Key, String> = HashMap::new();
    let mut conversations: HashSet<(String, String)> = HashSet::new();
    let mut merges: Vec<(String, String)> = Vec::new();
    let mut take = |tally: Tally,
                    acked: &mut HashMap<Key, String>,
                    conversations: &mut HashSet<(String, String)>| {
        for (key, text) in tally.acked.into_inner().unwrap() {
            assert!(
                acked.insert(key.clone(), text).is_none(),
                "message id {key:?} acknowledged twice"
            );
        }
        conversations.extend(tally.conversations.into_inner().unwrap());
        merges.extend(tally.merges.into_inner().unwrap());
    };

    // Phase 1: both processes under load; A is killed in the middle of it.
    let a = Server::start_with(&args("a")).await;
    let b = Server::start_with(&args("b")).await;
    let stop_after = rng.range(120, 240);
    let (tally, mut survivors) = load(vec![a, b], &mut rng, "phase 1", stop_after, End::Kill).await;
    take(tally, &mut acked, &mut conversations);
    let b = survivors.remove(0);
    let phase_1 = acked.len();
    check_listed(&b.base, &acked, &conversations).await;

    // Phase 2: A again, on the same database; both under load, both kept.
    let a = Server::start_with(&args("a")).await;
    check_listed(&a.base, &acked, &conversations).await;
    let (tally, servers) = load(vec![a, b], &mut rng, "phase 2", 80, End::Keep).await;
    take(tally, &mut acked, &mut conversations);
    let mut listed = 0;
    for server in &servers {
        listed = check_listed(&server.base, &acked, &conversations).await;
    }

    // Webhooks: every acknowledged message at least once, under one event id; every merge.
    let logs: String = servers
        .iter()
        .map(Server::log)
        .collect::<Vec<_>>()
        .join("\n---\n");
    await_deliveries(&receiver, &acked, &logs).await;
    await_merges(&receiver, &merges).await;
    let (deliveries, distinct) = receiver.with(|i| {
        let mut events_of: HashMap<Key, HashSet<&str>> = HashMap::new();
        for d in &i.deliveries {
            if let Some(m) = &d.message_id {
                events_of
                    .entry((d.site.clone(), m.clone()))
                    .or_default()
                    .insert(&d.event_id);
            }
        }
        let split: Vec<_> = events_of.iter().filter(|(_, e)| e.len() > 1).collect();
        assert!(split.is_empty(), "messages under two event ids: {split:?}");
        assert!(i.undecodable.is_empty(), "{:?}", i.undecodable);
        let distinct: HashSet<&str> = i.deliveries.iter().map(|d| d.event_id.as_str()).collect();
        (i.deliveries.len(), distinct.len())
    });
    let lease_takers = servers
        .iter()
        .filter(|s| s.log().contains("took the webhook lease"))
        .count();
    for server in servers {
        server.terminate().await;
    }

    // Offline, from the database: every message once, the acknowledged ones as sent.
    let exported = export_from(&["--postgres".into(), url.clone().into()]);
    let repeated: Vec<_> = exported.iter().filter(|(_, (n, _))| *n != 1).collect();
    assert!(repeated.is_empty(), "exported more than once: {repeated:?}");
    for (key, text) in &acked {
        let Some((_, exported_text)) = exported.get(key) else {
            panic!("acknowledged message {key:?} is not in the export");
        };
        assert_eq!(exported_text, text, "message {key:?} has another text");
    }
    println!(
        "{} messages acknowledged ({phase_1} before the kill), {} merges, {listed} listed, {} \
         stored; {deliveries} deliveries of {distinct} events; {lease_takers} of the last two \
         processes took the lease; took {:.1} s",
        acked.len(),
        merges.len(),
        exported.len(),
        started.elapsed().as_secs_f64()
    );
}
