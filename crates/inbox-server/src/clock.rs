//! Where the server reads time and makes ids: the core takes both as arguments, so they are
//! read here, once per command, and nowhere else.

use std::time::{SystemTime, UNIX_EPOCH};

use inbox_core::{IdSource, Timestamp};
use uuid::Uuid;

/// Fresh ids from the operating system's random source (UUIDv4).
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self) -> Uuid {
        Uuid::new_v4()
    }
}

/// Now, from the system clock, in microseconds (a clock before 1970 reads as 1970).
pub fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros)
}
