//! Histories: what happens to one site, step by step, and proptest strategies that reach the
//! hard cases.
//!
//! A [`Step`] names what it touches by small indices into pools (a handful of visitors,
//! contacts and members, and every conversation and message seen so far), which the
//! [`Runner`](crate::Runner) resolves against the history it has run, so that generated steps
//! keep hitting the same few ids: that is where merges chain, conflict and cycle, where a
//! message id comes twice, where sequences tie. Decided commands and events observed from
//! outside (as a webhook replica sees them) are mixed on one site.
//!
//! What the strategies reach, by construction:
//! * every command (contacts created with good, bad, duplicate and case-variant emails;
//!   contacts updated (renamed, emptied, emails replaced, labels replaced, stale revisions,
//!   members' primary emails), labelled and unlabelled with good and badly formed keys,
//!   deleted (members refused);
//!   get-or-create for visitors, contacts and members; identifications; registrations;
//!   contact merges, stale ones included; messages of every content type, both directions,
//!   both visibilities, sent as every `SendAs` by every kind of caller, to live and to merged
//!   ids; button clicks; erasures) and every event kind observed;
//! * chains of three or more merges, conflicting merges (one source into several targets)
//!   and cycles, of conversations and of contacts; the same merge delivered again with
//!   another stamp;
//! * stamps and sequences placed relative to the clock and to an open listing's watermark
//!   (just below, at and just above it), so merges meet a cursor's moment; ties of sequence
//!   across conversations; an observed message taking the id the engine would issue next;
//! * pages read between any two steps, several listings open at once;
//! * erasures before and after merges and identity changes;
//! * extremes: sequences and clocks at `i64::MIN`, `0`, `i64::MAX - 1` and `i64::MAX`, the
//!   clock stepping back, empty texts, texts and previews at their maximal length and one
//!   past it.

use proptest::collection::vec;
use proptest::prelude::*;

/// Which kinds of step a history is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Population {
    /// Decided commands only: the emulator's own history. Anomalies never happen, sequences
    /// strictly increase, and a cursor pages over exactly what was there at its first page.
    Decided,
    /// Observed events only: a replica's history (plus redeliveries and reads).
    Observed,
    /// Both on one site.
    Mixed,
}

/// One step of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Step {
    /// The caller's clock moves, then a command is decided and applied.
    Command {
        /// How the clock moves first.
        clock: Clock,
        /// Who asks: anonymous, an app or a Wix user (by index).
        caller: u8,
        /// What.
        command: CommandStep,
    },
    /// An event from outside, folded as it comes.
    Observe(ObservedStep),
    /// An event already in the log, delivered again (by index into the log).
    Redeliver(u16),
    /// A page of a listing: the next page of an open one, or the first of a new one.
    Page(PageStep),
}

/// How the caller's clock moves before a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Clock {
    /// Not at all (the hybrid clock must still move forward).
    Still,
    /// Forward by this many microseconds.
    Forward(u16),
    /// Back by this many microseconds.
    Back(u16),
    /// Forward by about a minute.
    Jump,
    /// To an extreme instant (index into [`EXTREMES`]).
    Extreme(u8),
}

/// Extreme values for clocks, sequences and stamps.
pub const EXTREMES: [i64; 6] = [i64::MAX, i64::MAX - 1, 0, 1, -1, i64::MIN];

/// A place on the sequence clock for an observed fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Moment {
    /// Just ahead of the site's clock: `clock + 1 + n`.
    Next(u8),
    /// Behind it: `clock - n` (late, or a tie at `n = 0`).
    Late(u8),
    /// Around the watermark of an open listing (or the clock if none is open): `w + d`.
    Watermark(i8),
    /// An extreme value (index into [`EXTREMES`]).
    Extreme(u8),
}

/// Who a step names, by index into the pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Who {
    /// A visitor of the pool.
    Visitor(u8),
    /// A contact of the pool.
    Contact(u8),
    /// A member of the pool.
    Member(u8),
}

/// Which content a message has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ContentKind {
    /// Basic text.
    Text,
    /// A template with a postback and a launch button.
    Template,
    /// Minimal.
    Minimal,
    /// A form.
    Form,
    /// Refused: no content type.
    Empty,
    /// Refused: apps cannot send `system`.
    System,
}

/// Which text a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TextKind {
    /// A short text with a number.
    Short(u8),
    /// The empty string.
    Empty,
    /// A preview text of the maximal length (256 characters, multi-byte).
    MaximalPreview,
    /// A preview text one character too long (refused).
    OverlongPreview,
}

/// A command, its ids by index into the pools.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CommandStep {
    /// Create Contact.
    CreateContact {
        /// The contact.
        contact: u8,
        /// A name, or none (with no email and no phone: refused).
        named: bool,
        /// An email of the small pool (some invalid, some case variants of others).
        email: Option<u8>,
        /// A phone of the small pool.
        phone: Option<u8>,
        /// Allow duplicate emails and phones.
        allow_duplicates: bool,
    },
    /// Get Or Create Conversation.
    GetOrCreate(Who),
    /// A visitor becomes a contact.
    Identify {
        /// The visitor.
        visitor: u8,
        /// The contact.
        contact: u8,
    },
    /// A contact registers as a member.
    Register {
        /// The member.
        member: u8,
        /// The contact.
        contact: u8,
        /// A login email of the pool, or none.
        email: Option<u8>,
    },
    /// Merge Contacts.
    MergeContacts {
        /// The target.
        target: u8,
        /// The sources (any: merged away, the target itself, twice...).
        sources: Vec<u8>,
        /// Give a stale revision.
        stale: bool,
    },
    /// Update Contact.
    UpdateContact {
        /// The contact (any: live, merged away, deleted, never created).
        contact: u8,
        /// Rename (`Some(true)`), clear the name (`Some(false)`), or leave it.
        name: Option<bool>,
        /// Replace the emails with one of the pool (`Some(Some(_))`), with none
        /// (`Some(None)`), or leave them.
        emails: Option<Option<u8>>,
        /// Replace the labels with those of the label pool whose bit is set.
        labels: Option<u8>,
        /// Give a stale revision.
        stale: bool,
        /// Allow duplicate emails.
        allow_duplicates: bool,
        /// Set an extended field of the field key pool to a value: of the value pool (some of
        /// the wrong type) below 6, else one of the type the field's name suggests.
        field: Option<(u8, u8)>,
    },
    /// Find Or Create Label, with a name of the label name pool.
    DefineLabel {
        /// The name.
        name: u8,
    },
    /// Rename Label.
    RenameLabel {
        /// A key of the catalog's label key pool.
        label: u8,
        /// A name of the label name pool.
        name: u8,
    },
    /// Delete Label.
    DeleteLabel {
        /// A key of the catalog's label key pool.
        label: u8,
    },
    /// Find Or Create Extended Field, with a name of the field name pool.
    DefineField {
        /// The name.
        name: u8,
        /// The data type: text, number, date, URL below 4, else the one its name suggests.
        data_type: u8,
    },
    /// Rename Extended Field.
    RenameField {
        /// A key of the field key pool.
        field: u8,
        /// A name of the field name pool.
        name: u8,
    },
    /// Delete Extended Field.
    DeleteField {
        /// A key of the field key pool.
        field: u8,
    },
    /// Revert the merge that holds a conversation (any id seen).
    RevertMerge {
        /// The conversation.
        conversation: u8,
    },
    /// Label and Unlabel Contact.
    Label {
        /// The contact.
        contact: u8,
        /// Keys of the label pool to add (some badly formed).
        add: Vec<u8>,
        /// Keys of the label pool to remove.
        remove: Vec<u8>,
    },
    /// Delete Contact.
    DeleteContact {
        /// The contact (members are refused).
        contact: u8,
    },
    /// Send Message.
    Send {
        /// The conversation (any id seen, live or merged away, or an unknown one).
        conversation: u8,
        /// The content type.
        kind: ContentKind,
        /// The text.
        text: TextKind,
        /// Visibility: default, both, business only, unknown (refused).
        visibility: u8,
        /// Business to participant, else participant to business.
        to_participant: bool,
        /// `SendAs`: caller, participant, business user.
        send_as: u8,
    },
    /// A participant clicks a button.
    Interact {
        /// The conversation it is clicked in (any id seen).
        conversation: u8,
        /// The message (any id seen).
        message: u8,
        /// The template's postback id, or one that does not exist.
        real_button: bool,
    },
    /// A privacy request.
    Erase(Who),
}

/// An event as it comes from outside, its ids by index into the pools.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ObservedStep {
    /// A message with its own id and sequence.
    Message {
        /// The conversation it was sent to.
        conversation: u8,
        /// Its id: a small pool, an id seen, or the one the engine issues next.
        key: MessageKey,
        /// Its sequence.
        at: Moment,
        /// The created date is the sequence's instant (else an arbitrary one).
        dated: bool,
        /// Business only.
        business_only: bool,
        /// Who sent it (`None`: unknown).
        sender: Option<Who>,
        /// Its text.
        text: TextKind,
    },
    /// Conversations merged.
    Merge {
        /// The sources.
        sources: Vec<u8>,
        /// The target.
        target: u8,
        /// The stamp.
        at: Moment,
    },
    /// A merge of the log delivered again with another stamp.
    MergeAgain {
        /// Which merge of the log (by index among merges).
        which: u8,
        /// The new stamp.
        at: Moment,
    },
    /// A conversation started for a participant.
    Start {
        /// The conversation.
        conversation: u8,
        /// For whom.
        who: Who,
    },
    /// A member registered, as a member's message reveals it.
    Registration {
        /// The member.
        member: u8,
        /// Its contact.
        contact: u8,
        /// A login email of the pool, or none.
        email: Option<u8>,
        /// The stamp.
        at: Moment,
    },
    /// A visitor identified as a contact.
    Identified {
        /// The visitor.
        visitor: u8,
        /// The contact.
        contact: u8,
    },
    /// A contact's record at some revision.
    Contact {
        /// The contact.
        contact: u8,
        /// Its revision (1 to 4).
        revision: u8,
        /// An email of the pool.
        email: Option<u8>,
    },
    /// A contact deleted.
    ContactDeleted {
        /// The contact.
        contact: u8,
        /// The revision it had (1 to 4).
        revision: u8,
    },
    /// Contacts merged.
    ContactsMerged {
        /// The target.
        target: u8,
        /// The sources.
        sources: Vec<u8>,
        /// The target's revision after the merge (1 to 4).
        revision: u8,
    },
    /// A privacy erasure.
    Erasure {
        /// The conversations it names.
        conversations: Vec<u8>,
        /// Its `up_to`.
        up_to: Moment,
        /// The erased contact's record, if any.
        contact: Option<u8>,
    },
    /// A button click.
    Click {
        /// The conversation.
        conversation: u8,
        /// The message (any id seen).
        message: u8,
    },
    /// A merge of the log reverted (a fact from outside: the engine's own reverts are
    /// commands).
    MergeReverted {
        /// Which merge of the log (by index among every source's merge).
        which: u8,
        /// The revert's stamp.
        at: Moment,
    },
    /// A label or extended field saved (made or renamed) or deleted, as Wix's events say.
    Definition {
        /// An extended field, else a label.
        field: bool,
        /// A key of the label or field key pool (the label pool has a system label).
        key: u8,
        /// A name of the name pool.
        name: u8,
        /// A deletion, else a save.
        deleted: bool,
        /// The stamp.
        at: Moment,
    },
}

/// How an observed message's id is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MessageKey {
    /// One of a small pool of ids (so they come again, as other versions).
    Pool(u8),
    /// An id already seen (decided or observed): another version of that message.
    Seen(u8),
    /// The id the engine would issue next (`clock + 1 + n`), so a decided message must skip
    /// it.
    Next(u8),
}

/// A page read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PageStep {
    /// Which listing (a few may be open at once).
    pub listing: u8,
    /// For a new listing: the conversation (any id seen).
    pub conversation: u8,
    /// For a new listing: 1 to 5 messages a page.
    pub limit: u8,
    /// For a new listing: newest first.
    pub descending: bool,
    /// For a new listing: participant-visible only.
    pub participant_only: bool,
}

// ---------------------------------------------------------------------------------------------
// strategies

/// Indices into a pool: small, so that steps collide.
fn ix() -> impl Strategy<Value = u8> {
    0u8..8
}

/// A [`Who`].
pub fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        2 => ix().prop_map(Who::Visitor),
        3 => ix().prop_map(Who::Contact),
        2 => ix().prop_map(Who::Member),
    ]
}

/// A [`Clock`] movement: mostly small, sometimes still or back, rarely extreme.
pub fn clock() -> impl Strategy<Value = Clock> {
    prop_oneof![
        3 => Just(Clock::Still),
        6 => (1u16..2_000).prop_map(Clock::Forward),
        2 => (1u16..3_000).prop_map(Clock::Back),
        1 => Just(Clock::Jump),
        1 => (0u8..6).prop_map(Clock::Extreme),
    ]
}

/// A [`Moment`]: ahead, late, around a watermark, or extreme.
pub fn moment() -> impl Strategy<Value = Moment> {
    prop_oneof![
        5 => (0u8..4).prop_map(Moment::Next),
        3 => (0u8..8).prop_map(Moment::Late),
        4 => (-3i8..=3).prop_map(Moment::Watermark),
        1 => (0u8..6).prop_map(Moment::Extreme),
    ]
}

fn text() -> impl Strategy<Value = TextKind> {
    prop_oneof![
        12 => any::<u8>().prop_map(TextKind::Short),
        1 => Just(TextKind::Empty),
        1 => Just(TextKind::MaximalPreview),
        1 => Just(TextKind::OverlongPreview),
    ]
}

fn content_kind() -> impl Strategy<Value = ContentKind> {
    prop_oneof![
        10 => Just(ContentKind::Text),
        4 => Just(ContentKind::Template),
        1 => Just(ContentKind::Minimal),
        1 => Just(ContentKind::Form),
        1 => Just(ContentKind::Empty),
        1 => Just(ContentKind::System),
    ]
}

/// A [`CommandStep`], weighted towards what makes histories interesting: sends, merges and
/// identity changes.
pub fn command() -> impl Strategy<Value = CommandStep> {
    prop_oneof![
        3 => (ix(), prop::bool::weighted(0.9), proptest::option::weighted(0.7, 0u8..6),
              proptest::option::weighted(0.3, 0u8..3), prop::bool::weighted(0.2))
            .prop_map(|(contact, named, email, phone, allow_duplicates)| CommandStep::CreateContact {
                contact, named, email, phone, allow_duplicates,
            }),
        4 => who().prop_map(CommandStep::GetOrCreate),
        3 => (ix(), ix()).prop_map(|(visitor, contact)| CommandStep::Identify { visitor, contact }),
        2 => (ix(), ix(), proptest::option::of(0u8..3))
            .prop_map(|(member, contact, email)| CommandStep::Register { member, contact, email }),
        3 => (ix(), vec(ix(), 1..3), prop::bool::weighted(0.1))
            .prop_map(|(target, sources, stale)| CommandStep::MergeContacts { target, sources, stale }),
        2 => (ix(), proptest::option::of(prop::bool::weighted(0.7)),
              proptest::option::weighted(0.5, proptest::option::weighted(0.8, 0u8..6)),
              proptest::option::weighted(0.3, any::<u8>()), prop::bool::weighted(0.1),
              prop::bool::weighted(0.2))
            .prop_map(|(contact, name, emails, labels, stale, allow_duplicates)| CommandStep::UpdateContact {
                contact, name, emails, labels, stale, allow_duplicates, field: None,
            }),
        2 => (ix(), 0u8..6, 0u8..12)
            .prop_map(|(contact, key, value)| CommandStep::UpdateContact {
                contact, name: None, emails: None, labels: None, stale: false,
                allow_duplicates: false, field: Some((key, value)),
            }),
        2 => (0u8..6).prop_map(|name| CommandStep::DefineLabel { name }),
        1 => (0u8..5, 0u8..6).prop_map(|(label, name)| CommandStep::RenameLabel { label, name }),
        1 => (0u8..5).prop_map(|label| CommandStep::DeleteLabel { label }),
        1 => (0u8..6, 0u8..8).prop_map(|(name, data_type)| CommandStep::DefineField { name, data_type }),
        1 => (0u8..6, 0u8..6).prop_map(|(field, name)| CommandStep::RenameField { field, name }),
        1 => (0u8..6).prop_map(|field| CommandStep::DeleteField { field }),
        2 => (ix(), vec(0u8..5, 0..3), vec(0u8..5, 0..2))
            .prop_map(|(contact, add, remove)| CommandStep::Label { contact, add, remove }),
        1 => ix().prop_map(|contact| CommandStep::DeleteContact { contact }),
        2 => any::<u8>().prop_map(|conversation| CommandStep::RevertMerge { conversation }),
        10 => (any::<u8>(), content_kind(), text(), 0u8..7, any::<bool>(), 0u8..3).prop_map(
            |(conversation, kind, text, visibility, to_participant, send_as)| CommandStep::Send {
                conversation, kind, text, visibility, to_participant, send_as,
            }),
        2 => (any::<u8>(), any::<u8>(), prop::bool::weighted(0.8))
            .prop_map(|(conversation, message, real_button)| CommandStep::Interact {
                conversation, message, real_button,
            }),
        1 => who().prop_map(CommandStep::Erase),
    ]
}

/// An [`ObservedStep`], weighted towards messages and merges.
pub fn observed() -> impl Strategy<Value = ObservedStep> {
    let key = prop_oneof![
        4 => (0u8..6).prop_map(MessageKey::Pool),
        2 => any::<u8>().prop_map(MessageKey::Seen),
        1 => (0u8..2).prop_map(MessageKey::Next),
    ];
    prop_oneof![
        10 => (any::<u8>(), key, moment(), prop::bool::weighted(0.9), any::<bool>(),
               proptest::option::weighted(0.7, who()), text())
            .prop_map(|(conversation, key, at, dated, business_only, sender, text)| {
                ObservedStep::Message { conversation, key, at, dated, business_only, sender, text }
            }),
        5 => (vec(any::<u8>(), 1..3), any::<u8>(), moment())
            .prop_map(|(sources, target, at)| ObservedStep::Merge { sources, target, at }),
        2 => (any::<u8>(), moment()).prop_map(|(which, at)| ObservedStep::MergeAgain { which, at }),
        3 => (any::<u8>(), who()).prop_map(|(conversation, who)| ObservedStep::Start { conversation, who }),
        2 => (ix(), ix(), proptest::option::of(0u8..3), moment())
            .prop_map(|(member, contact, email, at)| ObservedStep::Registration { member, contact, email, at }),
        1 => (ix(), ix()).prop_map(|(visitor, contact)| ObservedStep::Identified { visitor, contact }),
        2 => (ix(), 1u8..5, proptest::option::of(0u8..6))
            .prop_map(|(contact, revision, email)| ObservedStep::Contact { contact, revision, email }),
        2 => (ix(), vec(ix(), 1..3), 1u8..5)
            .prop_map(|(target, sources, revision)| ObservedStep::ContactsMerged { target, sources, revision }),
        1 => (ix(), 1u8..5).prop_map(|(contact, revision)| ObservedStep::ContactDeleted { contact, revision }),
        1 => (vec(any::<u8>(), 0..3), moment(), proptest::option::of(ix()))
            .prop_map(|(conversations, up_to, contact)| ObservedStep::Erasure { conversations, up_to, contact }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(conversation, message)| ObservedStep::Click { conversation, message }),
        2 => (any::<u8>(), moment()).prop_map(|(which, at)| ObservedStep::MergeReverted { which, at }),
        // Key 3 of the label pool is Wix's own label: saved often, so that commands meet it.
        2 => (any::<bool>(), prop_oneof![1 => Just(3u8), 1 => 0u8..5], 0u8..6,
              prop::bool::weighted(0.3), moment())
            .prop_map(|(field, key, name, deleted, at)| ObservedStep::Definition { field, key, name, deleted, at }),
    ]
}

/// A [`PageStep`].
pub fn page() -> impl Strategy<Value = PageStep> {
    (0u8..3, any::<u8>(), 1u8..6, any::<bool>(), any::<bool>()).prop_map(
        |(listing, conversation, limit, descending, participant_only)| PageStep {
            listing,
            conversation,
            limit,
            descending,
            participant_only,
        },
    )
}

/// One [`Step`] of a history of this population.
pub fn step(population: Population) -> BoxedStrategy<Step> {
    let command = (clock(), 0u8..3, command()).prop_map(|(clock, caller, command)| Step::Command {
        clock,
        caller,
        command,
    });
    let observe = observed().prop_map(Step::Observe);
    let redeliver = any::<u16>().prop_map(Step::Redeliver);
    let read = page().prop_map(Step::Page);
    match population {
        Population::Decided => prop_oneof![12 => command, 1 => redeliver, 4 => read].boxed(),
        Population::Observed => prop_oneof![12 => observe, 2 => redeliver, 4 => read].boxed(),
        Population::Mixed => {
            prop_oneof![8 => command, 6 => observe, 1 => redeliver, 4 => read].boxed()
        }
    }
}

/// A history of up to `max` steps: a few contacts and conversations first (so that fewer
/// commands are refused for want of them), then anything of the population.
pub fn history(population: Population, max: usize) -> impl Strategy<Value = Vec<Step>> {
    let prelude = prop_oneof![
        (ix(), proptest::option::of(0u8..6)).prop_map(|(contact, email)| Step::Command {
            clock: Clock::Forward(1),
            caller: 0,
            command: CommandStep::CreateContact {
                contact,
                named: true,
                email,
                phone: None,
                allow_duplicates: false,
            },
        }),
        who().prop_map(|who| Step::Command {
            clock: Clock::Forward(1),
            caller: 0,
            command: CommandStep::GetOrCreate(who),
        }),
    ];
    let prelude_len = if population == Population::Observed {
        0..1
    } else {
        0..8
    };
    (vec(prelude, prelude_len), vec(step(population), 0..max)).prop_map(|(mut steps, rest)| {
        steps.extend(rest);
        steps
    })
}
