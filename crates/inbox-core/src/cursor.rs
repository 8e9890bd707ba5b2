//! Opaque, tamper-evident paging cursors (invariant 8).
//!
//! A cursor pins what it pages over: the conversation that was live when the first page was
//! read (the *anchor*), the site's clock at that moment (the *watermark*), the sort order and
//! visibility, and the key of the last message returned. Later pages return only messages at
//! or below the watermark whose conversation had been merged into the anchor by then, so
//! sends and merges between pages neither repeat nor skip anything.
//!
//! Layout (version 1, 51 bytes, then base64url without padding):
//! `version u8 | order u8 | visibility u8 | anchor [16] | watermark i64 | last sequence i64 |
//! last id u64 | mac u64`, integers big-endian. The order byte's bit 0 is the descending
//! order, its bit 1 marks a cursor to the *previous* page (`cursors.prev`: the messages before
//! the key, in the same order); cursors written before there were previous pages have it
//! clear. The MAC is SipHash-2-4 under the site's
//! cursor key, so a cursor edited by hand, or minted for another site, is refused.

use thiserror::Error;
use uuid::Uuid;

use crate::ids::{ConversationId, MessageId, Sequence};

const VERSION: u8 = 1;
const BODY_LEN: usize = 43;
const LEN: usize = BODY_LEN + 8;
/// The length of a cursor's text: base64url of `LEN` bytes, unpadded (`LEN` is a multiple of
/// three, so four characters for every three bytes).
const TEXT_LEN: usize = LEN / 3 * 4;
const _: () = assert!(LEN.is_multiple_of(3));

/// Why a cursor was refused. All are client errors (HTTP 400 at the boundary).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CursorError {
    /// Not base64url, or the wrong length.
    #[error("cursor is malformed")]
    Malformed,
    /// Written by a newer or unknown version of the engine.
    #[error("cursor version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The checksum does not match: edited, truncated or minted for another site.
    #[error("cursor failed verification (tampered with, or from another site)")]
    Tampered,
    /// Issued while paging another conversation.
    #[error("cursor belongs to another conversation")]
    ForeignConversation,
    /// The request's sort order or visibility differs from the first page's.
    #[error(
        "cursor was issued for a different sort order or visibility; repeat the first request's"
    )]
    QueryMismatch,
}

/// The decoded content of a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CursorState {
    pub descending: bool,
    /// A cursor to the page before `last` (in the listing's order), not after it.
    pub backwards: bool,
    pub participant_only: bool,
    pub anchor: ConversationId,
    pub watermark: Sequence,
    pub last: (Sequence, MessageId),
}

impl CursorState {
    pub(crate) fn encode(&self, key: &[u8; 16]) -> String {
        let mut bytes = [0u8; LEN];
        let mut w = Writer {
            buf: &mut bytes,
            pos: 0,
        };
        w.put(&[
            VERSION,
            u8::from(self.descending) | (u8::from(self.backwards) << 1),
            u8::from(self.participant_only),
        ]);
        w.put(self.anchor.as_uuid().as_bytes());
        w.put(&self.watermark.0.to_be_bytes());
        w.put(&self.last.0.0.to_be_bytes());
        w.put(&self.last.1.0.to_be_bytes());
        let (body, mac) = bytes.split_at_mut(BODY_LEN);
        mac.copy_from_slice(&siphash24(key, body).to_be_bytes());
        base64url_encode(&bytes)
    }

    pub(crate) fn decode(text: &str, key: &[u8; 16]) -> Result<CursorState, CursorError> {
        // Refuse a wrong length before decoding anything: a cursor is client input, and a
        // megabyte of it should cost nothing.
        if text.len() != TEXT_LEN {
            return Err(CursorError::Malformed);
        }
        let bytes = base64url_decode(text).ok_or(CursorError::Malformed)?;
        let bytes: [u8; LEN] = bytes.try_into().map_err(|_| CursorError::Malformed)?;
        let (body, mac) = bytes.split_at(BODY_LEN);
        let mut r = Reader { buf: body, pos: 0 };
        let version = r.u8();
        if version != VERSION {
            return Err(CursorError::UnsupportedVersion(version));
        }
        let mac = u64::from_be_bytes(mac.try_into().map_err(|_| CursorError::Malformed)?);
        if mac != siphash24(key, body) {
            return Err(CursorError::Tampered);
        }
        let order = r.u8();
        let (descending, backwards) = (order & 1 == 1, order & 2 == 2);
        let participant_only = r.u8() == 1;
        let anchor = ConversationId::from_uuid(Uuid::from_bytes(r.array()));
        let watermark = Sequence(i64::from_be_bytes(r.array()));
        let last_seq = Sequence(i64::from_be_bytes(r.array()));
        let last_id = MessageId(u64::from_be_bytes(r.array()));
        Ok(CursorState {
            descending,
            backwards,
            participant_only,
            anchor,
            watermark,
            last: (last_seq, last_id),
        })
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        let [b] = self.array::<1>();
        b
    }
}

/// SipHash-2-4 (Aumasson and Bernstein), the keyed hash that makes cursors tamper-evident.
/// Written out here because `inbox-core` takes no dependency beyond its five.
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(first8(key));
    let k1 = u64::from_le_bytes(first8(key.get(8..).unwrap_or_default()));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let chunks = data.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let m = u64::from_le_bytes(first8(chunk));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    // The last word: the tail's bytes, and the message length (mod 256) in the top byte.
    let mut last = [0u8; 8];
    for (dst, src) in last.iter_mut().zip(tail) {
        *dst = *src;
    }
    if let Some(top) = last.last_mut() {
        *top = data.len() as u8; // truncates: the length mod 256
    }
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn first8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (dst, src) in out.iter_mut().zip(bytes) {
        *dst = *src;
    }
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(
                ALPHABET.get(idx as usize).copied().unwrap_or(b'A'),
            ));
        }
    }
    out
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // Canonical form only: the unused low bits of the last character must be zero (a
        // whole chunk of four has none).
        let unused_bits = 24 - 8 * produced as u32;
        if n & ((1 << unused_bits) - 1) != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vector() {
        // From the SipHash paper, appendix A: key 00..0f, message 00..0e.
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url_encode(&data);
            assert!(!text.contains('='));
            assert_eq!(base64url_decode(&text), Some(data));
        }
        assert_eq!(base64url_decode("a"), None);
        // One character is never a whole byte, even one whose bits are all zero.
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("AAAAA"), None);
        assert_eq!(base64url_decode("ab+/"), None);
        assert_eq!(base64url_decode("AB"), None, "non-canonical trailing bits");
    }

    fn sample() -> CursorState {
        CursorState {
            descending: true,
            backwards: false,
            participant_only: false,
            anchor: ConversationId::from_uuid(Uuid::from_u128(7)),
            watermark: Sequence(1_700_000_000_000_000),
            last: (Sequence(1_699_999_999_000_000), MessageId(42)),
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_tampering() {
        let key = [9u8; 16];
        let text = sample().encode(&key);
        assert_eq!(CursorState::decode(&text, &key), Ok(sample()));
        assert_eq!(
            CursorState::decode(&text, &[8u8; 16]),
            Err(CursorError::Tampered)
        );
        let mut chars: Vec<char> = text.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        let edited: String = chars.into_iter().collect();
        assert_eq!(
            CursorState::decode(&edited, &key),
            Err(CursorError::Tampered)
        );
        assert_eq!(
            CursorState::decode("not a cursor", &key),
            Err(CursorError::Malformed)
        );
        assert_eq!(
            CursorState::decode(&text[..20], &key),
            Err(CursorError::Malformed)
        );
    }
}
