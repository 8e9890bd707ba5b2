//! Identifiers and the two scalar clocks of the domain: [`Sequence`] and [`Timestamp`].
//!
//! Every id is a newtype so that a contact id can never be passed where a conversation id is
//! expected. GUID-shaped ids wrap [`Uuid`]; message ids are the numeric strings Wix uses, held
//! as a `u64` (they are issued from the same hybrid logical clock as sequences).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! guid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps a GUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            /// The GUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

guid_id!(
    /// The id of a conversation (one per participant; merged ones keep pointing at the survivor).
    ConversationId
);
guid_id!(
    /// The id of a contact in the site's contact list.
    ContactId
);
guid_id!(
    /// The id of a site member. A member is always linked to a contact.
    MemberId
);
guid_id!(
    /// The id of an anonymous site visitor.
    VisitorId
);
guid_id!(
    /// The id of a Wix app (a message sender when an app sends on the business's behalf).
    AppId
);
guid_id!(
    /// The id of a Wix user (a site owner or contributor answering in the Inbox).
    WixUserId
);
guid_id!(
    /// The unique id of an event; deliveries are deduplicated on it.
    EventId
);

/// The id of a message: a numeric string on the wire (e.g. `"1640849952353627"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl FromStr for MessageId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// The position of a message in its conversation: an int64 that is stronger than
/// `createdDate` when two messages share a timestamp.
///
/// The engine issues sequences from a hybrid logical clock: the value is the send time in
/// microseconds since the Unix epoch, bumped to `last + 1` when the clock has not advanced.
/// Sequences are therefore strictly increasing per site and chronological across all of its
/// conversations, which makes a merge a sorted union with no renumbering.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sequence(pub i64);

impl Sequence {
    /// The smallest sequence; below every issued one.
    pub const ZERO: Sequence = Sequence(0);

    /// The next sequence the clock issues at `now`, given the last one issued or seen:
    /// `now`, or one past `last` when the clock has not moved ahead of it. `None` when `last`
    /// is `i64::MAX` and the clock can go no further (only an observed event can put it
    /// there); the engine then refuses with `Rejection::ClockExhausted` rather than issue a
    /// sequence twice.
    ///
    /// ```
    /// # use inbox_core::{Sequence, Timestamp};
    /// let now = Timestamp::from_micros(1_000);
    /// assert_eq!(Sequence::next_after(Sequence(5), now), Some(Sequence(1_000)));
    /// // A clock that did not move (or went back) still gives a strictly larger value.
    /// assert_eq!(Sequence::next_after(Sequence(2_000), now), Some(Sequence(2_001)));
    /// assert_eq!(Sequence::next_after(Sequence(i64::MAX), now), None);
    /// ```
    pub fn next_after(last: Sequence, now: Timestamp) -> Option<Sequence> {
        let bumped = last.0.checked_add(1)?;
        Some(Sequence(now.as_micros().max(bumped)))
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sequence({})", self.0)
    }
}

/// A point in time with microsecond precision, stored as microseconds since the Unix epoch.
///
/// Eight bytes instead of chrono's twelve: a message carries one, and there are millions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(&self) -> i64 {
        self.0
    }

    /// The same instant as a chrono date-time (saturating at chrono's range).
    pub fn to_datetime(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Timestamp(value.timestamp_micros())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// The site (tenant) an event belongs to. Wix calls it the `instanceId` or `wix-site-id`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SiteId(pub String);

impl SiteId {
    /// A site id from any string.
    pub fn new(id: impl Into<String>) -> Self {
        SiteId(id.into())
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for SiteId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteId({})", self.0)
    }
}
