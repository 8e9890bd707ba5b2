//! Test helper for the embedder's crash test (`tests/crash.rs`): a service embedding the
//! durable [`Engine`] over a file log with snapshots, writing from two threads for ever, and
//! printing `ack <site> <message id>` for each message once `Engine::execute` has returned
//! (that is, once it is durable). The test SIGKILLs it at arbitrary moments and checks, after
//! `Engine::open`, that every acknowledged message is there. On odd cycles the engine has a
//! bounded cache of two sites and each thread writes to three sites in turn, so sites are
//! evicted and loaded again between writes.
//!
//! Usage: `crash-embedder <dir> <cycle>`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use inbox_core::{
    Command, Context, Direction, InboxConfig, MessageDraft, ParticipantId, SendAs, SequentialIds,
    SiteId, Timestamp, VisitorId,
};
use inbox_store::{Engine, EngineConfig, Executed, FileLog, Snapshots};
use uuid::Uuid;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(cycle)) = (args.next(), args.next().and_then(|c| c.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash-embedder <dir> <cycle>");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let opened = FileLog::open(dir.join("log"))
        .map_err(|e| e.to_string())
        .and_then(|(log, _)| {
            let snapshots = Snapshots::new(dir.join("snapshots")).map_err(|e| e.to_string())?;
            let config = EngineConfig::new(|s: &SiteId| InboxConfig::new(s.clone(), [7; 16]))
                .snapshot_every(25);
            let config = if cycle % 2 == 1 {
                config.max_sites(2)
            } else {
                config
            };
            Engine::open(Arc::new(log), Some(snapshots), config, &mut |_| {})
                .map_err(|e| e.to_string())
        });
    let engine = match opened {
        Ok((engine, _)) => engine,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let engine = engine.clone();
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                let mut ids =
                    SequentialIds::starting_at((u128::from(cycle) << 80) | (u128::from(t) << 64));
                let visitor = ParticipantId::Visitor(VisitorId::from_uuid(Uuid::from_u128(
                    (u128::from(cycle) << 8) | u128::from(t),
                )));
                let mut now =
                    1_700_000_000_000_000i64 + i64::try_from(cycle).unwrap_or(0) * 1_000_000_000;
                let get = Command::GetOrCreateConversation {
                    participant: visitor,
                };
                for i in 0u64.. {
                    let site = if cycle % 2 == 1 {
                        SiteId::new(format!("site-{t}-{}", i % 3))
                    } else {
                        SiteId::new(format!("site-{t}"))
                    };
                    now += 1;
                    let ctx = Context::at(Timestamp::from_micros(now));
                    let conversation = match engine.execute(&site, &get, &ctx, &mut ids) {
                        Ok(_) => engine.read(&site, |inbox| inbox.live_conversation_of(visitor)),
                        Err(e) => {
                            eprintln!("get or create: {e}");
                            std::process::exit(1);
                        }
                    };
                    let Ok(Some(conversation)) = conversation else {
                        eprintln!("no conversation");
                        std::process::exit(1);
                    };
                    let send = Command::SendMessage {
                        conversation_id: conversation,
                        message: MessageDraft::text(
                            format!("cycle {cycle} thread {t} message {i}"),
                            Direction::ParticipantToBusiness,
                        ),
                        send_as: SendAs::Participant,
                    };
                    match engine.execute(&site, &send, &ctx, &mut ids) {
                        Ok(Executed { events }) => {
                            let mut out = stdout
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            for e in events {
                                if let inbox_core::Event::MessageSent { message } = e.envelope.event
                                {
                                    let _ = writeln!(out, "ack {} {}", site, message.id);
                                }
                            }
                            let _ = out.flush();
                        }
                        Err(e) => {
                            eprintln!("send: {e}");
                            std::process::exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
