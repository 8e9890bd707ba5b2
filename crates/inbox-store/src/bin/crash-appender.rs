//! Test helper for the crash-consistency test (`tests/crash.rs`): appends to a file log from
//! several threads for ever and prints `ack <event id>` for each event once its append has
//! returned (that is, once it is durable). The test SIGKILLs it at arbitrary moments.
//!
//! Usage: `crash-appender <dir> <cycle> [segment bytes]` (small segments make the kills land
//! on segment roll-overs too).

use std::io::Write;
use std::sync::Arc;

use inbox_core::message::{ChannelSet, Content, Direction, Sender, Visibility};
use inbox_core::{
    ConversationId, Event, EventEnvelope, EventId, Message, MessageId, Sequence, SiteId, Timestamp,
};
use inbox_store::{EventLog, ExpectedVersion, FileLog};
use uuid::Uuid;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(cycle)) = (args.next(), args.next().and_then(|c| c.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash-appender <dir> <cycle>");
        std::process::exit(2);
    };
    let mut options = inbox_store::FileLogOptions::default();
    if let Some(bytes) = args.next().and_then(|b| b.parse::<u64>().ok()) {
        options.segment_bytes = bytes;
    }
    let log = match FileLog::open_with(&dir, options) {
        Ok((log, _)) => Arc::new(log),
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                let site = SiteId::new(format!("site-{t}"));
                for i in 0u64.. {
                    let batch: Vec<EventEnvelope> = (0..(1 + i % 3))
                        .map(|k| {
                            let id = (u128::from(cycle) << 80)
                                | (u128::from(t) << 64)
                                | u128::from(i * 4 + k);
                            let seq = i64::try_from(i * 4 + k + 1).unwrap_or(i64::MAX);
                            EventEnvelope::new(
                                site.clone(),
                                EventId::from_uuid(Uuid::from_u128(id)),
                                Timestamp::from_micros(seq),
                                Event::MessageSent {
                                    message: Message {
                                        id: MessageId(id as u64),
                                        sequence: Sequence(seq),
                                        created_date: Timestamp::from_micros(seq),
                                        conversation_id: ConversationId::from_uuid(
                                            Uuid::from_u128(u128::from(t) + 1),
                                        ),
                                        sender: Sender::Unknown,
                                        target_channels: ChannelSet::EMPTY,
                                        source_channel: None,
                                        app_id: None,
                                        visibility: Visibility::Business,
                                        direction: Direction::ParticipantToBusiness,
                                        silent: false,
                                        content: Content::text(format!(
                                            "cycle {cycle} thread {t} message {i}"
                                        )),
                                        badges: Box::new([]),
                                    },
                                },
                            )
                        })
                        .collect();
                    if let Err(e) = log.append(&site, ExpectedVersion::Any, &batch) {
                        eprintln!("append: {e}");
                        std::process::exit(1);
                    }
                    // Checkpoints are written while others append, and kills land on them too.
                    if t == 0
                        && i % 50 == 49
                        && let Err(e) = log.checkpoint()
                    {
                        eprintln!("checkpoint: {e}");
                        std::process::exit(1);
                    }
                    let mut out = stdout.lock().unwrap_or_else(|p| p.into_inner());
                    for e in &batch {
                        let _ = writeln!(out, "ack {}", e.event_id.as_uuid().as_u128());
                    }
                    let _ = out.flush();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
