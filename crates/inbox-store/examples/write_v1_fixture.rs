//! Writes `tests/fixtures/v1/`: a log in event schema version 1, committed so that every
//! later build proves it still reads it (`tests/compat.rs`). Run it only to re-create the
//! fixture: `cargo run -p inbox-store --example write_v1_fixture`.

use std::io::Write;

use inbox_core::contacts::ContactName;
use inbox_core::message::{ChannelSet, Content, Direction, Sender, Visibility};
use inbox_core::{
    ContactId, ConversationId, EventId, MessageId, ParticipantId, Sequence, SiteId, Timestamp,
    VisitorId,
};
use inbox_store::codec_v1::{Contact, Event, Message, encode_record_v1};
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = SiteId::new("fixture-site");
    let visitor = VisitorId::from_uuid(Uuid::from_u128(0x51));
    let conversation = ConversationId::from_uuid(Uuid::from_u128(0xC1));
    let contact = ContactId::from_uuid(Uuid::from_u128(0xA1));
    let message = |seq: i64, text: &str| Event::MessageSent {
        message: Message {
            id: MessageId(seq as u64),
            sequence: Sequence(seq),
            created_date: Timestamp::from_micros(seq),
            conversation_id: conversation,
            content: Content::text(text),
            sender: Sender::Visitor(visitor),
            badges: Box::new([]),
            target_channels: ChannelSet::EMPTY,
            source_channel: None,
            app_id: None,
            visibility: Visibility::BusinessAndParticipant,
            direction: Direction::ParticipantToBusiness,
            silent: false,
        },
    };
    let events = [
        Event::ConversationStarted {
            conversation_id: conversation,
            participant: ParticipantId::Visitor(visitor),
        },
        message(1_700_000_000_000_001, "Hello, is anyone there?"),
        message(1_700_000_000_000_002, "I'd like to book a massage."),
        Event::ContactCreated {
            contact: Contact {
                id: contact,
                revision: 1,
                created_date: Timestamp::from_micros(1_700_000_000_000_003),
                updated_date: Timestamp::from_micros(1_700_000_000_000_003),
                name: ContactName {
                    first: Some("Jo".into()),
                    last: None,
                },
                emails: Vec::new(),
                phones: Vec::new(),
            },
        },
        Event::ParticipantErased {
            participant: ParticipantId::Visitor(visitor),
            conversations: vec![conversation],
            contact: None,
        },
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    std::fs::create_dir_all(&dir)?;
    let mut file = std::fs::File::create(dir.join("00000000000000000001.seg"))?;
    file.write_all(b"INBXSEG1")?;
    for (i, event) in events.iter().enumerate() {
        let position = i as u64 + 1;
        let payload = encode_record_v1(
            position,
            position,
            &site,
            EventId::from_uuid(Uuid::from_u128(0xE0 + i as u128)),
            Timestamp::from_micros(1_700_000_000_000_000),
            event,
        )?;
        file.write_all(&u32::try_from(payload.len())?.to_le_bytes())?;
        file.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
        file.write_all(&payload)?;
    }
    file.sync_all()?;
    println!("wrote {}", dir.display());
    Ok(())
}
