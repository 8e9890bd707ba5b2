//! Memory per message: the heap bytes an `Inbox` holds per 40-character text message in a
//! 10^6-message state, against a plain `Vec<(Sequence, String)>` floor.
//!
//! A counting global allocator (`stats_alloc` around the system allocator) gives the live
//! heap bytes (requested sizes; the allocator's own per-block overhead is not included).
//! Each scenario runs in a fresh child process (this binary, re-run with
//! `INBOX_MEMORY_SCENARIO` set), so that its resident-set growth (`VmRSS`, which does include
//! the allocator's overhead) is measured too, unblurred by memory freed by another scenario.
//!
//! Prints one line per scenario and writes `<target>/criterion/memory.json`.
//! `INBOX_BENCH_QUICK=1` shrinks the state to 10^4 messages (in at most 100 conversations).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

use inbox_benches::{TEXT_CHARS, inbox_with_conversations, quick_mode, send_events, text40};
use inbox_core::{Event, Inbox, Message, Sequence};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SCENARIO_VAR: &str = "INBOX_MEMORY_SCENARIO";
const TARGET_BYTES_PER_MESSAGE: f64 = 300.0;

/// (name, conversations; 0 for the floor)
const SCENARIOS: [(&str, u64); 3] = [
    ("inbox_100_per_conversation", 10_000),
    ("inbox_1_conversation", 1),
    ("floor_vec_seq_string", 0),
];

fn live_bytes() -> i128 {
    let s = GLOBAL.stats();
    i128::try_from(s.bytes_allocated).unwrap() - i128::try_from(s.bytes_deallocated).unwrap()
}

fn rss_bytes() -> Option<i128> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn messages() -> u64 {
    if quick_mode() { 10_000 } else { 1_000_000 }
}

/// Runs one scenario in this process; prints `live_bytes rss_bytes` for the parent.
fn run_scenario(conversations: u64) {
    let n = messages();
    // Quick mode keeps about 100 messages per conversation, as the full run does.
    let conversations = conversations.min(n / 100).max(u64::from(conversations > 0));
    let (live, rss) = if conversations == 0 {
        let (l0, r0) = (live_bytes(), rss_bytes());
        let floor: Vec<(Sequence, String)> = (0..n)
            .map(|i| {
                (
                    Sequence(inbox_benches::BASE_SEQUENCE + i64::try_from(i).unwrap()),
                    text40(i),
                )
            })
            .collect();
        let (l1, r1) = (live_bytes(), rss_bytes());
        black_box(&floor);
        (l1 - l0, r1.zip(r0).map(|(a, b)| a - b))
    } else {
        let (l0, r0) = (live_bytes(), rss_bytes());
        // The whole state counts: the conversations too.
        let mut inbox: Inbox = inbox_with_conversations(conversations);
        // Each event is made, applied and dropped: only what the state keeps stays live.
        for e in send_events(n, conversations) {
            inbox.apply_event(&e);
        }
        let (l1, r1) = (live_bytes(), rss_bytes());
        assert_eq!(inbox.message_count(), usize::try_from(n).unwrap());
        black_box(&inbox);
        (l1 - l0, r1.zip(r0).map(|(a, b)| a - b))
    };
    println!(
        "{live} {} {conversations}",
        rss.map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // This binary is <target>/<profile>/deps/memory-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

fn main() {
    if let Ok(name) = std::env::var(SCENARIO_VAR) {
        let (_, conversations) = SCENARIOS.iter().find(|(n, _)| *n == name).unwrap();
        run_scenario(*conversations);
        return;
    }
    // Criterion-style filter: positional arguments; skip unless one matches.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| "memory/bytes_per_message".contains(f.as_str()))
    {
        return;
    }
    let n = messages();
    println!(
        "memory: {n} messages of {TEXT_CHARS} characters; size_of Message = {} B, Event = {} B",
        std::mem::size_of::<Message>(),
        std::mem::size_of::<Event>()
    );
    let exe = std::env::current_exe().unwrap();
    let mut results = Vec::new();
    for (name, _) in SCENARIOS {
        let out = Command::new(&exe).env(SCENARIO_VAR, name).output().unwrap();
        assert!(out.status.success(), "scenario {name} failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut fields = text.split_whitespace();
        let live: f64 = fields.next().unwrap().parse().unwrap();
        let rss: Option<f64> = fields.next().and_then(|f| f.parse().ok());
        let conversations: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let per = live / n as f64;
        #[allow(clippy::cast_precision_loss)]
        let rss_per = rss.map(|r| r / n as f64);
        println!(
            "memory/bytes_per_message/{name}: {per:.1} B/message live heap, {} B/message RSS \
             ({conversations} conversations)",
            rss_per.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
        );
        results.push((name, conversations, live, per, rss_per));
    }
    let entries: Vec<String> = results
        .iter()
        .map(|(name, conversations, live, per, rss)| {
            format!(
                "    {{\"name\": \"{name}\", \"conversations\": {conversations}, \"live_bytes\": {live}, \"bytes_per_message\": {per:.1}, \"rss_bytes_per_message\": {}}}",
                rss.map_or_else(|| "null".to_owned(), |r| format!("{r:.1}"))
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"messages\": {n},\n  \"text_chars\": {TEXT_CHARS},\n  \"quick\": {},\n  \"target_bytes_per_message\": {TARGET_BYTES_PER_MESSAGE},\n  \"results\": [\n{}\n  ]\n}}\n",
        quick_mode(),
        entries.join(",\n")
    );
    let dir = criterion_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory.json");
    std::fs::write(&path, json).unwrap();
    println!("memory: wrote {}", path.display());
}
