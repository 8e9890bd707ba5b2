//! # inbox-wix
//!
//! The Wix Inbox wire formats, mapped onto `inbox-core`. This crate owns every JSON shape of
//! the Wix REST API and its webhooks; the core owns none (the boundary converts by hand, as
//! rust-analyzer's crates do, so a wire change never reaches the engine).
//!
//! * [`rest`]: request bodies (and List Messages' query string) into core commands and
//!   queries, state into response bodies;
//! * [`contacts_query`]: the Mongo-like filter language of Query Contacts;
//! * [`catalog`]: contact labels and extended fields (their calls, lists and queries);
//! * [`error`]: every refusal in Wix's error shape, with its HTTP status;
//! * [`webhook`]: JWT-verified deliveries from Wix into core events (and a deduplicating
//!   [`webhook::Replica`]), and core events into signed deliveries that Wix's own SDK
//!   accepts.
//!
//! Like the core, the crate does no I/O and reads no clock: the time a token is checked
//! against, and every fresh id, are arguments. `docs/WIX-MAPPING.md` has the whole mapping
//! and the error table.
//!
//! ```
//! use inbox_core::{Context, Inbox, InboxConfig, SequentialIds, SiteId, Timestamp};
//! use inbox_wix::rest::{self, GetOrCreateConversationRequest, SendMessageRequest};
//!
//! let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("site"), [7; 16]));
//! let mut ids = SequentialIds::default();
//! let ctx = Context::at(Timestamp::from_micros(1_700_000_000_000_000));
//!
//! // A body as a client sends it (snake_case works too), into a core command.
//! let req: GetOrCreateConversationRequest = rest::parse_body(
//!     br#"{"participant_id": {"anonymousVisitorId": "6fa459ea-ee8a-3ca4-894e-db77e160355e"}}"#,
//! )?;
//! inbox.execute(&req.to_command()?, &ctx, &mut ids)?;
//! let conversation = inbox.live_conversations().next().unwrap();
//!
//! // The activity flow's spelling of a message, with `direction` beside `message`.
//! let body = format!(r#"{{"conversationId": "{conversation}", "direction": "PARTICIPANT_TO_BUSINESS",
//!     "message": {{"visibility": "BUSINESS",
//!                  "payload": {{"type": "MINIMAL", "minimal": {{"text": "Booked Spa Treatment"}}}}}}}}"#);
//! let send: SendMessageRequest = rest::parse_body(body.as_bytes())?;
//! inbox.execute(&send.to_command()?, &ctx, &mut ids)?;
//!
//! // State into Wix's answer: newest first, no `next` cursor on the last page.
//! let page = rest::list_messages(&inbox, &format!("conversationId={conversation}"))?;
//! let json = serde_json::to_value(&page).unwrap();
//! assert_eq!(json["messages"][0]["content"]["minimal"]["text"], "Booked Spa Treatment");
//! assert_eq!(json["pagingMetadata"]["cursors"], serde_json::json!({}));
//!
//! // A refusal, in Wix's error shape.
//! let err = rest::list_messages(&inbox, "conversationId=not-a-guid").unwrap_err();
//! assert_eq!(err.status(), 400);
//! assert_eq!(err.body()["details"]["validationError"]["fieldViolations"][0]["field"], "conversationId");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod case;
pub mod catalog;
pub mod contacts_query;
pub mod error;
pub mod rest;
pub mod webhook;
pub mod wire;

pub use error::WixError;
