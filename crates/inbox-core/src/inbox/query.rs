//! The queries: roots, identities, views, messages.

use super::*;

impl Inbox {
    /// The live conversation an id stands for: itself, or the survivor of its merges.
    pub fn root_of(&self, id: ConversationId) -> ConversationId {
        let mut cur = id;
        // Parents never form a cycle (cycles are broken on apply); the bound is a backstop.
        for _ in 0..=self.conversations.len() {
            match self.conversations.get(&cur).and_then(|r| r.parent) {
                Some(p) => cur = p,
                None => break,
            }
        }
        cur
    }

    pub(super) fn live_root(&self, id: ConversationId) -> Result<ConversationId, Rejection> {
        if self.conversations.contains_key(&id) {
            Ok(self.root_of(id))
        } else {
            Err(Rejection::ConversationNotFound(id))
        }
    }

    /// Every conversation merged (directly or not) into `root`, and `root` itself.
    pub(super) fn tree_of(&self, root: ConversationId) -> Vec<ConversationId> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            out.push(n);
            if let Some(children) = self.merged_from.get(&n) {
                stack.extend(
                    children
                        .iter()
                        .filter(|c| self.conversations.get(*c).and_then(|r| r.parent) == Some(n)),
                );
            }
        }
        out.sort();
        out
    }

    /// The most advanced identity of a participant: member > contact > visitor. A visitor
    /// goes to the contact it was identified as, a contact to the live contact it resolves
    /// to and then to that contact's member, a registered member to its contact's member.
    pub fn advanced_identity(&self, p: ParticipantId) -> ParticipantId {
        let contact = match p {
            ParticipantId::Visitor(v) => match self.visitors.get(&v) {
                Some(c) => *c,
                None => return p,
            },
            ParticipantId::Contact(c) => c,
            ParticipantId::Member(m) => match self.registered_contact(m) {
                Some(c) => c,
                None => return p,
            },
        };
        let contact = self.contacts.resolve(contact);
        match self.member_of(contact) {
            Some(m) => ParticipantId::Member(m),
            None => ParticipantId::Contact(contact),
        }
    }

    /// The contact of a member's registration that counts (the smallest), as registered.
    fn registered_contact(&self, m: MemberId) -> Option<ContactId> {
        self.registrations
            .get(&m)
            .and_then(|r| r.get_min())
            .map(|r| r.contact)
    }

    /// The members whose contact is `live` (theirs resolves to it), in id order.
    pub(super) fn members_of(&self, live: ContactId) -> Vec<MemberId> {
        if self.members_by_contact.is_empty() || self.contacts.resolve(live) != live {
            return Vec::new(); // no members at all, or merged away (its members are its survivor's)
        }
        let mut out: Vec<MemberId> = self
            .contacts
            .tree_of(live)
            .iter()
            .filter_map(|c| self.members_by_contact.get(c))
            .flat_map(|ms| ms.iter().copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The member of a contact: the smallest whose contact it is (more than one only through
    /// events from outside, reported).
    pub fn member_of(&self, live: ContactId) -> Option<MemberId> {
        self.members_of(live).first().copied()
    }

    /// The live conversation of a participant, by any id they have or had.
    pub fn live_conversation_of(&self, p: ParticipantId) -> Option<ConversationId> {
        let advanced = self.advanced_identity(p);
        self.owners
            .get(&advanced)
            .or_else(|| self.owners.get(&p))
            .map(|c| self.root_of(*c))
    }

    /// Get Conversation: follows merges and says when it did.
    pub fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<ConversationView, GetConversationError> {
        if !self.conversations.contains_key(&id) {
            return Err(GetConversationError::NotFound(id));
        }
        let root = self.root_of(id);
        Ok(self.view(root, (root != id).then_some(id)))
    }

    /// The live conversation of a participant, as a view.
    pub fn conversation_of(&self, p: ParticipantId) -> Option<ConversationView> {
        self.live_conversation_of(p).map(|c| self.view(c, None))
    }

    fn view(
        &self,
        root: ConversationId,
        redirected_from: Option<ConversationId>,
    ) -> ConversationView {
        let participant = self
            .conversations
            .get(&root)
            .and_then(|r| r.participant)
            .map(|p| self.advanced_identity(p));
        let contact_id = participant.and_then(|p| match p {
            ParticipantId::Contact(c) => Some(c),
            ParticipantId::Member(m) => self.member(m).map(|m| m.contact_id),
            ParticipantId::Visitor(_) => None,
        });
        let contact = contact_id.and_then(|c| self.contacts.get(c));
        let mut channels = vec![Channel::Chat];
        if contact.is_some_and(|c| !c.emails.is_empty()) {
            channels.push(Channel::Email);
        }
        if contact.is_some_and(|c| !c.phones.is_empty()) {
            channels.push(Channel::Sms);
        }
        let name = contact.and_then(|c| c.name.display()).or_else(|| {
            match participant {
                Some(ParticipantId::Member(m)) => self.member(m).and_then(|m| m.login_email),
                _ => None,
            }
            .or_else(|| contact.and_then(|c| c.primary_email().map(str::to_owned)))
        });
        ConversationView {
            id: root,
            participant: participant.map(|id| Participant { id, contact_id }),
            channels,
            business_display: self.config.business.clone(),
            participant_display: DisplayData {
                name,
                image_url: None,
            },
            redirected_from,
        }
    }

    /// A message by id, wherever it now lives.
    pub fn message(&self, id: MessageId) -> Option<&Message> {
        let conversation = self.message_index.get(id)?;
        let loc = Locator {
            conversation,
            sequence: self.sequence_of(id),
        };
        let root = self.root_of(loc.conversation);
        self.conversations
            .get(&root)?
            .messages
            .find((loc.sequence, id))
            .map(|e| &*e.msg)
    }

    /// How many messages the inbox holds.
    pub fn message_count(&self) -> usize {
        self.message_index.len()
    }

    /// The ids of every live (never merged away) conversation.
    pub fn live_conversations(&self) -> impl Iterator<Item = ConversationId> + '_ {
        self.conversations
            .iter()
            .filter(|(_, r)| r.parent.is_none())
            .map(|(id, _)| *id)
    }

    /// Every message of a live conversation, in order (oldest first).
    pub fn messages_of(&self, id: ConversationId) -> impl Iterator<Item = &Message> + '_ {
        let root = self.root_of(id);
        self.conversations
            .get(&root)
            .into_iter()
            .flat_map(|r| r.messages.iter().map(|e| &*e.msg))
    }

    /// The contact list.
    pub fn contacts(&self) -> &ContactDirectory {
        &self.contacts
    }

    /// A member: its contact is the live contact its registration resolves to (a member
    /// follows its contact's merges); its login email is the greatest registered on that
    /// contact that no erasure covers.
    pub fn member(&self, id: MemberId) -> Option<Member> {
        let regs = self.registrations.get(&id)?;
        let on = regs.get_min()?.contact;
        let login_email = regs
            .iter()
            .filter(|r| r.contact == on && !self.registration_erased(r))
            .filter_map(|r| r.login_email.clone())
            .max();
        Some(Member {
            id,
            contact_id: self.contacts.resolve(on),
            login_email,
        })
    }

    /// Whether an erasure covers a registration: one stamped at or after it, of a contact
    /// that is the same live contact as the registration's.
    fn registration_erased(&self, r: &Registration) -> bool {
        if self.erased_contacts.is_empty() {
            return false;
        }
        let live = self.contacts.resolve(r.contact);
        self.erased_contacts
            .iter()
            .any(|(erased, up_to)| r.stamp <= *up_to && self.contacts.resolve(*erased) == live)
    }

    /// The contact a visitor became, if it did.
    pub fn contact_of_visitor(&self, id: VisitorId) -> Option<ContactId> {
        self.visitors.get(&id).copied()
    }

    /// Recorded postback clicks.
    pub fn interactions(&self) -> impl Iterator<Item = &Interaction> + '_ {
        self.interactions.iter()
    }

    /// What the fold noticed and resolved by rule.
    pub fn anomalies(&self) -> impl Iterator<Item = &Anomaly> + '_ {
        self.anomalies.values()
    }

    /// The highest sequence issued or seen: the site's clock.
    pub fn last_sequence(&self) -> Sequence {
        self.last_sequence
    }

    pub(super) fn sender_for(&self, p: ParticipantId) -> Sender {
        match self.advanced_identity(p) {
            ParticipantId::Visitor(v) => Sender::Visitor(v),
            ParticipantId::Contact(c) => Sender::Contact(c),
            ParticipantId::Member(m) => Sender::Member {
                member: m,
                contact: self.registered_contact(m).map(|c| self.contacts.resolve(c)),
            },
        }
    }
}
