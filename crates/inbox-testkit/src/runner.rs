//! Running a history through the engine and the model side by side.
//!
//! A [`Runner`] plays each [`Step`] on an [`Inbox`] and on a [`Model`]: a command is decided by
//! both (the engine's events, or its refusal, must be the model's, id for id), an observed
//! event is folded by both, a page is read from both (the same messages, the same end). After
//! every step the two states are compared on every query ([`Runner::check_state`]); at the
//! end the log is folded again in shuffled orders with duplicates, replayed by value, and
//! resumed from a midway state, and each must equal the live engine ([`Runner::check_folds`]).
//! A difference is a [`Mismatch`], which says at which step and what differed.

use std::collections::{BTreeMap, BTreeSet};

use inbox_core::catalog::{FieldDataType, FieldDefinition, FieldType, LabelDefinition, LabelType};
use inbox_core::contacts::{
    Contact, ContactDraft, ContactEmail, ContactName, ContactPatch, ContactPhone, EntryTag,
    ExtendedValue, SortOrder,
};
use inbox_core::message::{
    BasicItem, ButtonDraft, Content, ContentDraft, ContentExtras, Form, FormField, Minimal, System,
    TemplateDraft,
};
use inbox_core::{
    AppId, Caller, Command, ContactId, Context, ConversationId, Direction, Event, EventEnvelope,
    EventId, Inbox, InboxConfig, ListMessages, MemberId, Message, MessageDraft, MessageId,
    ParticipantId, SendAs, Sender, Sequence, SequentialIds, SiteId, Timestamp, Visibility,
    VisibilityFilter, VisitorId, WixUserId,
};
use thiserror::Error;
use uuid::Uuid;

use crate::history::{
    Clock, CommandStep, ContentKind, EXTREMES, MessageKey, Moment, ObservedStep, PageStep,
    Population, Step, TextKind, Who,
};
use crate::model::{Cursor, Model, PageRequest};

/// Every hard case [`Runner::reached`] can name; a test of the generators checks that many
/// generated histories together reach all of them.
pub const HARD_CASES: &[&str] = &[
    "a command refused",
    "a command refused because the clock is exhausted",
    "a decided message skipped an id an observed one took",
    "a button click accepted",
    "a message at an extreme sequence",
    "a sequence tie across conversations",
    "a merge delivered again",
    "a merge after an erasure",
    "an erasure of a merged conversation",
    "a merge at or below an open cursor's watermark",
    "a page with messages a later merge moved elsewhere",
    "a listing paged to its end",
    "a listing paged to its end past late facts",
    "a conversation merged into several targets",
    "a cycle of conversation merges",
    "a conversation merged into itself",
    "two versions of a message",
    "a cycle of contact merges",
    "conflicting identity facts",
    "a chain of three or more merges",
    "a contact updated",
    "a contact's labels changed",
    "a contact deleted",
    "a member's contact not deleted",
    "a contact record after its deletion",
    "a label made",
    "a label or field deleted off a contact",
    "an extended field value set",
    "an unknown label refused",
    "a Wix label left unchanged",
    "a definition saved after its deletion",
    "a merge reverted",
    "a revert refused: one person's conversations",
    "a revert refused: a later merge depends on it",
    "a revert refused: reverted already",
    "a revert refused: not merged",
    "a revert while a listing is open",
];

/// Where the virtual clock starts (2023-11-14T22:13:20Z).
pub const START: i64 = 1_700_000_000_000_000;

const VISITORS: u8 = 4;
const CONTACTS: u8 = 6;
const MEMBERS: u8 = 4;
const OBSERVED_CONVERSATIONS: u8 = 5;
const LISTINGS: usize = 3;

const EMAILS: [&str; 6] = [
    "jo@example.com",
    " JO@Example.com", // the same address, another case, a space before
    "ann@example.com",
    "not-an-email",
    "",
    "kim@example.com",
];
const PHONES: [&str; 3] = ["+1 555 0100", "15550100", "555-0199"];
const LOGIN_EMAILS: [&str; 3] = ["jo@example.com", "m1@example.com", ""];
/// Display names of labels: two that collide with others once lowercased (so their keys get
/// a suffix), one blank (refused), one with no ASCII letter at its start.
const LABEL_NAMES: [&str; 6] = ["VIP", "Lead", "vip", "Lead!", " ", "Ünïcode"];
/// Label keys the catalog steps name: what the names above become, and one of Wix's.
const CATALOG_LABELS: [&str; 5] = [
    "custom.vip",
    "custom.lead",
    "custom.vip-2",
    "contacts.customers",
    "custom.n-code",
];
/// Display names of extended fields: one that collides once lowercased, one empty.
const FIELD_NAMES: [&str; 6] = ["Age", "Met", "Site", "Note", "age", ""];
/// Extended field keys: what the names above become, and one never made.
const FIELD_KEYS: [&str; 6] = [
    "custom.age",
    "custom.met",
    "custom.site",
    "custom.note",
    "custom.age-2",
    "custom.nothing",
];
const DATA_TYPES: [FieldDataType; 4] = [
    FieldDataType::Text,
    FieldDataType::Number,
    FieldDataType::Date,
    FieldDataType::Url,
];
/// The data type each name of [`FIELD_NAMES`] (and key of [`FIELD_KEYS`]) suggests.
const NATURAL_TYPES: [FieldDataType; 6] = [
    FieldDataType::Number,
    FieldDataType::Date,
    FieldDataType::Url,
    FieldDataType::Text,
    FieldDataType::Number,
    FieldDataType::Text,
];
/// Extended field values, of each type, one a text that is no date; from 6 on, a value of
/// the type the field of key `key` suggests.
fn field_value(key: u8, i: u8) -> ExtendedValue {
    let i = if i < 6 {
        i
    } else {
        match pick(&NATURAL_TYPES, key) {
            FieldDataType::Number => 0,
            FieldDataType::Date => 1,
            FieldDataType::Url => 2,
            FieldDataType::Text => 3,
        }
    };
    match i % 6 {
        0 => ExtendedValue::Number("41".into()),
        1 => ExtendedValue::Text("2024-02-29".into()),
        2 => ExtendedValue::Text("example.com".into()),
        3 => ExtendedValue::Text("hi".into()),
        4 => ExtendedValue::Text("not a date".into()),
        _ => ExtendedValue::Number("-0.5".into()),
    }
}
/// Label keys: well formed (custom and system namespaces) and not (no namespace, a space).
const LABELS: [&str; 5] = [
    "custom.vip",
    "custom.lead",
    "contacts.customers",
    "nonamespace",
    "custom.has space",
];

fn pool_uuid(kind: u8, i: u8) -> Uuid {
    Uuid::from_u128((u128::from(kind) << 64) | u128::from(i))
}

/// The `i`-th visitor of the pool.
pub fn visitor(i: u8) -> VisitorId {
    VisitorId::from_uuid(pool_uuid(0x71, i % VISITORS))
}

/// The `i`-th contact of the pool.
pub fn contact(i: u8) -> ContactId {
    ContactId::from_uuid(pool_uuid(0x72, i % CONTACTS))
}

/// The `i`-th member of the pool.
pub fn member(i: u8) -> MemberId {
    MemberId::from_uuid(pool_uuid(0x73, i % MEMBERS))
}

/// The `i`-th conversation id that only observed events use.
pub fn observed_conversation(i: u8) -> ConversationId {
    ConversationId::from_uuid(pool_uuid(0x74, i % OBSERVED_CONVERSATIONS))
}

/// The app that calls when a step's caller is an app.
pub fn app() -> AppId {
    AppId::from_uuid(pool_uuid(0x75, 0))
}

/// The Wix user that calls when a step's caller is a Wix user.
pub fn wix_user() -> WixUserId {
    WixUserId::from_uuid(pool_uuid(0x76, 0))
}

/// The settings of the site every history runs on.
pub fn site_config() -> InboxConfig {
    InboxConfig::new(SiteId::new("site-a"), [7; 16])
}

/// A disagreement between the engine and the model, or a broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("after step {step}: {what}")]
pub struct Mismatch {
    /// How many steps had run (0: before the first).
    pub step: usize,
    /// What differed, with both sides.
    pub what: String,
}

/// A deterministic shuffle of `items` with some repeated (splitmix64 from `seed`): an
/// arrival order a replica may see.
pub fn shuffled_with_duplicates<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out: Vec<T> = items.to_vec();
    for i in (1..out.len()).rev() {
        let j = usize::try_from(next() % (i as u64 + 1)).unwrap_or(0);
        out.swap(i, j);
    }
    let extra = out.len() / 3;
    for _ in 0..extra {
        let len = out.len() as u64;
        let from = usize::try_from(next() % len).unwrap_or(0);
        let to = usize::try_from(next() % (len + 1)).unwrap_or(0);
        if let Some(item) = out.get(from).cloned() {
            out.insert(to, item);
        }
    }
    out
}

/// An open listing: the engine's cursor and the model's, and what the pages gave so far.
#[derive(Clone, Debug)]
struct Listing {
    asked: ConversationId,
    visibility: VisibilityFilter,
    order: SortOrder,
    limit: usize,
    engine_cursor: String,
    model_cursor: Cursor,
    got: Vec<MessageId>,
    /// The whole listing as the model had it at the first page.
    then: Vec<MessageId>,
    /// A fact at or below the watermark arrived after the first page, so the listing may
    /// differ from `then` (the model still says what it must be).
    late: bool,
}

/// A history being run through the engine and the model.
#[derive(Clone, Debug)]
pub struct Runner {
    population: Population,
    engine: Inbox,
    model: Model,
    ids: SequentialIds,
    now: i64,
    log: Vec<EventEnvelope>,
    conversations: Vec<ConversationId>,
    messages: Vec<MessageId>,
    merges: Vec<(Vec<ConversationId>, ConversationId)>,
    listings: [Option<Listing>; LISTINGS],
    /// The slot of the listing opened last (its watermark is what `Moment::Watermark` aims
    /// at).
    last_opened: Option<usize>,
    observed_events: u128,
    steps: usize,
    reached: BTreeSet<&'static str>,
}

fn mismatch(step: usize, what: impl Into<String>) -> Mismatch {
    Mismatch {
        step,
        what: what.into(),
    }
}

impl Runner {
    /// A runner on an empty site, for a history of this population.
    pub fn new(population: Population) -> Self {
        Runner {
            population,
            engine: Inbox::new(site_config()),
            model: Model::new(site_config()),
            ids: SequentialIds::default(),
            now: START,
            log: Vec::new(),
            conversations: Vec::new(),
            messages: Vec::new(),
            merges: Vec::new(),
            listings: [None, None, None],
            last_opened: None,
            observed_events: 0,
            steps: 0,
            reached: BTreeSet::new(),
        }
    }

    /// The engine's state.
    pub fn engine(&self) -> &Inbox {
        &self.engine
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Every event applied so far, in order, repeats included.
    pub fn log(&self) -> &[EventEnvelope] {
        &self.log
    }

    /// The hard cases this history reached (names from [`HARD_CASES`]): what a test of the
    /// generators counts, so that they cannot silently stop reaching them.
    pub fn reached(&self) -> &BTreeSet<&'static str> {
        &self.reached
    }

    fn fail(&self, what: impl Into<String>) -> Mismatch {
        mismatch(self.steps, what)
    }

    /// Plays one step on both and compares what it produced; then compares the states.
    pub fn step(&mut self, step: &Step) -> Result<(), Mismatch> {
        match step {
            Step::Command {
                clock,
                caller,
                command,
            } => {
                self.move_clock(*clock);
                let caller = match caller % 3 {
                    0 => Caller::Anonymous,
                    1 => Caller::App(app()),
                    _ => Caller::WixUser(wix_user()),
                };
                let command = self.command(command);
                self.execute(&command, caller)?;
            }
            Step::Observe(o) => {
                if let Some(event) = self.observed(o) {
                    self.observe(event);
                }
            }
            Step::Redeliver(i) => {
                if !self.log.is_empty() {
                    let i = usize::from(*i) % self.log.len();
                    if let Some(e) = self.log.get(i).cloned() {
                        self.fold(e);
                    }
                }
            }
            Step::Page(p) => self.page(p)?,
        }
        self.steps += 1;
        self.check_state()
    }

    /// Runs every step, then the final checks of [`Runner::check_folds`] with these seeds.
    pub fn run(population: Population, steps: &[Step], seeds: &[u64]) -> Result<Runner, Mismatch> {
        let mut runner = Runner::new(population);
        for s in steps {
            runner.step(s)?;
        }
        runner.check_folds(seeds)?;
        Ok(runner)
    }

    fn move_clock(&mut self, clock: Clock) {
        self.now = match clock {
            Clock::Still => self.now,
            Clock::Forward(d) => self.now.saturating_add(i64::from(d)),
            Clock::Back(d) => self.now.saturating_sub(i64::from(d)),
            Clock::Jump => self.now.saturating_add(60_000_000),
            Clock::Extreme(k) => pick(&EXTREMES, k),
        };
    }

    fn conversation_ref(&self, i: u8) -> ConversationId {
        let n = self.conversations.len() + usize::from(OBSERVED_CONVERSATIONS);
        let k = usize::from(i) % n;
        match self.conversations.get(k) {
            Some(c) => *c,
            None => {
                let extra = k - self.conversations.len();
                observed_conversation(u8::try_from(extra).unwrap_or(0))
            }
        }
    }

    fn message_ref(&self, i: u8) -> Option<MessageId> {
        if self.messages.is_empty() {
            return None;
        }
        self.messages
            .get(usize::from(i) % self.messages.len())
            .copied()
    }

    fn who(&self, who: Who) -> ParticipantId {
        match who {
            Who::Visitor(i) => ParticipantId::Visitor(visitor(i)),
            Who::Contact(i) => ParticipantId::Contact(contact(i)),
            Who::Member(i) => ParticipantId::Member(member(i)),
        }
    }

    fn moment(&self, m: Moment) -> Sequence {
        let clock = self.engine.last_sequence().0;
        Sequence(match m {
            Moment::Next(n) => clock.saturating_add(1 + i64::from(n)),
            Moment::Late(n) => clock.saturating_sub(i64::from(n)),
            Moment::Watermark(d) => {
                let w = self
                    .last_opened
                    .and_then(|slot| self.listings.get(slot))
                    .and_then(|l| l.as_ref())
                    .map_or(clock, |l| l.model_cursor.watermark.0);
                w.saturating_add(i64::from(d))
            }
            Moment::Extreme(k) => pick(&EXTREMES, k),
        })
    }

    // ---------------------------------------------------------------------------------------
    // commands

    fn command(&self, c: &CommandStep) -> Command {
        match c {
            CommandStep::CreateContact {
                contact: i,
                named,
                email,
                phone,
                allow_duplicates,
            } => Command::CreateContact {
                contact_id: contact(*i),
                draft: ContactDraft {
                    name: ContactName {
                        first: named.then(|| format!("c{}", i % CONTACTS)),
                        last: None,
                    },
                    emails: email
                        .map(|e| ContactEmail {
                            email: pick(&EMAILS, e).to_owned(),
                            tag: EntryTag::Main,
                            primary: true,
                        })
                        .into_iter()
                        .collect(),
                    phones: phone
                        .map(|p| ContactPhone {
                            phone: pick(&PHONES, p).to_owned(),
                            tag: EntryTag::Main,
                            primary: false,
                        })
                        .into_iter()
                        .collect(),
                    details: Default::default(),
                    source: Default::default(),
                    allow_duplicates: *allow_duplicates,
                },
            },
            CommandStep::UpdateContact {
                contact: i,
                name,
                emails,
                labels,
                stale,
                allow_duplicates,
                field,
            } => {
                let id = contact(*i);
                let revision = self.engine.contacts().get(id).map_or(1, |c| c.revision);
                Command::UpdateContact {
                    contact_id: id,
                    expected_revision: if *stale {
                        revision.wrapping_add(1)
                    } else {
                        revision
                    },
                    patch: ContactPatch {
                        name: name.map(|rename| ContactName {
                            first: rename.then(|| format!("u{}", i % CONTACTS)),
                            last: None,
                        }),
                        emails: emails.map(|e| {
                            e.map(|e| ContactEmail {
                                email: pick(&EMAILS, e).to_owned(),
                                tag: EntryTag::Work,
                                primary: true,
                            })
                            .into_iter()
                            .collect()
                        }),
                        labels: labels.map(|bits| label_set(&[bits])),
                        extended_fields: field
                            .iter()
                            .map(|(k, v)| {
                                (pick(&FIELD_KEYS, *k).to_owned(), Some(field_value(*k, *v)))
                            })
                            .collect(),
                        ..ContactPatch::default()
                    },
                    allow_duplicates: *allow_duplicates,
                }
            }
            CommandStep::Label {
                contact: i,
                add,
                remove,
            } => Command::LabelContact {
                contact_id: contact(*i),
                add: add.iter().map(|k| pick(&LABELS, *k).to_owned()).collect(),
                remove: remove
                    .iter()
                    .map(|k| pick(&LABELS, *k).to_owned())
                    .collect(),
            },
            CommandStep::DeleteContact { contact: i } => Command::DeleteContact {
                contact_id: contact(*i),
            },
            CommandStep::RevertMerge { conversation } => Command::RevertConversationMerge {
                conversation: self.conversation_ref(*conversation),
            },
            CommandStep::DefineLabel { name } => Command::FindOrCreateLabel {
                display_name: pick(&LABEL_NAMES, *name).to_owned(),
            },
            CommandStep::RenameLabel { label, name } => Command::RenameLabel {
                key: pick(&CATALOG_LABELS, *label).to_owned(),
                display_name: pick(&LABEL_NAMES, *name).to_owned(),
            },
            CommandStep::DeleteLabel { label } => Command::DeleteLabel {
                key: pick(&CATALOG_LABELS, *label).to_owned(),
            },
            CommandStep::DefineField { name, data_type } => Command::FindOrCreateExtendedField {
                display_name: pick(&FIELD_NAMES, *name).to_owned(),
                data_type: if *data_type < 4 {
                    pick(&DATA_TYPES, *data_type)
                } else {
                    pick(&NATURAL_TYPES, *name)
                },
            },
            CommandStep::RenameField { field, name } => Command::RenameExtendedField {
                key: pick(&FIELD_KEYS, *field).to_owned(),
                display_name: pick(&FIELD_NAMES, *name).to_owned(),
            },
            CommandStep::DeleteField { field } => Command::DeleteExtendedField {
                key: pick(&FIELD_KEYS, *field).to_owned(),
            },
            CommandStep::GetOrCreate(who) => Command::GetOrCreateConversation {
                participant: self.who(*who),
            },
            CommandStep::Identify {
                visitor: v,
                contact: c,
            } => Command::IdentifyVisitor {
                visitor: visitor(*v),
                contact: contact(*c),
            },
            CommandStep::Register {
                member: m,
                contact: c,
                email,
            } => Command::RegisterMember {
                member: member(*m),
                contact: contact(*c),
                login_email: email.map(|e| pick(&LOGIN_EMAILS, e).to_owned()),
            },
            CommandStep::MergeContacts {
                target,
                sources,
                stale,
            } => {
                let target = contact(*target);
                let revision = self.engine.contacts().get(target).map_or(1, |c| c.revision);
                Command::MergeContacts {
                    target,
                    expected_revision: if *stale {
                        revision.wrapping_sub(1)
                    } else {
                        revision
                    },
                    sources: sources.iter().map(|s| contact(*s)).collect(),
                }
            }
            CommandStep::Send {
                conversation,
                kind,
                text,
                visibility,
                to_participant,
                send_as,
            } => Command::SendMessage {
                conversation_id: self.conversation_ref(*conversation),
                message: draft(
                    *kind,
                    *text,
                    match visibility % 7 {
                        0 | 5 => None,
                        1 => Some(Visibility::BusinessAndParticipant),
                        4 => Some(Visibility::Unknown),
                        _ => Some(Visibility::Business),
                    },
                    *to_participant,
                ),
                send_as: match send_as % 3 {
                    0 => SendAs::Caller,
                    1 => SendAs::Participant,
                    _ => SendAs::BusinessUser,
                },
            },
            CommandStep::Interact {
                conversation,
                message,
                real_button,
            } => Command::InteractWithButton {
                conversation_id: self.conversation_ref(*conversation),
                message_id: self.message_ref(*message).unwrap_or(MessageId(1)),
                interaction_id: if *real_button { "ok" } else { "nope" }.to_owned(),
            },
            CommandStep::Erase(who) => Command::EraseParticipant {
                participant: self.who(*who),
            },
        }
    }

    fn execute(&mut self, command: &Command, caller: Caller) -> Result<(), Mismatch> {
        let ctx = Context {
            now: Timestamp::from_micros(self.now),
            caller,
        };
        let mut model_ids = self.ids.clone();
        let expected = self.model.decide(command, &ctx, &mut model_ids);
        let before = self.engine.clone();
        let clock_before = self.engine.last_sequence();
        let got = self.engine.execute(command, &ctx, &mut self.ids);
        let got_events: Result<Vec<Event>, _> = got
            .as_ref()
            .map(|es| es.iter().map(|e| e.event.clone()).collect())
            .map_err(Clone::clone);
        if got_events != expected {
            return Err(self.fail(format!(
                "{command:?} as {caller:?} at {}:\n  engine decided {got_events:?}\n  model  decided {expected:?}",
                self.now
            )));
        }
        match (&got, command) {
            (Ok(es), Command::UpdateContact { patch, .. }) if !es.is_empty() => {
                self.reached.insert("a contact updated");
                if !patch.extended_fields.is_empty() {
                    self.reached.insert("an extended field value set");
                }
            }
            (Ok(es), Command::LabelContact { .. }) if !es.is_empty() => {
                self.reached.insert("a contact's labels changed");
            }
            (Ok(es), Command::DeleteContact { .. }) if !es.is_empty() => {
                self.reached.insert("a contact deleted");
            }
            (Ok(es), Command::RevertConversationMerge { .. }) if !es.is_empty() => {
                self.reached.insert("a merge reverted");
            }
            (Err(inbox_core::Rejection::RevertMerge(e)), _) => {
                self.reached.insert(match e {
                    inbox_core::RevertMergeError::SamePerson { .. } => {
                        "a revert refused: one person's conversations"
                    }
                    inbox_core::RevertMergeError::LaterMergeDepends { .. } => {
                        "a revert refused: a later merge depends on it"
                    }
                    inbox_core::RevertMergeError::AlreadyReverted { .. } => {
                        "a revert refused: reverted already"
                    }
                    inbox_core::RevertMergeError::NotMerged(_) => "a revert refused: not merged",
                });
            }
            (Ok(es), Command::FindOrCreateLabel { .. }) if !es.is_empty() => {
                self.reached.insert("a label made");
            }
            (Ok(es), Command::DeleteLabel { .. } | Command::DeleteExtendedField { .. })
                if es.len() > 1 =>
            {
                self.reached
                    .insert("a label or field deleted off a contact");
            }
            (
                Err(inbox_core::Rejection::LabelContact(
                    inbox_core::contacts::LabelContactError::UnknownLabel(_),
                )),
                _,
            ) => {
                self.reached.insert("an unknown label refused");
            }
            (
                Err(inbox_core::Rejection::Catalog(inbox_core::catalog::CatalogError::ReadOnly {
                    ..
                })),
                _,
            ) => {
                self.reached.insert("a Wix label left unchanged");
            }
            (
                Err(inbox_core::Rejection::DeleteContact(
                    inbox_core::contacts::DeleteContactError::IsMember { .. },
                )),
                _,
            ) => {
                self.reached.insert("a member's contact not deleted");
            }
            _ => {}
        }
        match got {
            Err(r) => {
                self.reached
                    .insert(if r == inbox_core::Rejection::ClockExhausted {
                        "a command refused because the clock is exhausted"
                    } else {
                        "a command refused"
                    });
                if self.engine != before {
                    return Err(self.fail(format!("refused {command:?} changed the state")));
                }
            }
            Ok(envelopes) => {
                for e in &envelopes {
                    // 3 and 10: a decided message is above everything before it and keeps
                    // the conversation it was sent to.
                    if let Event::MessageSent { message } = &e.event {
                        if Some(message.sequence) > Sequence::next_after(clock_before, ctx.now) {
                            self.reached
                                .insert("a decided message skipped an id an observed one took");
                        }
                        if message.sequence <= clock_before {
                            return Err(self.fail(format!(
                                "decided message {:?} has sequence {:?}, not above the clock {clock_before:?}",
                                message.id, message.sequence
                            )));
                        }
                        if let Command::SendMessage {
                            conversation_id, ..
                        } = command
                            && message.conversation_id != *conversation_id
                        {
                            return Err(self.fail("a decided message lost its provenance"));
                        }
                    }
                    if matches!(e.event, Event::ButtonInteracted { .. }) {
                        self.reached.insert("a button click accepted");
                    }
                    self.note(e);
                    self.model.apply(&e.event);
                    self.log.push(e.clone());
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // observed events

    fn observed(&self, o: &ObservedStep) -> Option<Event> {
        Some(match o {
            ObservedStep::Message {
                conversation,
                key,
                at,
                dated,
                business_only,
                sender,
                text,
            } => {
                let sequence = self.moment(*at);
                let id = match key {
                    MessageKey::Pool(k) => MessageId(1_000 + u64::from(k % 6)),
                    MessageKey::Seen(i) => self.message_ref(*i)?,
                    MessageKey::Next(n) => MessageId(
                        u64::try_from(self.engine.last_sequence().0)
                            .unwrap_or(0)
                            .saturating_add(1 + u64::from(*n)),
                    ),
                };
                let sender = match sender {
                    None => Sender::Unknown,
                    Some(Who::Visitor(i)) => Sender::Visitor(visitor(*i)),
                    Some(Who::Contact(i)) => Sender::Contact(contact(*i)),
                    Some(Who::Member(i)) => Sender::Member {
                        member: member(*i),
                        contact: Some(contact(*i)),
                    },
                };
                Event::MessageSent {
                    message: Message {
                        id,
                        sequence,
                        created_date: if *dated {
                            Timestamp::from_micros(sequence.0)
                        } else {
                            Timestamp::from_micros(START - 17)
                        },
                        conversation_id: self.conversation_ref(*conversation),
                        direction: if sender == Sender::Unknown {
                            Direction::BusinessToParticipant
                        } else {
                            Direction::ParticipantToBusiness
                        },
                        sender,
                        target_channels: Default::default(),
                        source_channel: None,
                        app_id: None,
                        visibility: if *business_only {
                            Visibility::Business
                        } else {
                            Visibility::BusinessAndParticipant
                        },
                        silent: false,
                        content: observed_content(*text),
                        badges: Box::new([]),
                    },
                }
            }
            ObservedStep::Merge {
                sources,
                target,
                at,
            } => Event::ConversationsMerged {
                sources: sources.iter().map(|s| self.conversation_ref(*s)).collect(),
                target: self.conversation_ref(*target),
                stamp: self.moment(*at),
            },
            ObservedStep::MergeAgain { which, at } => {
                if self.merges.is_empty() {
                    return None;
                }
                let (sources, target) = self
                    .merges
                    .get(usize::from(*which) % self.merges.len())?
                    .clone();
                Event::ConversationsMerged {
                    sources,
                    target,
                    stamp: self.moment(*at),
                }
            }
            ObservedStep::Start { conversation, who } => Event::ConversationStarted {
                conversation_id: self.conversation_ref(*conversation),
                participant: self.who(*who),
            },
            ObservedStep::Registration {
                member: m,
                contact: c,
                email,
                at,
            } => Event::MemberRegistered {
                member: member(*m),
                contact: contact(*c),
                login_email: email.map(|e| pick(&LOGIN_EMAILS, e).to_owned()),
                stamp: self.moment(*at),
            },
            ObservedStep::Identified {
                visitor: v,
                contact: c,
            } => Event::VisitorIdentified {
                visitor: visitor(*v),
                contact: contact(*c),
            },
            ObservedStep::Contact {
                contact: c,
                revision,
                email,
            } => {
                let contact = observed_contact(*c, *revision, *email);
                if contact.revision == 1 {
                    Event::ContactCreated { contact }
                } else {
                    Event::ContactUpdated { contact }
                }
            }
            ObservedStep::ContactDeleted {
                contact: c,
                revision,
            } => Event::ContactDeleted {
                contact_id: contact(*c),
                revision: u64::from(*revision),
            },
            ObservedStep::ContactsMerged {
                target,
                sources,
                revision,
            } => Event::ContactsMerged {
                target: observed_contact(*target, *revision, None),
                sources: sources.iter().map(|s| contact(*s)).collect(),
            },
            ObservedStep::Erasure {
                conversations,
                up_to,
                contact: c,
            } => Event::ParticipantErased {
                participant: ParticipantId::Contact(contact(c.unwrap_or(0))),
                conversations: conversations
                    .iter()
                    .map(|i| self.conversation_ref(*i))
                    .collect(),
                up_to: self.moment(*up_to),
                contact: c.map(|c| Contact {
                    name: ContactName::default(),
                    emails: Vec::new(),
                    phones: Vec::new(),
                    ..observed_contact(c, 5, None)
                }),
            },
            ObservedStep::Click {
                conversation,
                message,
            } => Event::ButtonInteracted {
                conversation_id: self.conversation_ref(*conversation),
                message_id: self.message_ref(*message)?,
                interaction_id: "ok".to_owned(),
                app_id: Some(app()),
                interacted_by: Sender::Unknown,
            },
            ObservedStep::MergeReverted { which, at } => {
                let merges: Vec<(ConversationId, Sequence, ConversationId)> = self
                    .log
                    .iter()
                    .filter_map(|e| match &e.event {
                        Event::ConversationsMerged {
                            sources,
                            target,
                            stamp,
                        } => Some(
                            sources
                                .iter()
                                .map(|s| (*s, *stamp, *target))
                                .collect::<Vec<_>>(),
                        ),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                let n = merges.len().max(1);
                let (source, merged_at, target) = *merges.get(usize::from(*which) % n)?;
                Event::ConversationMergeReverted {
                    source,
                    target,
                    merged_at,
                    stamp: self.moment(*at),
                }
            }
            ObservedStep::Definition {
                field,
                key,
                name,
                deleted,
                at,
            } => {
                let stamp = self.moment(*at);
                let dated = Timestamp::from_micros(stamp.0);
                match (*field, *deleted) {
                    (false, true) => Event::LabelDeleted {
                        key: pick(&CATALOG_LABELS, *key).to_owned(),
                        stamp,
                    },
                    (true, true) => Event::ExtendedFieldDeleted {
                        key: pick(&FIELD_KEYS, *key).to_owned(),
                        stamp,
                    },
                    (false, false) => {
                        let key = pick(&CATALOG_LABELS, *key);
                        Event::LabelSaved {
                            label: LabelDefinition {
                                key: key.to_owned(),
                                display_name: pick(&LABEL_NAMES, *name).to_owned(),
                                label_type: if key.starts_with("custom.") {
                                    LabelType::UserDefined
                                } else {
                                    LabelType::System
                                },
                                created_date: Timestamp::from_micros(START),
                                updated_date: dated,
                            },
                            stamp,
                        }
                    }
                    (true, false) => Event::ExtendedFieldSaved {
                        field: FieldDefinition {
                            key: pick(&FIELD_KEYS, *key).to_owned(),
                            display_name: pick(&FIELD_NAMES, *name).to_owned(),
                            data_type: pick(&NATURAL_TYPES, *key),
                            field_type: FieldType::UserDefined,
                            description: None,
                            created_date: Timestamp::from_micros(START),
                            updated_date: dated,
                        },
                        stamp,
                    },
                }
            }
        })
    }

    fn observe(&mut self, event: Event) {
        self.observed_events += 1;
        let envelope = EventEnvelope::new(
            site_config().site,
            EventId::from_uuid(Uuid::from_u128((0x7e << 64) | self.observed_events)),
            Timestamp::from_micros(self.now),
            event,
        );
        self.fold(envelope);
    }

    fn fold(&mut self, envelope: EventEnvelope) {
        if let Event::ContactCreated { contact }
        | Event::ContactUpdated { contact }
        | Event::ContactsMerged {
            target: contact, ..
        } = &envelope.event
            && self.engine.contacts().is_deleted(contact.id)
        {
            self.reached.insert("a contact record after its deletion");
        }
        self.note(&envelope);
        self.engine.apply(&envelope);
        self.model.apply(&envelope.event);
        self.log.push(envelope);
    }

    /// Keeps the pools up to date, and marks the listings a late fact may change.
    fn note(&mut self, e: &EventEnvelope) {
        let mut named = Vec::new();
        let late_at: Option<Sequence> = match &e.event {
            Event::ConversationStarted {
                conversation_id, ..
            } => {
                named.push(*conversation_id);
                None
            }
            Event::MessageSent { message } => {
                named.push(message.conversation_id);
                if [i64::MAX, i64::MIN].contains(&message.sequence.0) {
                    self.reached.insert("a message at an extreme sequence");
                }
                if self.model.messages().any(|m| {
                    m.sequence == message.sequence && m.conversation_id != message.conversation_id
                }) {
                    self.reached.insert("a sequence tie across conversations");
                }
                let known = self.messages.contains(&message.id);
                if !known {
                    self.messages.push(message.id);
                }
                // Another version of a known message may move it anywhere.
                Some(if known {
                    Sequence(i64::MIN)
                } else {
                    message.sequence
                })
            }
            Event::ConversationsMerged {
                sources,
                target,
                stamp,
            } => {
                named.extend(sources.iter().copied());
                named.push(*target);
                if self.merges.contains(&(sources.clone(), *target)) {
                    self.reached.insert("a merge delivered again");
                } else {
                    self.merges.push((sources.clone(), *target));
                }
                if self
                    .log
                    .iter()
                    .any(|e| matches!(e.event, Event::ParticipantErased { .. }))
                {
                    self.reached.insert("a merge after an erasure");
                }
                Some(*stamp)
            }
            Event::ParticipantErased { conversations, .. } => {
                if conversations.len() > 1 {
                    self.reached.insert("an erasure of a merged conversation");
                }
                named.extend(conversations.iter().copied());
                None
            }
            Event::ConversationMergeReverted {
                source,
                target,
                stamp,
                ..
            } => {
                named.extend([*source, *target]);
                if self.listings.iter().flatten().next().is_some() {
                    self.reached.insert("a revert while a listing is open");
                }
                // A revert at or below a cursor's watermark changes what the cursor covers.
                Some(*stamp)
            }
            Event::LabelSaved {
                label: LabelDefinition { key, .. },
                ..
            }
            | Event::ExtendedFieldSaved {
                field: FieldDefinition { key, .. },
                ..
            } => {
                if self.log.iter().any(|l| {
                    matches!(&l.event, Event::LabelDeleted { key: k, .. }
                        | Event::ExtendedFieldDeleted { key: k, .. } if k == key)
                }) {
                    self.reached.insert("a definition saved after its deletion");
                }
                None
            }
            _ => None,
        };
        for c in named {
            if !self.conversations.contains(&c) {
                self.conversations.push(c);
            }
        }
        if let Some(at) = late_at {
            for l in self.listings.iter_mut().flatten() {
                if at <= l.model_cursor.watermark {
                    l.late = true;
                    if matches!(e.event, Event::ConversationsMerged { .. }) {
                        self.reached
                            .insert("a merge at or below an open cursor's watermark");
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // pages

    fn page(&mut self, p: &PageStep) -> Result<(), Mismatch> {
        let slot = usize::from(p.listing) % LISTINGS;
        let open = self.listings.get(slot).cloned().flatten();
        let (asked, visibility, order, limit, engine_cursor, model_cursor) = match &open {
            Some(l) => (
                l.asked,
                l.visibility,
                l.order,
                l.limit,
                Some(l.engine_cursor.clone()),
                Some(l.model_cursor),
            ),
            None => (
                self.conversation_ref(p.conversation),
                if p.participant_only {
                    VisibilityFilter::ParticipantVisible
                } else {
                    VisibilityFilter::All
                },
                if p.descending {
                    SortOrder::Desc
                } else {
                    SortOrder::Asc
                },
                usize::from(p.limit.clamp(1, 5)),
                None,
                None,
            ),
        };
        let got = self.engine.list_messages(&ListMessages {
            conversation_id: asked,
            visibility,
            order,
            limit: Some(limit),
            cursor: engine_cursor,
        });
        let request = PageRequest {
            conversation_id: asked,
            visibility,
            order,
            limit: Some(limit),
            cursor: model_cursor,
        };
        let want = self.model.list_messages(&request);
        let (page, model_page) = match (got, want) {
            (Err(g), Err(w)) if g == w => {
                if let Some(s) = self.listings.get_mut(slot) {
                    *s = None;
                }
                return Ok(());
            }
            (Ok(g), Ok(w)) => (g, w),
            (g, w) => {
                return Err(self.fail(format!(
                    "page of {asked:?} ({order:?}, {visibility:?}, {limit}, open: {}):\n  engine {g:?}\n  model  {w:?}",
                    open.is_some()
                )));
            }
        };
        if page.messages != model_page.messages
            || page.next_cursor.is_some() != model_page.next.is_some()
            || page.conversation_id != model_page.conversation_id
        {
            return Err(self.fail(format!(
                "page of {asked:?} ({order:?}, {visibility:?}, {limit}, open: {}):\n  engine {:?} more: {}\n  model  {:?} more: {}",
                open.is_some(),
                ids_of(page.messages.iter().copied()),
                page.next_cursor.is_some(),
                ids_of(model_page.messages.iter().copied()),
                model_page.next.is_some(),
            )));
        }
        // 9. Visibility.
        if visibility == VisibilityFilter::ParticipantVisible
            && page.messages.iter().any(|m| !m.is_visible_to_participant())
        {
            return Err(self.fail("a participant-visible page shows a business-only message"));
        }
        if page
            .messages
            .iter()
            .any(|m| self.model.root_of(m.conversation_id) != page.conversation_id)
        {
            self.reached
                .insert("a page with messages a later merge moved elsewhere");
        }
        let ids = ids_of(page.messages.iter().copied());
        let mut listing = match open {
            Some(l) => l,
            None => {
                let then = self.whole_listing(&request);
                let Some(cursor) = model_page.next else {
                    // One page was all: it must be the whole listing.
                    if ids != then {
                        return Err(self.fail("a single page is not the whole listing"));
                    }
                    return Ok(());
                };
                self.last_opened = Some(slot);
                Listing {
                    asked,
                    visibility,
                    order,
                    limit,
                    engine_cursor: String::new(),
                    model_cursor: cursor,
                    got: Vec::new(),
                    then,
                    late: false,
                }
            }
        };
        listing.got.extend(ids);
        match (page.next_cursor, model_page.next) {
            (Some(e), Some(m)) => {
                listing.engine_cursor = e;
                listing.model_cursor = m;
                if let Some(s) = self.listings.get_mut(slot) {
                    *s = Some(listing);
                }
            }
            _ => {
                // 8. Stable paging: with nothing at or below the watermark arriving since the
                // first page, the pages hold exactly what was there then, once each, in order.
                self.reached.insert(if listing.late {
                    "a listing paged to its end past late facts"
                } else {
                    "a listing paged to its end"
                });
                if !listing.late && listing.got != listing.then {
                    return Err(self.fail(format!(
                        "paging {:?} gave {:?}, but at the first page the listing was {:?}",
                        listing.asked, listing.got, listing.then
                    )));
                }
                if let Some(s) = self.listings.get_mut(slot) {
                    *s = None;
                }
            }
        }
        Ok(())
    }

    /// Every page of a listing in the model, from its first.
    fn whole_listing(&self, first: &PageRequest) -> Vec<MessageId> {
        let mut out = Vec::new();
        let mut request = PageRequest {
            limit: Some(inbox_core::MAX_PAGE_LIMIT),
            cursor: None,
            ..first.clone()
        };
        while let Ok(page) = self.model.list_messages(&request) {
            out.extend(page.messages.iter().map(|m| m.id));
            match page.next {
                Some(c) => request.cursor = Some(c),
                None => break,
            }
        }
        out
    }

    // ---------------------------------------------------------------------------------------
    // comparisons

    /// Compares the engine with the model on every query ([`agree`]); for a decided history,
    /// also what only holds there.
    pub fn check_state(&mut self) -> Result<(), Mismatch> {
        agree(&self.engine, &self.model).map_err(|what| self.fail(what))?;
        for a in self.engine.anomalies() {
            self.reached.insert(match a {
                inbox_core::Anomaly::ConflictingMergeTargets { .. } => {
                    "a conversation merged into several targets"
                }
                inbox_core::Anomaly::MergeCycle { .. } => "a cycle of conversation merges",
                inbox_core::Anomaly::SelfMerge { .. } => "a conversation merged into itself",
                inbox_core::Anomaly::ConflictingMessage { .. } => "two versions of a message",
                inbox_core::Anomaly::ContactMergeCycle { .. } => "a cycle of contact merges",
                inbox_core::Anomaly::ConflictingIdentity { .. } => "conflicting identity facts",
            });
        }
        if self
            .model
            .conversations()
            .into_iter()
            .any(|c| self.model.merge_depth(c) >= 3)
        {
            self.reached.insert("a chain of three or more merges");
        }
        if self.population == Population::Decided {
            self.check_decided()?;
        }
        Ok(())
    }

    /// What holds of a history the engine decided alone, beyond agreeing with the model.
    fn check_decided(&self) -> Result<(), Mismatch> {
        let e = &self.engine;
        if let Some(a) = e.anomalies().next() {
            return Err(self.fail(format!("a decided history has an anomaly: {a:?}")));
        }
        for c in e.live_conversations() {
            // 2 and 3: chronological, and sequence strictly increasing.
            let msgs: Vec<&Message> = e.messages_of(c).collect();
            for pair in msgs.windows(2) {
                if let [a, b] = pair
                    && (a.sequence >= b.sequence || a.created_date > b.created_date)
                {
                    return Err(self.fail(format!(
                        "{c:?}: {:?} then {:?} is not chronological",
                        a.id, b.id
                    )));
                }
            }
        }
        // 7. Every id of one person resolves to the same live conversation.
        let mut of_person: BTreeMap<ParticipantId, BTreeSet<ConversationId>> = BTreeMap::new();
        let people = (0..VISITORS)
            .map(|i| ParticipantId::Visitor(visitor(i)))
            .chain((0..CONTACTS).map(|i| ParticipantId::Contact(contact(i))))
            .chain((0..MEMBERS).map(|i| ParticipantId::Member(member(i))));
        for p in people {
            if let Some(c) = e.live_conversation_of(p) {
                if e.root_of(c) != c {
                    return Err(self.fail(format!("{p:?} resolves to a merged conversation")));
                }
                of_person
                    .entry(e.advanced_identity(p))
                    .or_default()
                    .insert(c);
            }
        }
        if let Some((p, cs)) = of_person.iter().find(|(_, cs)| cs.len() > 1) {
            return Err(self.fail(format!(
                "the ids of {p:?} resolve to several live conversations: {cs:?}"
            )));
        }
        Ok(())
    }

    /// The log folded again: in shuffled orders with repeats, by value in order
    /// ([`Inbox::apply_owned`], what a replay does), resumed from a state midway, and all of
    /// it again over the live state. Each must equal the live engine, and the model of the
    /// shuffled log must be the model.
    pub fn check_folds(&self, seeds: &[u64]) -> Result<(), Mismatch> {
        let fold = |events: &[EventEnvelope]| {
            let mut inbox = Inbox::new(site_config());
            for e in events {
                inbox.apply(e);
            }
            inbox
        };
        for seed in seeds {
            let arrived = shuffled_with_duplicates(&self.log, *seed);
            if fold(&arrived) != self.engine {
                return Err(self.fail(format!(
                    "the log folded in another order (seed {seed}) gives another state"
                )));
            }
            let cut = usize::try_from(*seed % (arrived.len() as u64 + 1)).unwrap_or(0);
            let (head, tail) = arrived.split_at(cut.min(arrived.len()));
            let mut resumed = fold(head);
            for e in tail {
                resumed.apply(e);
            }
            if resumed != self.engine {
                return Err(self.fail(format!("a state resumed at {cut} differs")));
            }
            let model = Model::of(site_config(), arrived.iter().map(|e| &e.event));
            if model.anomalies() != self.model.anomalies()
                || model.live_conversations() != self.model.live_conversations()
            {
                return Err(self.fail("the model of a shuffled log differs"));
            }
        }
        let mut replayed = Inbox::new(site_config());
        for e in &self.log {
            replayed.apply_owned(e.event.clone());
        }
        if replayed != self.engine {
            return Err(self.fail("replaying the log by value gives another state"));
        }
        let mut again = self.engine.clone();
        for e in &self.log {
            again.apply(e);
        }
        if again != self.engine {
            return Err(self.fail("folding the log again changes the state"));
        }
        Ok(())
    }
}

/// Compares an engine's state with the model on every query: the clock, every message, the
/// live conversations and their messages (each message in exactly one), every conversation
/// any event names (root and view), the identity and live conversation of every id of the
/// pools, contacts, members, visitors, clicks and anomalies. `Err` says what differed.
pub fn agree(e: &Inbox, m: &Model) -> Result<(), String> {
    macro_rules! same {
        ($what:expr, $got:expr, $want:expr) => {{
            let (got, want) = ($got, $want);
            if got != want {
                return Err(format!(
                    "{}:\n  engine {:?}\n  model  {:?}",
                    $what, got, want
                ));
            }
        }};
    }
    same!("last_sequence", e.last_sequence(), m.last_sequence());
    same!("message_count", e.message_count(), m.message_count());
    for msg in m.messages() {
        same!(
            format!("message {:?}", msg.id),
            e.message(msg.id),
            Some(msg)
        );
    }
    let live: Vec<ConversationId> = e.live_conversations().collect();
    same!("live conversations", &live, &m.live_conversations());
    // 1. Nothing lost, nothing doubled: every message in exactly one live conversation.
    let mut homes: BTreeMap<MessageId, usize> = BTreeMap::new();
    for c in &live {
        let got: Vec<&Message> = e.messages_of(*c).collect();
        same!(format!("messages of {c:?}"), &got, &m.messages_of(*c));
        for msg in got {
            *homes.entry(msg.id).or_default() += 1;
        }
    }
    if homes.len() != e.message_count() || homes.values().any(|n| *n != 1) {
        return Err("a message is in no live conversation, or in several".to_owned());
    }
    for c in m
        .conversations()
        .into_iter()
        .chain([observed_conversation(4)])
    {
        same!(format!("root of {c:?}"), e.root_of(c), m.root_of(c));
        same!(
            format!("conversation {c:?}"),
            e.conversation(c),
            m.conversation(c)
        );
    }
    let people: Vec<ParticipantId> = (0..VISITORS)
        .map(|i| ParticipantId::Visitor(visitor(i)))
        .chain((0..CONTACTS).map(|i| ParticipantId::Contact(contact(i))))
        .chain((0..MEMBERS).map(|i| ParticipantId::Member(member(i))))
        .collect();
    for p in &people {
        same!(
            format!("advanced identity of {p:?}"),
            e.advanced_identity(*p),
            m.advanced_identity(*p)
        );
        same!(
            format!("live conversation of {p:?}"),
            e.live_conversation_of(*p),
            m.live_conversation_of(*p)
        );
    }
    let contacts: Vec<&Contact> = e.contacts().iter().collect();
    same!("contacts", &contacts, &m.contacts());
    for i in 0..CONTACTS {
        let c = contact(i);
        same!(format!("contact {c:?}"), e.contacts().get(c), m.contact(c));
        same!(
            format!("resolve {c:?}"),
            e.contacts().resolve(c),
            m.resolve_contact(c)
        );
        same!(
            format!("merged_into {c:?}"),
            e.contacts().merged_into(c),
            m.contact_merged_into(c)
        );
        same!(format!("member of {c:?}"), e.member_of(c), m.member_of(c));
    }
    for email in EMAILS {
        let got: Vec<ContactId> = e.contacts().contacts_with_email(email).collect();
        same!(
            format!("contacts with {email:?}"),
            got,
            m.contacts_with_email(email)
        );
    }
    for i in 0..MEMBERS {
        same!(
            format!("member {i}"),
            e.member(member(i)),
            m.member(member(i))
        );
    }
    for i in 0..VISITORS {
        same!(
            format!("contact of visitor {i}"),
            e.contact_of_visitor(visitor(i)),
            m.contact_of_visitor(visitor(i))
        );
    }
    let labels: Vec<_> = e.contacts().catalog().labels().iter().collect();
    same!("labels", &labels, &m.labels());
    let fields: Vec<_> = e.contacts().catalog().fields().iter().collect();
    same!("extended fields", &fields, &m.fields());
    let interactions: Vec<_> = e.interactions().collect();
    same!("interactions", &interactions, &m.interactions());
    let mut anomalies: Vec<_> = e.anomalies().cloned().collect();
    anomalies.sort();
    same!("anomalies", &anomalies, &m.anomalies());
    Ok(())
}

/// The `i`-th item of a constant table, round and round.
fn pick<T: Copy + Default>(items: &[T], i: u8) -> T {
    items
        .get(usize::from(i) % items.len().max(1))
        .copied()
        .unwrap_or_default()
}

/// A message draft of this content and text: a template has a postback button `"ok"` and a
/// launch button; `visibility` as given (`None`: the default); the direction from
/// `to_participant`. What a send step asks for, and a helper for other generators.
pub fn draft(
    kind: ContentKind,
    text: TextKind,
    visibility: Option<Visibility>,
    to_participant: bool,
) -> MessageDraft {
    let body = text_of(text);
    let mut content = match kind {
        ContentKind::Text => ContentDraft {
            basic: Some(vec![BasicItem::Text(body.into())]),
            ..ContentDraft::default()
        },
        ContentKind::Template => ContentDraft {
            template: Some(TemplateDraft {
                title: Some(body),
                text_lines: vec!["one of".into()],
                buttons: vec![
                    ButtonDraft {
                        label: "OK".into(),
                        launch_url: None,
                        interaction_id: Some("ok".into()),
                    },
                    ButtonDraft {
                        label: "Site".into(),
                        launch_url: Some("https://example.com".into()),
                        interaction_id: None,
                    },
                ],
                ..TemplateDraft::default()
            }),
            ..ContentDraft::default()
        },
        ContentKind::Minimal => ContentDraft {
            minimal: Some(Minimal {
                text: body.into(),
                ..Minimal::default()
            }),
            ..ContentDraft::default()
        },
        ContentKind::Form => ContentDraft {
            form: Some(Form {
                fields: vec![FormField {
                    name: "size".into(),
                    value: body.into(),
                }],
                ..Form::default()
            }),
            ..ContentDraft::default()
        },
        ContentKind::Empty => ContentDraft::default(),
        ContentKind::System => ContentDraft {
            system: Some(System {
                text: "not for apps".into(),
                ..System::default()
            }),
            ..ContentDraft::default()
        },
    };
    content.preview_text = match text {
        TextKind::MaximalPreview => Some(preview(inbox_core::message::MAX_PREVIEW_TEXT)),
        TextKind::OverlongPreview => Some(preview(inbox_core::message::MAX_PREVIEW_TEXT + 1)),
        _ => None,
    };
    MessageDraft {
        content,
        visibility,
        direction: Some(if to_participant {
            Direction::BusinessToParticipant
        } else {
            Direction::ParticipantToBusiness
        }),
        ..MessageDraft::default()
    }
}

fn ids_of<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<MessageId> {
    messages.into_iter().map(|m| m.id).collect()
}

fn preview(n: usize) -> String {
    "é".repeat(n)
}

fn text_of(text: TextKind) -> String {
    match text {
        TextKind::Short(n) => format!("text {n}"),
        TextKind::Empty => String::new(),
        TextKind::MaximalPreview | TextKind::OverlongPreview => "with a preview".to_owned(),
    }
}

fn observed_content(text: TextKind) -> Content {
    let mut content = Content::text(text_of(text));
    let n = match text {
        TextKind::MaximalPreview => Some(inbox_core::message::MAX_PREVIEW_TEXT),
        TextKind::OverlongPreview => Some(inbox_core::message::MAX_PREVIEW_TEXT + 1),
        _ => None,
    };
    if let Some(n) = n {
        content.extras = Some(Box::new(ContentExtras {
            preview_text: Some(preview(n).into()),
            title: None,
        }));
    }
    content
}

/// The label keys of the pool whose bit is set in any of `bits` (well formed or not).
fn label_set(bits: &[u8]) -> std::collections::BTreeSet<String> {
    LABELS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits.iter().any(|b| b & (1 << i) != 0))
        .map(|(_, k)| (*k).to_owned())
        .collect()
}

fn observed_contact(c: u8, revision: u8, email: Option<u8>) -> Contact {
    let revision = u64::from(revision.clamp(1, 5));
    // Observed records carry labels too, so that a later revision's labels must win.
    let details = inbox_core::contacts::ContactDetails {
        labels: label_set(&[u8::try_from(revision).unwrap_or(0) & 0b11]),
        ..Default::default()
    };
    Contact {
        id: contact(c),
        revision,
        created_date: Timestamp::from_micros(START),
        updated_date: Timestamp::from_micros(START + i64::try_from(revision).unwrap_or(0)),
        details,
        source: Default::default(),
        last_activity: inbox_core::contacts::ContactActivity {
            at: Timestamp::from_micros(START),
            kind: inbox_core::contacts::ActivityType::ContactCreated,
        },
        name: ContactName {
            first: Some(format!("observed {}", c % CONTACTS)),
            last: None,
        },
        emails: email
            .map(|e| ContactEmail {
                email: pick(&EMAILS, e).trim().to_owned(),
                tag: EntryTag::Main,
                primary: true,
            })
            .into_iter()
            .collect(),
        phones: Vec::new(),
    }
}
