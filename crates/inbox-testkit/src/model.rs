//! The reference model: the engine's rules written as the plainest code that can hold them.
//!
//! A [`Model`] keeps the events it was given as a set and nothing else. Every query is
//! computed from that set from scratch, with plain `BTreeMap`s and loops: a conversation's
//! root by following the merge rule over every merge fact, its messages by filtering every
//! message whose provenance resolves to it and sorting, a page by recomputing the pinned set
//! from the cursor's moment, contacts and identities from their facts. It shares no data
//! structure with the engine (no timelines, no indexes, no incremental recomputation), only
//! the domain's types, so that the two can disagree, and a disagreement is a bug in one of
//! them.
//!
//! The rules it implements are the specification; `ARCHITECTURE.md` ("The rules of the
//! fold") states each in one sentence, and the comments below name them the same way.

use std::cell::OnceCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use inbox_core::catalog::{
    CUSTOM_NAMESPACE, CatalogError, CatalogKind, FieldDefinition, FieldType, LabelDefinition,
    LabelType, MAX_CUSTOM_FIELDS, MAX_CUSTOM_LABELS, MAX_KEY, check_display_name, fit_value,
};
use inbox_core::contacts::{
    ActivityType, Contact, ContactActivity, ContactDetails, ContactEmail, ContactName,
    ContactPatch, ContactPhone, CreateContactError, DeleteContactError, EntryTag,
    LabelContactError, MAX_LABELS_PER_CHANGE, MAX_MERGE_SOURCES, MergeContactsError, SortOrder,
    UpdateContactError,
};
use inbox_core::contacts::{ContactDataError, ExtendedValue};
use inbox_core::message::{ButtonAction, Channel, MessageDraft};
use inbox_core::{
    Anomaly, Caller, Command, ContactId, Context, ConversationId, ConversationView, CursorError,
    DEFAULT_PAGE_LIMIT, DisplayData, Event, GetConversationError, IdSource, InboxConfig,
    Interaction, ListMessagesError, MAX_PAGE_LIMIT, Member, MemberId, Message, MessageId,
    Participant, ParticipantId, Rejection, RevertMergeError, SendAs, Sender, Sequence, Timestamp,
    VisibilityFilter, VisitorId,
};

/// The reference model of one site's inbox: a set of events and the rules, nothing else.
///
/// ```
/// use inbox_core::{ConversationId, Event, InboxConfig, ParticipantId, SiteId, VisitorId};
/// use inbox_testkit::Model;
///
/// let mut model = Model::new(InboxConfig::new(SiteId::new("site"), [0; 16]));
/// let visitor = ParticipantId::Visitor(VisitorId::from_uuid(uuid::Uuid::from_u128(1)));
/// let conversation = ConversationId::from_uuid(uuid::Uuid::from_u128(2));
/// model.apply(&Event::ConversationStarted { conversation_id: conversation, participant: visitor });
/// assert_eq!(model.live_conversation_of(visitor), Some(conversation));
/// ```
#[derive(Clone, Debug)]
pub struct Model {
    config: InboxConfig,
    /// Distinct events, in the order first seen (the order never matters to a query).
    events: Vec<Event>,
    derived: OnceCell<Derived>,
}

/// A page request to the model: [`inbox_core::ListMessages`] with a plain cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The conversation asked for (a merged id reads its survivor).
    pub conversation_id: ConversationId,
    /// Which messages.
    pub visibility: VisibilityFilter,
    /// By `(sequence, id)`.
    pub order: SortOrder,
    /// 1 to [`MAX_PAGE_LIMIT`]; default [`DEFAULT_PAGE_LIMIT`].
    pub limit: Option<usize>,
    /// The previous page's [`Page::next`].
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// The first page of a conversation with this order, visibility and limit.
    pub fn first(
        conversation_id: ConversationId,
        visibility: VisibilityFilter,
        order: SortOrder,
        limit: Option<usize>,
    ) -> Self {
        PageRequest {
            conversation_id,
            visibility,
            order,
            limit,
            cursor: None,
        }
    }
}

/// What the model's cursor remembers: the engine's cursor without the encoding and the MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The live conversation when the first page was read.
    pub anchor: ConversationId,
    /// The site's clock then: the moment the listing is pinned to.
    pub watermark: Sequence,
    /// The key of the last message returned.
    pub last: (Sequence, MessageId),
    /// Newest first.
    pub descending: bool,
    /// Participant-visible messages only.
    pub participant_only: bool,
}

/// One page from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    /// The messages, in the order asked for.
    pub messages: Vec<&'a Message>,
    /// The cursor of the next page; absent at the end.
    pub next: Option<Cursor>,
    /// The live conversation the request resolved to.
    pub conversation_id: ConversationId,
}

/// Everything a query needs, computed from the event set in one pass of plain code.
#[derive(Clone, Debug, Default)]
struct Derived {
    clock: Sequence,
    /// Every conversation an event names (a start, a message, a merge or an erasure).
    conversations: BTreeSet<ConversationId>,
    /// `(source, stamp, target)` of every merge, self-merges left out.
    merge_facts: BTreeSet<(ConversationId, Sequence, ConversationId)>,
    /// `(source, merge stamp, target)` of every reverted merge -> its earliest revert.
    merge_reverts: BTreeMap<(ConversationId, Sequence, ConversationId), Sequence>,
    self_merges: BTreeSet<ConversationId>,
    /// The current merge forest.
    now: Forest,
    /// The version of each message that counts, redacted where an erasure covers it.
    messages: BTreeMap<MessageId, Message>,
    conflicting_messages: BTreeSet<MessageId>,
    /// Conversation -> every participant it was started for.
    started: BTreeMap<ConversationId, BTreeSet<ParticipantId>>,
    /// Participant -> every conversation started for it.
    starts_of: BTreeMap<ParticipantId, BTreeSet<ConversationId>>,
    visitor_claims: BTreeMap<VisitorId, BTreeSet<ContactId>>,
    /// Member -> `(contact, stamp, login email)` of each registration.
    registrations: BTreeMap<MemberId, BTreeSet<(ContactId, Sequence, Option<String>)>>,
    /// The record of every contact ever seen, live or merged away: its highest revision.
    records: BTreeMap<ContactId, Contact>,
    /// Source -> every contact it was said to be merged into.
    contact_claims: BTreeMap<ContactId, BTreeSet<ContactId>>,
    /// Source -> the contact it counts as merged into (cycles broken).
    contact_target: BTreeMap<ContactId, ContactId>,
    contact_cycles: Vec<(Vec<ContactId>, ContactId)>,
    /// `(erased contact, up_to)` of every erasure that named a contact.
    contact_erasures: Vec<(ContactId, Sequence)>,
    /// Every contact deleted: never live again, whatever record of it comes.
    deleted_contacts: BTreeSet<ContactId>,
    interactions: BTreeSet<Interaction>,
    /// The labels and extended fields that stand.
    labels: BTreeMap<String, LabelDefinition>,
    fields: BTreeMap<String, FieldDefinition>,
}

/// The catalog rule: per key, the newest deletion stamp; a key stands with its greatest save
/// `(stamp, definition)` among those stamped after that deletion, if there is one.
fn settle<D: Clone + Ord>(facts: &[(String, Sequence, Option<D>)]) -> BTreeMap<String, D> {
    let mut newest_deletion: BTreeMap<&str, Sequence> = BTreeMap::new();
    for (key, stamp, saved) in facts {
        if saved.is_none() {
            let d = newest_deletion.entry(key).or_insert(*stamp);
            *d = (*d).max(*stamp);
        }
    }
    let mut best: BTreeMap<&str, (Sequence, &D)> = BTreeMap::new();
    for (key, stamp, saved) in facts {
        let Some(def) = saved else { continue };
        if newest_deletion
            .get(key.as_str())
            .is_some_and(|d| d >= stamp)
        {
            continue;
        }
        match best.get(key.as_str()) {
            Some(b) if *b >= (*stamp, def) => {}
            _ => {
                best.insert(key, (*stamp, def));
            }
        }
    }
    best.into_iter()
        .map(|(k, (_, d))| (k.to_owned(), d.clone()))
        .collect()
}

/// A key for a new definition: `custom.`, then the display name's ASCII letters and digits
/// in lowercase with every other run of characters as one `-` (none at either end), or
/// `fallback` when nothing is left; at most `MAX_KEY - 8` characters before the suffix; then
/// the first of none, `-2`, `-3`, ... that no standing definition has.
fn new_key<'a>(name: &str, fallback: &str, taken: impl Fn(&str) -> bool + 'a) -> String {
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let joined = if words.is_empty() {
        fallback.to_owned()
    } else {
        words.join("-")
    };
    let cut: String = joined
        .chars()
        .take(MAX_KEY - CUSTOM_NAMESPACE.len() - 9)
        .collect();
    let base = format!("{CUSTOM_NAMESPACE}.{}", cut.trim_end_matches('-'));
    let mut n = 1u32;
    loop {
        let key = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if !taken(&key) {
            return key;
        }
        n += 1;
    }
}

/// Parents of conversations under the merge rule, as of some moment.
#[derive(Clone, Debug, Default)]
struct Forest {
    /// Each source's merge that counts: the latest stamp, then the larger target.
    winner: BTreeMap<ConversationId, (Sequence, ConversationId)>,
    /// `winner` with every cycle broken at its oldest merge.
    parent: BTreeMap<ConversationId, ConversationId>,
    /// Each cycle of winning merges (members sorted) and where it was broken.
    cycles: Vec<(Vec<ConversationId>, ConversationId)>,
}

impl Forest {
    /// The rule for conversation merges, as of `until` (every merge when `None`): a source's
    /// parent is the target of its latest merge stamped at or before that moment and not
    /// reverted at or before it (ties: the
    /// larger target id); a cycle of such parents is broken at the member whose winning merge
    /// is the oldest (ties: the smaller id), which stays live.
    fn of(
        facts: &BTreeSet<(ConversationId, Sequence, ConversationId)>,
        reverts: &BTreeMap<(ConversationId, Sequence, ConversationId), Sequence>,
        until: Option<Sequence>,
    ) -> Self {
        let mut winner: BTreeMap<ConversationId, (Sequence, ConversationId)> = BTreeMap::new();
        for (source, stamp, target) in facts {
            if until.is_some_and(|w| *stamp > w) {
                continue;
            }
            // A merge reverted at or before the moment does not count then.
            if let Some(r) = reverts.get(&(*source, *stamp, *target))
                && until.is_none_or(|w| *r <= w)
            {
                continue;
            }
            let candidate = (*stamp, *target);
            let best = winner.entry(*source).or_insert(candidate);
            if candidate > *best {
                *best = candidate;
            }
        }
        let mut cycles: BTreeSet<Vec<ConversationId>> = BTreeSet::new();
        for start in winner.keys() {
            let mut walked = vec![*start];
            let mut cur = *start;
            for _ in 0..winner.len() {
                let Some((_, next)) = winner.get(&cur) else {
                    break;
                };
                cur = *next;
                if cur == *start {
                    walked.sort();
                    cycles.insert(walked);
                    break;
                }
                if walked.contains(&cur) {
                    break; // a cycle further on, not through `start`
                }
                walked.push(cur);
            }
        }
        let mut parent: BTreeMap<ConversationId, ConversationId> =
            winner.iter().map(|(s, (_, t))| (*s, *t)).collect();
        let mut broken = Vec::new();
        for members in cycles {
            let Some(at) = members
                .iter()
                .min_by_key(|n| (winner.get(*n).map(|w| w.0), **n))
                .copied()
            else {
                continue;
            };
            parent.remove(&at);
            broken.push((members, at));
        }
        Forest {
            winner,
            parent,
            cycles: broken,
        }
    }

    fn root(&self, mut c: ConversationId) -> ConversationId {
        for _ in 0..=self.parent.len() {
            match self.parent.get(&c) {
                Some(p) => c = *p,
                None => break,
            }
        }
        c
    }

    /// `c`, its parent, the parent's parent, ... up to the root.
    fn path(&self, mut c: ConversationId) -> Vec<ConversationId> {
        let mut out = vec![c];
        for _ in 0..self.parent.len() {
            match self.parent.get(&c) {
                Some(p) => {
                    c = *p;
                    out.push(c);
                }
                None => break,
            }
        }
        out
    }
}

/// The plain hybrid-logical-clock step: `now`, or one past the clock if `now` is not ahead of
/// it; `None` when the clock can go no further.
fn next_moment(clock: Sequence, now: Timestamp) -> Option<Sequence> {
    let bumped = clock.0.checked_add(1)?;
    Some(Sequence(now.as_micros().max(bumped)))
}

/// member > contact > visitor; among equals, the smaller id.
fn advancement(p: &ParticipantId) -> (u8, Reverse<ParticipantId>) {
    (p.rank(), Reverse(*p))
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn phone_digits(phone: &str) -> String {
    phone.chars().filter(|c| c.is_ascii_digit()).collect()
}

fn is_email(email: &str) -> bool {
    let trimmed = email.trim();
    let Some((local, domain)) = trimmed.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !trimmed.chars().any(char::is_whitespace)
        && !trimmed.chars().any(char::is_control)
}

fn name_is_empty(name: &ContactName) -> bool {
    name.first.as_deref().unwrap_or("").is_empty() && name.last.as_deref().unwrap_or("").is_empty()
}

/// Keeps the first entry marked primary and unmarks the rest; marks the first if none is.
fn one_primary(flags: Vec<bool>) -> Vec<bool> {
    let first_primary =
        flags
            .iter()
            .position(|p| *p)
            .or(if flags.is_empty() { None } else { Some(0) });
    (0..flags.len()).map(|i| Some(i) == first_primary).collect()
}

/// Applies [`one_primary`] to the entries' `primary` flags.
fn one_primary_of<T>(items: &mut [T], flag: fn(&mut T) -> &mut bool) {
    let flags = one_primary(items.iter_mut().map(|i| *flag(i)).collect());
    for (item, p) in items.iter_mut().zip(flags) {
        *flag(item) = p;
    }
}

fn derive(events: &[Event]) -> Derived {
    let mut d = Derived::default();
    let mut label_facts: Vec<(String, Sequence, Option<LabelDefinition>)> = Vec::new();
    let mut field_facts: Vec<(String, Sequence, Option<FieldDefinition>)> = Vec::new();
    let mut versions: BTreeMap<MessageId, BTreeSet<Message>> = BTreeMap::new();
    let mut erased_up_to: BTreeMap<ConversationId, Sequence> = BTreeMap::new();
    let mut clock = Sequence::ZERO;
    for event in events {
        match event {
            Event::ConversationStarted {
                conversation_id,
                participant,
            } => {
                d.conversations.insert(*conversation_id);
                d.started
                    .entry(*conversation_id)
                    .or_default()
                    .insert(*participant);
                d.starts_of
                    .entry(*participant)
                    .or_default()
                    .insert(*conversation_id);
            }
            Event::MessageSent { message } => {
                clock = clock.max(message.sequence);
                d.conversations.insert(message.conversation_id);
                versions
                    .entry(message.id)
                    .or_default()
                    .insert(message.clone());
            }
            Event::ConversationsMerged {
                sources,
                target,
                stamp,
            } => {
                clock = clock.max(*stamp);
                d.conversations.insert(*target);
                for s in sources {
                    d.conversations.insert(*s);
                    if s == target {
                        d.self_merges.insert(*s);
                    } else {
                        d.merge_facts.insert((*s, *stamp, *target));
                    }
                }
            }
            Event::VisitorIdentified { visitor, contact } => {
                d.visitor_claims
                    .entry(*visitor)
                    .or_default()
                    .insert(*contact);
            }
            Event::MemberRegistered {
                member,
                contact,
                login_email,
                stamp,
            } => {
                clock = clock.max(*stamp);
                d.registrations.entry(*member).or_default().insert((
                    *contact,
                    *stamp,
                    login_email.clone(),
                ));
            }
            Event::ContactCreated { contact } | Event::ContactUpdated { contact } => {
                keep_record(&mut d.records, contact)
            }
            Event::ContactDeleted { contact_id, .. } => {
                d.deleted_contacts.insert(*contact_id);
            }
            Event::ContactsMerged { target, sources } => {
                keep_record(&mut d.records, target);
                for s in sources.iter().filter(|s| **s != target.id) {
                    d.contact_claims.entry(*s).or_default().insert(target.id);
                }
            }
            Event::ButtonInteracted {
                conversation_id,
                message_id,
                interaction_id,
                app_id,
                interacted_by,
            } => {
                d.interactions.insert(Interaction {
                    conversation_id: *conversation_id,
                    message_id: *message_id,
                    interaction_id: interaction_id.clone(),
                    app_id: *app_id,
                    interacted_by: *interacted_by,
                });
            }
            Event::ParticipantErased {
                conversations,
                up_to,
                contact,
                ..
            } => {
                // An erasure records the past; it is not a new moment of the clock.
                for c in conversations {
                    d.conversations.insert(*c);
                    let bound = erased_up_to.entry(*c).or_insert(*up_to);
                    *bound = (*bound).max(*up_to);
                }
                if let Some(c) = contact {
                    keep_record(&mut d.records, c);
                    d.contact_erasures.push((c.id, *up_to));
                }
            }
            Event::LabelSaved { label, stamp } => {
                clock = clock.max(*stamp);
                label_facts.push((label.key.clone(), *stamp, Some(label.clone())));
            }
            Event::LabelDeleted { key, stamp } => {
                clock = clock.max(*stamp);
                label_facts.push((key.clone(), *stamp, None));
            }
            Event::ExtendedFieldSaved { field, stamp } => {
                clock = clock.max(*stamp);
                field_facts.push((field.key.clone(), *stamp, Some(field.clone())));
            }
            Event::ExtendedFieldDeleted { key, stamp } => {
                clock = clock.max(*stamp);
                field_facts.push((key.clone(), *stamp, None));
            }
            Event::ConversationMergeReverted {
                source,
                target,
                merged_at,
                stamp,
            } => {
                clock = clock.max(*stamp);
                d.conversations.insert(*source);
                d.conversations.insert(*target);
                let r = d
                    .merge_reverts
                    .entry((*source, *merged_at, *target))
                    .or_insert(*stamp);
                *r = (*r).min(*stamp);
            }
        }
    }
    d.labels = settle(&label_facts);
    d.fields = settle(&field_facts);
    d.clock = clock;
    d.now = Forest::of(&d.merge_facts, &d.merge_reverts, None);

    // Messages: the smallest version counts; an erasure covers a message sent to one of the
    // conversations it names, with a sequence at or below its `up_to`.
    for (id, vs) in versions {
        let distinct = vs.len();
        let Some(winner) = vs.into_iter().next() else {
            continue;
        };
        let covered = erased_up_to
            .get(&winner.conversation_id)
            .is_some_and(|up_to| winner.sequence <= *up_to);
        if distinct > 1 && !covered {
            d.conflicting_messages.insert(id);
        }
        d.messages
            .insert(id, if covered { winner.redacted() } else { winner });
    }

    // Contacts: a source counts as merged into the smallest target it was merged into; a
    // cycle of such merges is broken at its smallest contact, which stays live.
    let claimed: BTreeMap<ContactId, ContactId> = d
        .contact_claims
        .iter()
        .filter_map(|(s, ts)| ts.iter().next().map(|t| (*s, *t)))
        .collect();
    let mut cycles: BTreeSet<Vec<ContactId>> = BTreeSet::new();
    for start in claimed.keys() {
        let mut walked = vec![*start];
        let mut cur = *start;
        for _ in 0..claimed.len() {
            let Some(next) = claimed.get(&cur) else { break };
            cur = *next;
            if cur == *start {
                walked.sort();
                cycles.insert(walked);
                break;
            }
            if walked.contains(&cur) {
                break;
            }
            walked.push(cur);
        }
    }
    d.contact_target = claimed;
    for members in cycles {
        if let Some(kept) = members.first().copied() {
            d.contact_target.remove(&kept);
            d.contact_cycles.push((members, kept));
        }
    }
    d
}

/// What is wrong with an email or a phone (shared by create and update, which each name it
/// in their own error).
enum EntryProblem {
    InvalidEmail(String),
    InvalidPhone(String),
    DuplicateEmail(String, ContactId),
    DuplicatePhone(String, ContactId),
    Field(&'static str, String),
}

/// A contact's record is its highest revision (ties: the greatest by total order).
fn keep_record(records: &mut BTreeMap<ContactId, Contact>, contact: &Contact) {
    match records.get(&contact.id) {
        Some(kept) if kept >= contact => {}
        _ => {
            records.insert(contact.id, contact.clone());
        }
    }
}

impl Model {
    /// An empty model of a site.
    pub fn new(config: InboxConfig) -> Self {
        Model {
            config,
            events: Vec::new(),
            derived: OnceCell::new(),
        }
    }

    /// A model of these events.
    pub fn of<'a>(config: InboxConfig, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut model = Model::new(config);
        for e in events {
            model.apply(e);
        }
        model
    }

    /// Adds an event to the set (a repeat changes nothing).
    pub fn apply(&mut self, event: &Event) {
        if !self.events.contains(event) {
            self.events.push(event.clone());
            self.derived = OnceCell::new();
        }
    }

    /// The distinct events, in the order first seen.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The site's settings.
    pub fn config(&self) -> &InboxConfig {
        &self.config
    }

    fn d(&self) -> &Derived {
        self.derived.get_or_init(|| derive(&self.events))
    }

    // ------------------------------------------------------------------------------------
    // conversations and messages

    /// The site's clock: the highest message sequence, merge stamp or registration stamp.
    pub fn last_sequence(&self) -> Sequence {
        self.d().clock
    }

    /// Every conversation any event names.
    pub fn conversations(&self) -> Vec<ConversationId> {
        self.d().conversations.iter().copied().collect()
    }

    /// The conversations not merged into another.
    pub fn live_conversations(&self) -> Vec<ConversationId> {
        let d = self.d();
        d.conversations
            .iter()
            .filter(|c| !d.now.parent.contains_key(c))
            .copied()
            .collect()
    }

    /// The live conversation an id stands for.
    pub fn root_of(&self, id: ConversationId) -> ConversationId {
        self.d().now.root(id)
    }

    /// The conversation `id` counts as merged into, if any (its parent in the live forest).
    pub fn merged_into(&self, id: ConversationId) -> Option<ConversationId> {
        self.d().now.parent.get(&id).copied()
    }

    /// How many merges lead from `id` to its root.
    pub fn merge_depth(&self, id: ConversationId) -> usize {
        self.d().now.path(id).len() - 1
    }

    /// Every conversation whose root is `root`, `root` included, in id order.
    pub fn tree_of(&self, root: ConversationId) -> Vec<ConversationId> {
        let d = self.d();
        d.conversations
            .iter()
            .filter(|c| d.now.root(**c) == root)
            .copied()
            .collect()
    }

    /// The version of a message that counts (redacted if an erasure covers it).
    pub fn message(&self, id: MessageId) -> Option<&Message> {
        self.d().messages.get(&id)
    }

    /// How many distinct message ids.
    pub fn message_count(&self) -> usize {
        self.d().messages.len()
    }

    /// Every message, by id.
    pub fn messages(&self) -> impl Iterator<Item = &Message> + '_ {
        self.d().messages.values()
    }

    /// The messages of the live conversation `id` stands for, oldest first: every message
    /// whose provenance resolves to it, sorted by `(sequence, id)`.
    pub fn messages_of(&self, id: ConversationId) -> Vec<&Message> {
        let d = self.d();
        let root = d.now.root(id);
        let mut out: Vec<&Message> = d
            .messages
            .values()
            .filter(|m| d.now.root(m.conversation_id) == root)
            .collect();
        out.sort_by_key(|m| m.order_key());
        out
    }

    /// The participant a conversation was started for: the most advanced of those it was
    /// started for (member > contact > visitor; among equals, the smaller id).
    pub fn participant_of(&self, conversation: ConversationId) -> Option<ParticipantId> {
        self.d()
            .started
            .get(&conversation)
            .and_then(|ps| ps.iter().max_by_key(|p| advancement(p)).copied())
    }

    /// Get Conversation: the survivor, saying when it redirected.
    pub fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<ConversationView, GetConversationError> {
        if !self.d().conversations.contains(&id) {
            return Err(GetConversationError::NotFound(id));
        }
        let root = self.root_of(id);
        Ok(self.view(root, (root != id).then_some(id)))
    }

    fn view(
        &self,
        root: ConversationId,
        redirected_from: Option<ConversationId>,
    ) -> ConversationView {
        let participant = self.participant_of(root).map(|p| self.advanced_identity(p));
        let contact_id = match participant {
            Some(ParticipantId::Contact(c)) => Some(c),
            Some(ParticipantId::Member(m)) => self.member(m).map(|m| m.contact_id),
            _ => None,
        };
        let contact = contact_id.and_then(|c| self.contact(c));
        let mut channels = vec![Channel::Chat];
        if contact.is_some_and(|c| !c.emails.is_empty()) {
            channels.push(Channel::Email);
        }
        if contact.is_some_and(|c| !c.phones.is_empty()) {
            channels.push(Channel::Sms);
        }
        let login_email = match participant {
            Some(ParticipantId::Member(m)) => self.member(m).and_then(|m| m.login_email),
            _ => None,
        };
        let name = contact
            .and_then(|c| c.name.display())
            .or(login_email)
            .or_else(|| contact.and_then(|c| c.primary_email().map(str::to_owned)));
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

    // ------------------------------------------------------------------------------------
    // identities and contacts

    /// The contact an id now stands for: follow the merges that count.
    pub fn resolve_contact(&self, mut id: ContactId) -> ContactId {
        let d = self.d();
        for _ in 0..=d.contact_target.len() {
            match d.contact_target.get(&id) {
                Some(t) => id = *t,
                None => break,
            }
        }
        id
    }

    /// The contact `id` counts as merged into, if any.
    pub fn contact_merged_into(&self, id: ContactId) -> Option<ContactId> {
        self.d().contact_target.get(&id).copied()
    }

    /// A live contact: one with a record that is not merged into another.
    pub fn contact(&self, id: ContactId) -> Option<&Contact> {
        let d = self.d();
        if d.contact_target.contains_key(&id) || d.deleted_contacts.contains(&id) {
            return None;
        }
        d.records.get(&id)
    }

    /// Every live contact, by id: a record not merged into another and not deleted.
    pub fn contacts(&self) -> Vec<&Contact> {
        let d = self.d();
        d.records
            .values()
            .filter(|c| !d.contact_target.contains_key(&c.id))
            .filter(|c| !d.deleted_contacts.contains(&c.id))
            .collect()
    }

    /// The live contacts having this email (case-insensitive, trimmed), by id.
    pub fn contacts_with_email(&self, email: &str) -> Vec<ContactId> {
        let wanted = normalize_email(email);
        self.contacts()
            .into_iter()
            .filter(|c| c.emails.iter().any(|e| normalize_email(&e.email) == wanted))
            .map(|c| c.id)
            .collect()
    }

    fn contacts_with_phone(&self, digits: &str) -> Vec<ContactId> {
        self.contacts()
            .into_iter()
            .filter(|c| c.phones.iter().any(|p| phone_digits(&p.phone) == digits))
            .map(|c| c.id)
            .collect()
    }

    /// The contact a visitor was identified as: the smallest one claimed.
    pub fn contact_of_visitor(&self, id: VisitorId) -> Option<ContactId> {
        self.d()
            .visitor_claims
            .get(&id)
            .and_then(|cs| cs.iter().next())
            .copied()
    }

    /// A member's registration that counts is the one on the smallest contact; its contact
    /// is the live contact that one resolves to (a member follows its contact's merges); its
    /// login email is the greatest registered on that contact that no erasure covers.
    pub fn member(&self, id: MemberId) -> Option<Member> {
        let d = self.d();
        let regs = d.registrations.get(&id)?;
        let (registered_on, _, _) = regs.iter().next()?;
        let login_email = regs
            .iter()
            .filter(|(c, _, _)| c == registered_on)
            .filter(|(c, stamp, _)| !self.registration_erased(*c, *stamp))
            .map(|(_, _, email)| email.clone())
            .max()
            .flatten();
        Some(Member {
            id,
            contact_id: self.resolve_contact(*registered_on),
            login_email,
        })
    }

    /// An erasure covers a registration stamped at or before its `up_to` on a contact that
    /// is the same live contact as the erased one.
    fn registration_erased(&self, contact: ContactId, stamp: Sequence) -> bool {
        let live = self.resolve_contact(contact);
        self.d()
            .contact_erasures
            .iter()
            .any(|(erased, up_to)| self.resolve_contact(*erased) == live && stamp <= *up_to)
    }

    /// The members whose contact is `contact` (after resolution), by id.
    fn members_of(&self, contact: ContactId) -> Vec<MemberId> {
        self.d()
            .registrations
            .keys()
            .filter(|m| self.member(**m).is_some_and(|m| m.contact_id == contact))
            .copied()
            .collect()
    }

    /// The member of a live contact: the smallest whose contact it is.
    pub fn member_of(&self, contact: ContactId) -> Option<MemberId> {
        self.members_of(contact).into_iter().next()
    }

    /// The most advanced identity of a participant: a visitor goes to its contact, a contact
    /// to the live contact it resolves to and then to that contact's member, a registered
    /// member to its contact's member.
    pub fn advanced_identity(&self, p: ParticipantId) -> ParticipantId {
        let contact = match p {
            ParticipantId::Visitor(v) => match self.contact_of_visitor(v) {
                Some(c) => c,
                None => return p,
            },
            ParticipantId::Contact(c) => c,
            ParticipantId::Member(m) => match self.member(m) {
                Some(member) => member.contact_id,
                None => return p,
            },
        };
        let live = self.resolve_contact(contact);
        match self.member_of(live) {
            Some(m) => ParticipantId::Member(m),
            None => ParticipantId::Contact(live),
        }
    }

    /// The conversation a participant owns: the smallest started for it.
    fn owned_by(&self, p: ParticipantId) -> Option<ConversationId> {
        self.d()
            .starts_of
            .get(&p)
            .and_then(|cs| cs.iter().next())
            .copied()
    }

    /// The live conversation of an id: the root of the conversation its most advanced
    /// identity owns, or else of the one the id itself owns.
    pub fn live_conversation_of(&self, p: ParticipantId) -> Option<ConversationId> {
        self.owned_by(self.advanced_identity(p))
            .or_else(|| self.owned_by(p))
            .map(|c| self.root_of(c))
    }

    /// Recorded button clicks.
    pub fn interactions(&self) -> Vec<&Interaction> {
        self.d().interactions.iter().collect()
    }

    /// What the rules resolved, sorted.
    pub fn anomalies(&self) -> Vec<Anomaly> {
        let d = self.d();
        let mut out = Vec::new();
        for id in &d.conflicting_messages {
            out.push(Anomaly::ConflictingMessage { message_id: *id });
        }
        let mut targets: BTreeMap<ConversationId, BTreeSet<ConversationId>> = BTreeMap::new();
        for (s, stamp, t) in &d.merge_facts {
            if !d.merge_reverts.contains_key(&(*s, *stamp, *t)) {
                targets.entry(*s).or_default().insert(*t);
            }
        }
        for (s, ts) in targets {
            if ts.len() > 1
                && let Some((_, chosen)) = d.now.winner.get(&s)
            {
                out.push(Anomaly::ConflictingMergeTargets {
                    source: s,
                    targets: ts.into_iter().collect(),
                    chosen: *chosen,
                });
            }
        }
        for (members, broken_at) in &d.now.cycles {
            out.push(Anomaly::MergeCycle {
                members: members.clone(),
                broken_at: *broken_at,
            });
        }
        for c in &d.self_merges {
            out.push(Anomaly::SelfMerge { conversation: *c });
        }
        let mut conflict = |participant: ParticipantId, candidates: BTreeSet<uuid::Uuid>| {
            if candidates.len() > 1 {
                out.push(Anomaly::ConflictingIdentity {
                    participant,
                    candidates: candidates.into_iter().collect(),
                });
            }
        };
        for (p, cs) in &d.starts_of {
            conflict(*p, cs.iter().map(|c| c.as_uuid()).collect());
        }
        for (v, cs) in &d.visitor_claims {
            conflict(
                ParticipantId::Visitor(*v),
                cs.iter().map(|c| c.as_uuid()).collect(),
            );
        }
        for (m, regs) in &d.registrations {
            conflict(
                ParticipantId::Member(*m),
                regs.iter().map(|(c, _, _)| c.as_uuid()).collect(),
            );
        }
        let member_contacts: BTreeSet<ContactId> = d
            .registrations
            .keys()
            .filter_map(|m| self.member(*m))
            .map(|m| m.contact_id)
            .collect();
        for c in member_contacts {
            conflict(
                ParticipantId::Contact(c),
                self.members_of(c).iter().map(|m| m.as_uuid()).collect(),
            );
        }
        for (s, ts) in &d.contact_claims {
            conflict(
                ParticipantId::Contact(*s),
                ts.iter().map(|t| t.as_uuid()).collect(),
            );
        }
        for (members, kept) in &d.contact_cycles {
            out.push(Anomaly::ContactMergeCycle {
                members: members.clone(),
                kept: *kept,
            });
        }
        out.sort();
        out
    }

    // ------------------------------------------------------------------------------------
    // paging

    /// List Messages. A cursor pins the listing to its first page's moment: a later page
    /// holds the messages stamped at or below the watermark whose provenance, in the merge
    /// forest of the merges stamped at or below the watermark, has the anchor on its way to
    /// its root, wherever those messages live now.
    pub fn list_messages(&self, req: &PageRequest) -> Result<Page<'_>, ListMessagesError> {
        let limit = match req.limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            Some(n) => return Err(ListMessagesError::IllegalLimit(n)),
        };
        let d = self.d();
        if !d.conversations.contains(&req.conversation_id) {
            return Err(ListMessagesError::ConversationNotFound(req.conversation_id));
        }
        let requested = self.root_of(req.conversation_id);
        let descending = req.order == SortOrder::Desc;
        let participant_only = req.visibility == VisibilityFilter::ParticipantVisible;
        let (anchor, watermark, after, root) = match &req.cursor {
            None => (requested, d.clock, None, requested),
            Some(c) => {
                if c.descending != descending || c.participant_only != participant_only {
                    return Err(CursorError::QueryMismatch.into());
                }
                if !d.conversations.contains(&c.anchor) {
                    return Err(CursorError::ForeignConversation.into());
                }
                // Asked of a conversation the cursor covered (as of its watermark) that a
                // revert has since taken elsewhere, the cursor still pages.
                let then = Forest::of(&d.merge_facts, &d.merge_reverts, Some(c.watermark));
                let root = self.root_of(c.anchor);
                if root != requested && !then.path(req.conversation_id).contains(&c.anchor) {
                    return Err(CursorError::ForeignConversation.into());
                }
                (c.anchor, c.watermark, Some(c.last), root)
            }
        };
        let then = Forest::of(&d.merge_facts, &d.merge_reverts, Some(watermark));
        let mut listed: Vec<&Message> = d
            .messages
            .values()
            .filter(|m| m.sequence <= watermark)
            .filter(|m| !participant_only || m.is_visible_to_participant())
            .filter(|m| then.path(m.conversation_id).contains(&anchor))
            .collect();
        listed.sort_by_key(|m| m.order_key());
        if descending {
            listed.reverse();
        }
        if let Some(last) = after {
            listed.retain(|m| {
                if descending {
                    m.order_key() < last
                } else {
                    m.order_key() > last
                }
            });
        }
        let more = listed.len() > limit;
        listed.truncate(limit);
        let next = match (more, listed.last()) {
            (true, Some(last)) => Some(Cursor {
                anchor,
                watermark,
                last: last.order_key(),
                descending,
                participant_only,
            }),
            _ => None,
        };
        Ok(Page {
            messages: listed,
            next,
            conversation_id: root,
        })
    }

    // ------------------------------------------------------------------------------------
    // decide

    /// What the engine must decide for a command in this state: the same events (ids drawn
    /// from `ids` in the same order) or the same refusal.
    pub fn decide(
        &self,
        command: &Command,
        ctx: &Context,
        ids: &mut dyn IdSource,
    ) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::GetOrCreateConversation { participant } => {
                self.check_participant(*participant)?;
                if self.live_conversation_of(*participant).is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![Event::ConversationStarted {
                    conversation_id: ConversationId::from_uuid(ids.next_id()),
                    participant: self.advanced_identity(*participant),
                }])
            }
            Command::SendMessage {
                conversation_id,
                message,
                send_as,
            } => self.decide_send(*conversation_id, message, *send_as, ctx),
            Command::IdentifyVisitor { visitor, contact } => {
                let live = self.resolve_contact(*contact);
                if self.contact(live).is_none() {
                    return Err(Rejection::ContactNotFound(*contact));
                }
                if let Some(known) = self.contact_of_visitor(*visitor) {
                    if self.resolve_contact(known) == live {
                        return Ok(Vec::new());
                    }
                    return Err(Rejection::VisitorAlreadyIdentified {
                        visitor: *visitor,
                        contact: known,
                    });
                }
                let mut events = vec![Event::VisitorIdentified {
                    visitor: *visitor,
                    contact: live,
                }];
                let from = self.owned_by(ParticipantId::Visitor(*visitor));
                self.fold_into(
                    &mut events,
                    self.advanced_identity(ParticipantId::Contact(live)),
                    from.into_iter().collect(),
                    ctx,
                    ids,
                )?;
                Ok(events)
            }
            Command::RegisterMember {
                member,
                contact,
                login_email,
            } => {
                let live = self.resolve_contact(*contact);
                if self.contact(live).is_none() {
                    return Err(Rejection::ContactNotFound(*contact));
                }
                if let Some(existing) = self.member(*member) {
                    if existing.contact_id == live {
                        return Ok(Vec::new());
                    }
                    return Err(Rejection::MemberAlreadyExists {
                        member: *member,
                        contact: existing.contact_id,
                    });
                }
                if let Some(other) = self.member_of(live) {
                    return Err(Rejection::ContactAlreadyMember {
                        contact: live,
                        member: other,
                    });
                }
                let stamp =
                    next_moment(self.last_sequence(), ctx.now).ok_or(Rejection::ClockExhausted)?;
                let mut events = vec![Event::MemberRegistered {
                    member: *member,
                    contact: live,
                    login_email: login_email.clone(),
                    stamp,
                }];
                let from = self.owned_by(ParticipantId::Contact(live));
                self.fold_into(
                    &mut events,
                    ParticipantId::Member(*member),
                    from.into_iter().collect(),
                    ctx,
                    ids,
                )?;
                Ok(events)
            }
            Command::CreateContact { contact_id, draft } => {
                let contact = self.plan_create(*contact_id, draft, ctx.now)?;
                Ok(vec![Event::ContactCreated { contact }])
            }
            Command::UpdateContact {
                contact_id,
                expected_revision,
                patch,
                allow_duplicates,
            } => {
                let contact = self.plan_update(
                    *contact_id,
                    *expected_revision,
                    patch,
                    *allow_duplicates,
                    ctx.now,
                )?;
                Ok(vec![Event::ContactUpdated { contact }])
            }
            Command::LabelContact {
                contact_id,
                add,
                remove,
            } => {
                let current = self
                    .contact(*contact_id)
                    .ok_or(LabelContactError::NotFound(*contact_id))?;
                if let Some(too_many) = [add.len(), remove.len()]
                    .into_iter()
                    .find(|n| *n > MAX_LABELS_PER_CHANGE)
                {
                    return Err(LabelContactError::Count(too_many).into());
                }
                if add.is_empty() && remove.is_empty() {
                    return Err(LabelContactError::Count(0).into());
                }
                for key in add.iter().chain(remove) {
                    inbox_core::contacts::check_label_key(key).map_err(|reason| {
                        LabelContactError::InvalidKey {
                            key: key.clone(),
                            reason,
                        }
                    })?;
                }
                let d = self.d();
                if let Some(unknown) = add.iter().chain(remove).find(|k| {
                    k.split('.').next() == Some(CUSTOM_NAMESPACE)
                        && k.contains('.')
                        && !d.labels.contains_key(*k)
                }) {
                    return Err(LabelContactError::UnknownLabel(unknown.clone()).into());
                }
                // Removed first, then added: a key in both ends up on the contact.
                let labels: BTreeSet<String> = current
                    .details
                    .labels
                    .difference(remove)
                    .chain(add)
                    .cloned()
                    .collect();
                if labels == current.details.labels {
                    return Ok(Vec::new());
                }
                let mut contact = current.clone();
                contact.details.labels = labels;
                contact.revision = current.revision.saturating_add(1);
                contact.updated_date = ctx.now.max(current.updated_date);
                Ok(vec![Event::ContactUpdated { contact }])
            }
            Command::DeleteContact { contact_id } => {
                let current = self
                    .contact(*contact_id)
                    .ok_or(DeleteContactError::NotFound(*contact_id))?;
                if let Some(member) = self.member_of(*contact_id) {
                    return Err(DeleteContactError::IsMember {
                        contact: *contact_id,
                        member,
                    }
                    .into());
                }
                Ok(vec![Event::ContactDeleted {
                    contact_id: *contact_id,
                    revision: current.revision,
                }])
            }
            Command::MergeContacts {
                target,
                expected_revision,
                sources,
            } => {
                let merged = self.plan_merge(*target, *expected_revision, sources, ctx.now)?;
                if let Some(member_source) = sources.iter().find(|s| self.member_of(**s).is_some())
                {
                    return Err(MergeContactsError::SourceIsMember(*member_source).into());
                }
                let mut events = vec![Event::ContactsMerged {
                    target: merged,
                    sources: sources.clone(),
                }];
                let survivor = match self.member_of(*target) {
                    Some(m) => ParticipantId::Member(m),
                    None => ParticipantId::Contact(*target),
                };
                let from = sources
                    .iter()
                    .filter_map(|s| self.owned_by(ParticipantId::Contact(*s)))
                    .collect();
                self.fold_into(&mut events, survivor, from, ctx, ids)?;
                Ok(events)
            }
            Command::InteractWithButton {
                conversation_id,
                message_id,
                interaction_id,
            } => {
                if !self.d().conversations.contains(conversation_id) {
                    return Err(Rejection::ConversationNotFound(*conversation_id));
                }
                let root = self.root_of(*conversation_id);
                let message = self
                    .message(*message_id)
                    .filter(|m| self.root_of(m.conversation_id) == root)
                    .ok_or(Rejection::MessageNotFound {
                        conversation_id: *conversation_id,
                        message_id: *message_id,
                    })?;
                let button = message.postback_button(interaction_id).ok_or_else(|| {
                    Rejection::InteractionNotFound {
                        message_id: *message_id,
                        interaction_id: interaction_id.clone(),
                    }
                })?;
                let app_id = match &button.action {
                    ButtonAction::Postback { app_id, .. } => *app_id,
                    ButtonAction::Launch { .. } => None,
                };
                Ok(vec![Event::ButtonInteracted {
                    conversation_id: root,
                    message_id: *message_id,
                    interaction_id: interaction_id.clone(),
                    app_id,
                    interacted_by: self.participant_sender(root),
                }])
            }
            Command::RevertConversationMerge { conversation } => {
                self.decide_revert(*conversation, ctx)
            }
            Command::FindOrCreateLabel { .. }
            | Command::RenameLabel { .. }
            | Command::DeleteLabel { .. }
            | Command::FindOrCreateExtendedField { .. }
            | Command::RenameExtendedField { .. }
            | Command::DeleteExtendedField { .. } => self.decide_catalog(command, ctx),
            Command::EraseParticipant { participant } => {
                self.check_participant(*participant)?;
                let conversations = self
                    .live_conversation_of(*participant)
                    .map(|root| self.tree_of(root))
                    .unwrap_or_default();
                let contact = match self.advanced_identity(*participant) {
                    ParticipantId::Contact(c) => Some(c),
                    ParticipantId::Member(m) => self.member(m).map(|m| m.contact_id),
                    ParticipantId::Visitor(_) => None,
                }
                .and_then(|c| self.contact(self.resolve_contact(c)))
                .map(|c| Contact {
                    revision: c.revision.saturating_add(1),
                    updated_date: ctx.now.max(c.updated_date),
                    name: ContactName::default(),
                    emails: Vec::new(),
                    phones: Vec::new(),
                    // An erasure keeps only the business's labels of what a caller set.
                    details: ContactDetails {
                        labels: c.details.labels.clone(),
                        ..ContactDetails::default()
                    },
                    ..c.clone()
                });
                Ok(vec![Event::ParticipantErased {
                    participant: *participant,
                    conversations,
                    up_to: self.last_sequence(),
                    contact,
                }])
            }
        }
    }

    fn check_participant(&self, p: ParticipantId) -> Result<(), Rejection> {
        match p {
            ParticipantId::Visitor(_) => Ok(()),
            ParticipantId::Contact(c) => match self.contact(self.resolve_contact(c)) {
                Some(_) => Ok(()),
                None => Err(Rejection::ContactNotFound(c)),
            },
            ParticipantId::Member(m) => match self.member(m) {
                Some(_) => Ok(()),
                None => Err(Rejection::MemberNotFound(m)),
            },
        }
    }

    /// Who a message or a click "as the participant" of a conversation comes from.
    fn participant_sender(&self, root: ConversationId) -> Sender {
        match self.participant_of(root).map(|p| self.advanced_identity(p)) {
            Some(ParticipantId::Visitor(v)) => Sender::Visitor(v),
            Some(ParticipantId::Contact(c)) => Sender::Contact(c),
            Some(ParticipantId::Member(m)) => Sender::Member {
                member: m,
                contact: self.member(m).map(|m| m.contact_id),
            },
            None => Sender::Unknown,
        }
    }

    fn decide_send(
        &self,
        conversation_id: ConversationId,
        draft: &MessageDraft,
        send_as: SendAs,
        ctx: &Context,
    ) -> Result<Vec<Event>, Rejection> {
        if !self.d().conversations.contains(&conversation_id) {
            return Err(Rejection::ConversationNotFound(conversation_id));
        }
        let root = self.root_of(conversation_id);
        let app_id = match ctx.caller {
            Caller::App(a) => Some(a),
            _ => None,
        };
        let valid = draft.clone().validate(app_id)?;
        let sender = match (send_as, ctx.caller) {
            (SendAs::Participant, _) => self.participant_sender(root),
            (SendAs::Caller, Caller::App(a)) => Sender::App(a),
            (_, Caller::WixUser(u)) => Sender::WixUser(u),
            _ => Sender::Unknown,
        };
        // The id is the sequence's number; a sequence whose id an observed message already
        // took moves on to the next free one.
        let mut sequence =
            next_moment(self.last_sequence(), ctx.now).ok_or(Rejection::ClockExhausted)?;
        let id = loop {
            let id = MessageId(u64::try_from(sequence.0).map_err(|_| Rejection::ClockExhausted)?);
            if self.message(id).is_none() {
                break id;
            }
            sequence = Sequence(sequence.0.checked_add(1).ok_or(Rejection::ClockExhausted)?);
        };
        Ok(vec![Event::MessageSent {
            message: Message {
                id,
                sequence,
                created_date: Timestamp::from_micros(sequence.0),
                conversation_id,
                sender,
                target_channels: valid.target_channels,
                source_channel: valid.source_channel,
                app_id,
                visibility: valid.visibility,
                direction: valid.direction,
                silent: valid.silent,
                content: valid.content,
                badges: valid.badges,
            },
        }])
    }

    /// After an identity change the conversations in `from` (by root, without repeats and
    /// without the survivor's own) are merged into the conversation `target` owns, started
    /// first if it owns none.
    fn fold_into(
        &self,
        events: &mut Vec<Event>,
        target: ParticipantId,
        from: Vec<ConversationId>,
        ctx: &Context,
        ids: &mut dyn IdSource,
    ) -> Result<(), Rejection> {
        let existing = self.owned_by(target).map(|c| self.root_of(c));
        let mut sources: Vec<ConversationId> = Vec::new();
        for c in from.into_iter().map(|c| self.root_of(c)) {
            if Some(c) != existing && !sources.contains(&c) {
                sources.push(c);
            }
        }
        if sources.is_empty() {
            return Ok(());
        }
        let stamp = next_moment(self.last_sequence(), ctx.now).ok_or(Rejection::ClockExhausted)?;
        let survivor = match existing {
            Some(c) => c,
            None => {
                let id = ConversationId::from_uuid(ids.next_id());
                events.push(Event::ConversationStarted {
                    conversation_id: id,
                    participant: target,
                });
                id
            }
        };
        events.push(Event::ConversationsMerged {
            sources,
            target: survivor,
            stamp,
        });
        Ok(())
    }

    fn plan_create(
        &self,
        id: ContactId,
        draft: &inbox_core::contacts::ContactDraft,
        now: Timestamp,
    ) -> Result<Contact, CreateContactError> {
        let d = self.d();
        if d.records.contains_key(&id)
            || d.contact_claims.contains_key(&id)
            || d.deleted_contacts.contains(&id)
        {
            return Err(CreateContactError::AlreadyExists(id));
        }
        if name_is_empty(&draft.name) && draft.emails.is_empty() && draft.phones.is_empty() {
            return Err(CreateContactError::Empty);
        }
        let (emails, phones) = self
            .check_entries(id, &draft.emails, &draft.phones, draft.allow_duplicates)
            .map_err(|p| match p {
                EntryProblem::InvalidEmail(e) => ContactDataError::InvalidEmail(e),
                EntryProblem::InvalidPhone(p) => ContactDataError::InvalidPhone(p),
                EntryProblem::DuplicateEmail(email, existing) => {
                    ContactDataError::DuplicateEmail { email, existing }
                }
                EntryProblem::DuplicatePhone(phone, existing) => {
                    ContactDataError::DuplicatePhone { phone, existing }
                }
                EntryProblem::Field(field, reason) => {
                    ContactDataError::InvalidField { field, reason }
                }
            })?;
        for key in &draft.details.labels {
            inbox_core::contacts::check_label_key(key).map_err(|reason| {
                ContactDataError::InvalidField {
                    field: "info.labelKeys",
                    reason,
                }
            })?;
        }
        let mut details = draft.details.clone();
        self.check_catalog(details.labels.iter(), &mut details.extended_fields)?;
        Ok(Contact {
            id,
            revision: 1,
            created_date: now,
            updated_date: now,
            name: draft.name.clone(),
            emails,
            phones,
            details,
            source: draft.source,
            last_activity: ContactActivity {
                at: now,
                kind: ActivityType::ContactCreated,
            },
        })
    }

    /// The rules for emails and phones, on create and update: an email is an address with
    /// an email tag (`MOBILE` and `FAX` are phone tags), trimmed; a phone has digits; neither
    /// may belong to another live contact unless duplicates are allowed; the first entry
    /// marked primary is primary, else the first entry.
    fn check_entries(
        &self,
        own: ContactId,
        emails: &[ContactEmail],
        phones: &[ContactPhone],
        allow_duplicates: bool,
    ) -> Result<(Vec<ContactEmail>, Vec<ContactPhone>), EntryProblem> {
        let mut out_emails = Vec::new();
        for e in emails {
            if !is_email(&e.email) {
                return Err(EntryProblem::InvalidEmail(e.email.clone()));
            }
            if e.tag == EntryTag::Mobile || e.tag == EntryTag::Fax {
                return Err(EntryProblem::Field(
                    "info.emails.tag",
                    "MOBILE and FAX are phone tags; an email is UNTAGGED, MAIN, HOME or WORK"
                        .into(),
                ));
            }
            let email = e.email.trim().to_owned();
            if !allow_duplicates
                && let Some(existing) = self
                    .contacts_with_email(&email)
                    .into_iter()
                    .find(|c| *c != own)
            {
                return Err(EntryProblem::DuplicateEmail(email, existing));
            }
            out_emails.push(ContactEmail { email, ..e.clone() });
        }
        for p in phones {
            let digits = phone_digits(&p.phone);
            if digits.is_empty() {
                return Err(EntryProblem::InvalidPhone(p.phone.clone()));
            }
            if !allow_duplicates
                && let Some(existing) = self
                    .contacts_with_phone(&digits)
                    .into_iter()
                    .find(|c| *c != own)
            {
                return Err(EntryProblem::DuplicatePhone(p.phone.clone(), existing));
            }
        }
        let mut out_phones = phones.to_vec();
        one_primary_of(&mut out_emails, |e| &mut e.primary);
        one_primary_of(&mut out_phones, |p| &mut p.primary);
        Ok((out_emails, out_phones))
    }

    /// The rule of Update Contact: the contact must be live and at the revision the caller
    /// read; each field the patch gives replaces the contact's; the result must keep a name,
    /// an email or a phone; a member's primary email is its login email and stays; the
    /// revision goes up by one. (Field formats beyond emails, phones and labels are the
    /// domain tests' to check: the histories do not generate them.)
    fn plan_update(
        &self,
        id: ContactId,
        expected_revision: u64,
        patch: &ContactPatch,
        allow_duplicates: bool,
        now: Timestamp,
    ) -> Result<Contact, UpdateContactError> {
        let current = self.contact(id).ok_or(UpdateContactError::NotFound(id))?;
        if expected_revision != current.revision {
            return Err(UpdateContactError::RevisionConflict {
                expected: expected_revision,
                actual: current.revision,
            });
        }
        let (emails, phones) = self
            .check_entries(
                id,
                patch.emails.as_deref().unwrap_or_default(),
                patch.phones.as_deref().unwrap_or_default(),
                allow_duplicates,
            )
            .map_err(|p| match p {
                EntryProblem::InvalidEmail(e) => ContactDataError::InvalidEmail(e),
                EntryProblem::InvalidPhone(p) => ContactDataError::InvalidPhone(p),
                EntryProblem::DuplicateEmail(email, existing) => {
                    ContactDataError::DuplicateEmail { email, existing }
                }
                EntryProblem::DuplicatePhone(phone, existing) => {
                    ContactDataError::DuplicatePhone { phone, existing }
                }
                EntryProblem::Field(field, reason) => {
                    ContactDataError::InvalidField { field, reason }
                }
            })?;
        let mut next = current.clone();
        if let Some(name) = &patch.name {
            next.name = name.clone();
        }
        if patch.emails.is_some() {
            next.emails = emails;
        }
        if patch.phones.is_some() {
            next.phones = phones;
        }
        if let Some(labels) = &patch.labels {
            for key in labels {
                inbox_core::contacts::check_label_key(key).map_err(|reason| {
                    ContactDataError::InvalidField {
                        field: "info.labelKeys",
                        reason,
                    }
                })?;
            }
            next.details.labels = labels.clone();
        }
        let d = &mut next.details;
        if let Some(a) = &patch.addresses {
            d.addresses = a.clone();
        }
        if let Some(v) = &patch.company {
            d.company = v.clone();
        }
        if let Some(v) = &patch.job_title {
            d.job_title = v.clone();
        }
        if let Some(v) = &patch.birthdate {
            d.birthdate = v.clone();
        }
        if let Some(v) = &patch.locale {
            d.locale = v.clone();
        }
        if let Some(v) = &patch.picture {
            d.picture = v.clone();
        }
        let mut given: BTreeMap<String, ExtendedValue> = BTreeMap::new();
        for (k, v) in &patch.extended_fields {
            match v {
                Some(v) => {
                    given.insert(k.clone(), v.clone());
                }
                None => {
                    d.extended_fields.remove(k);
                }
            }
        }
        // What the update brings must be in the catalog; what the contact had stays.
        let brought: Vec<String> = next
            .details
            .labels
            .difference(&current.details.labels)
            .cloned()
            .collect();
        self.check_catalog(brought.iter(), &mut given)?;
        next.details.extended_fields.extend(given);
        if name_is_empty(&next.name) && next.emails.is_empty() && next.phones.is_empty() {
            return Err(UpdateContactError::Empty);
        }
        if let Some(member) = self.member_of(id)
            && next.primary_email().map(normalize_email)
                != current.primary_email().map(normalize_email)
        {
            return Err(UpdateContactError::MemberPrimaryEmail {
                contact: id,
                member,
            });
        }
        next.revision = current.revision.saturating_add(1);
        next.updated_date = now.max(current.updated_date);
        Ok(next)
    }

    /// The catalog's rule for what a contact is given: a `custom` label must stand; an
    /// extended field must stand and the value fit its type (as the field normalises it).
    fn check_catalog<'a>(
        &self,
        labels: impl Iterator<Item = &'a String>,
        fields: &mut BTreeMap<String, ExtendedValue>,
    ) -> Result<(), ContactDataError> {
        let d = self.d();
        for key in labels {
            let custom = key.split('.').next() == Some(CUSTOM_NAMESPACE) && key.contains('.');
            if custom && !d.labels.contains_key(key) {
                return Err(ContactDataError::UnknownLabel(key.clone()));
            }
        }
        for (key, value) in fields.iter_mut() {
            let field = d
                .fields
                .get(key)
                .ok_or_else(|| ContactDataError::UnknownExtendedField(key.clone()))?;
            *value = fit_value(field, value).map_err(|reason| {
                ContactDataError::InvalidExtendedField {
                    key: key.clone(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// The labels that stand, by key.
    pub fn labels(&self) -> Vec<&LabelDefinition> {
        self.d().labels.values().collect()
    }

    /// The extended fields that stand, by key.
    pub fn fields(&self) -> Vec<&FieldDefinition> {
        self.d().fields.values().collect()
    }

    /// A definition that may be renamed or deleted: it stands and is a custom one.
    fn changeable<'a, D>(
        defs: &'a BTreeMap<String, D>,
        kind: CatalogKind,
        key: &str,
        custom: impl Fn(&D) -> bool,
    ) -> Result<&'a D, Rejection> {
        let def = defs.get(key).ok_or_else(|| CatalogError::NotFound {
            kind,
            key: key.to_owned(),
        })?;
        if !custom(def) {
            return Err(CatalogError::ReadOnly {
                kind,
                key: key.to_owned(),
            }
            .into());
        }
        Ok(def)
    }

    /// Refuses a rename to a name another standing definition has (the one with the
    /// smallest key is named).
    fn name_free<D>(
        defs: &BTreeMap<String, D>,
        kind: CatalogKind,
        own: &str,
        name: &str,
        name_of: impl Fn(&D) -> &str,
    ) -> Result<(), Rejection> {
        match defs
            .iter()
            .find(|(k, d)| name_of(d) == name && k.as_str() != own)
        {
            Some((other, _)) => Err(CatalogError::NameTaken {
                kind,
                name: name.to_owned(),
                key: other.clone(),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// The rule of a label's or field's deletion for the contacts: each live contact that
    /// has it, in id order, loses it at its next revision.
    fn strip_contacts(
        &self,
        now: Timestamp,
        has: impl Fn(&Contact) -> bool,
        strip: impl Fn(&mut Contact),
    ) -> Vec<Event> {
        self.contacts()
            .into_iter()
            .filter(|c| has(c))
            .map(|c| {
                let mut next = c.clone();
                strip(&mut next);
                next.revision = c.revision.saturating_add(1);
                next.updated_date = now.max(c.updated_date);
                Event::ContactUpdated { contact: next }
            })
            .collect()
    }

    /// The rule of reverting a conversation merge: the merge that counts for `c` now (its
    /// parent in the live forest; the latest of its merges not reverted) is reverted, unless
    /// `c` is live (then: reverted already if every merge of it was, naming the latest; else
    /// not merged), its target has been merged away since (that merge first), or both
    /// conversations are one person's.
    fn decide_revert(&self, c: ConversationId, ctx: &Context) -> Result<Vec<Event>, Rejection> {
        let d = self.d();
        if !d.conversations.contains(&c) {
            return Err(Rejection::ConversationNotFound(c));
        }
        let mine: Vec<(Sequence, ConversationId)> = d
            .merge_facts
            .iter()
            .filter(|(s, _, _)| *s == c)
            .map(|(_, stamp, t)| (*stamp, *t))
            .collect();
        let is_reverted = |stamp: Sequence, t: ConversationId| d.merge_reverts.get(&(c, stamp, t));
        let Some(target) = d.now.parent.get(&c).copied() else {
            let all_reverted =
                !mine.is_empty() && mine.iter().all(|(s, t)| is_reverted(*s, *t).is_some());
            return Err(if all_reverted {
                let (merged_at, target) = mine.iter().max().copied().unwrap_or((Sequence::ZERO, c));
                RevertMergeError::AlreadyReverted {
                    conversation: c,
                    target,
                    merged_at,
                    reverted_at: is_reverted(merged_at, target)
                        .copied()
                        .unwrap_or(Sequence::ZERO),
                }
            } else {
                RevertMergeError::NotMerged(c)
            }
            .into());
        };
        let merged_at = d.now.winner.get(&c).map_or(Sequence::ZERO, |(s, _)| *s);
        if let Some(later_target) = d.now.parent.get(&target).copied() {
            return Err(RevertMergeError::LaterMergeDepends {
                conversation: c,
                target,
                later_target,
                later_at: d
                    .now
                    .winner
                    .get(&target)
                    .map_or(Sequence::ZERO, |(s, _)| *s),
            }
            .into());
        }
        let person = |x| self.participant_of(x).map(|p| self.advanced_identity(p));
        if let (Some(a), Some(b)) = (person(c), person(target))
            && a == b
        {
            return Err(RevertMergeError::SamePerson {
                conversation: c,
                target,
                person: a,
            }
            .into());
        }
        let stamp = next_moment(self.last_sequence(), ctx.now).ok_or(Rejection::ClockExhausted)?;
        Ok(vec![Event::ConversationMergeReverted {
            source: c,
            target,
            merged_at,
            stamp,
        }])
    }

    fn decide_catalog(&self, command: &Command, ctx: &Context) -> Result<Vec<Event>, Rejection> {
        let d = self.d();
        let stamp = || next_moment(self.last_sequence(), ctx.now).ok_or(Rejection::ClockExhausted);
        // A rename is dated after the definition's last change.
        let renamed_at = |last: Timestamp| {
            ctx.now
                .max(Timestamp::from_micros(last.as_micros().saturating_add(1)))
        };
        match command {
            Command::FindOrCreateLabel { display_name } => {
                check_display_name(CatalogKind::Label, display_name)?;
                if d.labels.values().any(|l| l.display_name == *display_name) {
                    return Ok(Vec::new());
                }
                let custom = d
                    .labels
                    .values()
                    .filter(|l| l.label_type == LabelType::UserDefined)
                    .count();
                if custom >= MAX_CUSTOM_LABELS {
                    return Err(CatalogError::QuotaReached {
                        kind: CatalogKind::Label,
                        quota: MAX_CUSTOM_LABELS,
                    }
                    .into());
                }
                let label = LabelDefinition {
                    key: new_key(display_name, "label", |k| d.labels.contains_key(k)),
                    display_name: display_name.clone(),
                    label_type: LabelType::UserDefined,
                    created_date: ctx.now,
                    updated_date: ctx.now,
                };
                Ok(vec![Event::LabelSaved {
                    label,
                    stamp: stamp()?,
                }])
            }
            Command::RenameLabel { key, display_name } => {
                let kind = CatalogKind::Label;
                let current = Self::changeable(&d.labels, kind, key, |l| {
                    l.label_type == LabelType::UserDefined
                })?;
                check_display_name(kind, display_name)?;
                if current.display_name == *display_name {
                    return Ok(Vec::new());
                }
                Self::name_free(&d.labels, kind, key, display_name, |l| &l.display_name)?;
                let label = LabelDefinition {
                    display_name: display_name.clone(),
                    updated_date: renamed_at(current.updated_date),
                    ..current.clone()
                };
                Ok(vec![Event::LabelSaved {
                    label,
                    stamp: stamp()?,
                }])
            }
            Command::DeleteLabel { key } => {
                Self::changeable(&d.labels, CatalogKind::Label, key, |l| {
                    l.label_type == LabelType::UserDefined
                })?;
                let mut events = vec![Event::LabelDeleted {
                    key: key.clone(),
                    stamp: stamp()?,
                }];
                events.extend(self.strip_contacts(
                    ctx.now,
                    |c| c.details.labels.contains(key),
                    |c| {
                        c.details.labels.remove(key);
                    },
                ));
                Ok(events)
            }
            Command::FindOrCreateExtendedField {
                display_name,
                data_type,
            } => {
                check_display_name(CatalogKind::ExtendedField, display_name)?;
                if d.fields.values().any(|f| f.display_name == *display_name) {
                    return Ok(Vec::new());
                }
                let custom = d
                    .fields
                    .values()
                    .filter(|f| f.field_type == FieldType::UserDefined)
                    .count();
                if custom >= MAX_CUSTOM_FIELDS {
                    return Err(CatalogError::QuotaReached {
                        kind: CatalogKind::ExtendedField,
                        quota: MAX_CUSTOM_FIELDS,
                    }
                    .into());
                }
                let field = FieldDefinition {
                    key: new_key(display_name, "field", |k| d.fields.contains_key(k)),
                    display_name: display_name.clone(),
                    data_type: *data_type,
                    field_type: FieldType::UserDefined,
                    description: None,
                    created_date: ctx.now,
                    updated_date: ctx.now,
                };
                Ok(vec![Event::ExtendedFieldSaved {
                    field,
                    stamp: stamp()?,
                }])
            }
            Command::RenameExtendedField { key, display_name } => {
                let kind = CatalogKind::ExtendedField;
                let current = Self::changeable(&d.fields, kind, key, |f| {
                    f.field_type == FieldType::UserDefined
                })?;
                check_display_name(kind, display_name)?;
                if current.display_name == *display_name {
                    return Ok(Vec::new());
                }
                Self::name_free(&d.fields, kind, key, display_name, |f| &f.display_name)?;
                let field = FieldDefinition {
                    display_name: display_name.clone(),
                    updated_date: renamed_at(current.updated_date),
                    ..current.clone()
                };
                Ok(vec![Event::ExtendedFieldSaved {
                    field,
                    stamp: stamp()?,
                }])
            }
            Command::DeleteExtendedField { key } => {
                Self::changeable(&d.fields, CatalogKind::ExtendedField, key, |f| {
                    f.field_type == FieldType::UserDefined
                })?;
                let mut events = vec![Event::ExtendedFieldDeleted {
                    key: key.clone(),
                    stamp: stamp()?,
                }];
                events.extend(self.strip_contacts(
                    ctx.now,
                    |c| c.details.extended_fields.contains_key(key),
                    |c| {
                        c.details.extended_fields.remove(key);
                    },
                ));
                Ok(events)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The rule of a contact merge: a name part comes from the first source that has one,
    /// else the target; emails and phones are the union (the target's first, repeats by
    /// normalised value left out); the primary email is the target's, else the first
    /// source's; the revision goes up by one.
    fn plan_merge(
        &self,
        target: ContactId,
        expected_revision: u64,
        sources: &[ContactId],
        now: Timestamp,
    ) -> Result<Contact, MergeContactsError> {
        if sources.is_empty() || sources.len() > MAX_MERGE_SOURCES {
            return Err(MergeContactsError::SourceCount(sources.len()));
        }
        let current = self
            .contact(target)
            .ok_or(MergeContactsError::TargetNotFound(target))?;
        let mut source_contacts: Vec<&Contact> = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            if *s == target {
                return Err(MergeContactsError::SourceIsTarget(*s));
            }
            if sources.iter().take(i).any(|earlier| earlier == s) {
                return Err(MergeContactsError::DuplicateSource(*s));
            }
            source_contacts.push(
                self.contact(*s)
                    .ok_or(MergeContactsError::SourceNotFound(*s))?,
            );
        }
        if expected_revision != current.revision {
            return Err(MergeContactsError::RevisionConflict {
                expected: expected_revision,
                actual: current.revision,
            });
        }
        let in_order: Vec<&Contact> = source_contacts.iter().copied().chain([current]).collect();
        let first_non_empty = |part: fn(&Contact) -> &Option<String>| {
            in_order
                .iter()
                .find_map(|c| part(c).clone().filter(|s| !s.is_empty()))
        };
        let mut merged = current.clone();
        merged.name = ContactName {
            first: first_non_empty(|c| &c.name.first),
            last: first_non_empty(|c| &c.name.last),
        };
        for src in &source_contacts {
            for e in &src.emails {
                if !merged
                    .emails
                    .iter()
                    .any(|m| normalize_email(&m.email) == normalize_email(&e.email))
                {
                    merged.emails.push(ContactEmail {
                        primary: false,
                        ..e.clone()
                    });
                }
            }
            for p in &src.phones {
                if !merged
                    .phones
                    .iter()
                    .any(|m| phone_digits(&m.phone) == phone_digits(&p.phone))
                {
                    merged.phones.push(ContactPhone {
                        primary: false,
                        ..p.clone()
                    });
                }
            }
        }
        if !current.emails.iter().any(|e| e.primary) {
            let first_source_primary = source_contacts
                .iter()
                .find_map(|c| c.primary_email())
                .map(normalize_email);
            for e in &mut merged.emails {
                e.primary = Some(normalize_email(&e.email)) == first_source_primary;
            }
        }
        one_primary_of(&mut merged.emails, |e| &mut e.primary);
        one_primary_of(&mut merged.phones, |p| &mut p.primary);
        // The other single values like the name; addresses in union (at most 50), labels in
        // union; each extended field from the first source that has it, else the target.
        let single = |part: fn(&ContactDetails) -> &Option<String>| {
            in_order
                .iter()
                .find_map(|c| part(&c.details).clone().filter(|s| !s.is_empty()))
        };
        let details = ContactDetails {
            company: single(|d| &d.company),
            job_title: single(|d| &d.job_title),
            birthdate: single(|d| &d.birthdate),
            locale: single(|d| &d.locale),
            picture: single(|d| &d.picture),
            addresses: {
                let mut all = current.details.addresses.clone();
                for a in source_contacts.iter().flat_map(|c| &c.details.addresses) {
                    if !all.contains(a) && all.len() < 50 {
                        all.push(a.clone());
                    }
                }
                all
            },
            labels: in_order
                .iter()
                .flat_map(|c| c.details.labels.iter().cloned())
                .collect(),
            extended_fields: {
                let mut fields = BTreeMap::new();
                for c in &in_order {
                    for (k, v) in &c.details.extended_fields {
                        fields.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                fields
            },
        };
        merged.details = details;
        merged.revision = current.revision.saturating_add(1);
        merged.updated_date = now.max(current.updated_date);
        merged.last_activity = ContactActivity {
            at: merged.updated_date,
            kind: ActivityType::ContactMerged,
        };
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inbox_core::SiteId;
    use uuid::Uuid;

    fn conv(n: u128) -> ConversationId {
        ConversationId::from_uuid(Uuid::from_u128(n))
    }

    fn merge(s: u128, t: u128, stamp: i64) -> Event {
        Event::ConversationsMerged {
            sources: vec![conv(s)],
            target: conv(t),
            stamp: Sequence(stamp),
        }
    }

    fn model(events: &[Event]) -> Model {
        Model::of(InboxConfig::new(SiteId::new("s"), [0; 16]), events)
    }

    #[test]
    fn the_latest_merge_wins_and_a_cycle_breaks_at_its_oldest_merge() {
        let m = model(&[merge(1, 2, 5), merge(1, 3, 7)]);
        assert_eq!(m.root_of(conv(1)), conv(3));
        let m = model(&[merge(1, 2, 5), merge(2, 3, 6), merge(3, 1, 9)]);
        assert_eq!(m.live_conversations(), vec![conv(1)]);
        assert_eq!(m.root_of(conv(3)), conv(1));
    }

    #[test]
    fn the_same_merge_again_with_a_later_stamp_keeps_its_earlier_moment() {
        let m = model(&[merge(1, 2, 5), merge(1, 2, 50)]);
        let then = Forest::of(&m.d().merge_facts, &m.d().merge_reverts, Some(Sequence(10)));
        assert_eq!(then.root(conv(1)), conv(2));
    }

    #[test]
    fn the_clock_stops_at_its_maximum() {
        assert_eq!(next_moment(Sequence(i64::MAX), Timestamp::EPOCH), None);
        assert_eq!(
            next_moment(Sequence(5), Timestamp::from_micros(3)),
            Some(Sequence(6))
        );
    }
}
