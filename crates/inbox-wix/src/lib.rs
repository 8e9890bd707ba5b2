//! # inbox-wix
//!
//! The Wix Inbox wire formats, mapped onto `inbox-core`. This crate owns every JSON shape of
//! the Wix REST API and its webhooks; the core owns none (the boundary converts by hand, as
//! rust-analyzer's crates do, so a wire change never reaches the engine).
//!
//! * [`rest`]: request bodies (and List Messages' query string) into core commands and
//!   queries, state into response bodies;
//! * [`contacts_query`]: the Mongo-like filter language of Query Contacts;
//! * [`error`]: every refusal in Wix's error shape, with its HTTP status;
//! * [`webhook`]: JWT-verified deliveries from Wix into core events (and a deduplicating
//!   [`webhook::Replica`]), and core events into signed deliveries that Wix's own SDK
//!   accepts.
//!
//! Like the core, the crate does no I/O and reads no clock: the time a token is checked
//! against, and every fresh id, are arguments.
#![deny(missing_docs)]

pub mod case;
pub mod contacts_query;
pub mod error;
pub mod rest;
pub mod webhook;
pub mod wire;

pub use error::WixError;
