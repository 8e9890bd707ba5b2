//! Participants: the person on the other side of a conversation, and how their identity grows.
//!
//! Lifecycle: anonymous visitor -> contact -> member, with steps skippable, and contacts
//! mergeable into another contact. A member is always linked to a contact. The *most advanced
//! identity* of a person is their member id if they have one, else their (live) contact id,
//! else their visitor id; it owns their one live conversation.

use serde::{Deserialize, Serialize};

use crate::ids::{ContactId, MemberId, VisitorId};

/// Any id a participant can be addressed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ParticipantId {
    /// `anonymousVisitorId`.
    Visitor(VisitorId),
    /// `contactId`.
    Contact(ContactId),
    /// `memberId`.
    Member(MemberId),
}

impl ParticipantId {
    /// member > contact > visitor.
    pub fn rank(&self) -> u8 {
        match self {
            ParticipantId::Visitor(_) => 0,
            ParticipantId::Contact(_) => 1,
            ParticipantId::Member(_) => 2,
        }
    }
}

/// A participant as a conversation shows it: the id it is addressed by, plus the contact id
/// (read-only) for members and contacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The most advanced identity.
    pub id: ParticipantId,
    /// The linked contact, for contacts and members.
    pub contact_id: Option<ContactId>,
}

/// A site member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: MemberId,
    /// Its contact.
    pub contact_id: ContactId,
    /// Login email.
    pub login_email: Option<String>,
}
