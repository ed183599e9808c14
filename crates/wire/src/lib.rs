//! # concord-wire: the Concord frame codec
//!
//! An I/O-free codec for the frames that Concord parties exchange over a
//! byte stream (in practice a mutually authenticated TLS 1.3 connection, see
//! `concord-net`). Nothing here reads or writes a socket: the functions turn
//! headers and payloads into bytes and back, and validate everything that
//! comes from a peer without ever panicking.
//!
//! A frame is a fixed [`HEADER_LEN`]-byte header followed by `len` payload
//! bytes. The header, byte by byte (all integers little-endian):
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 4    | magic `b"CNCD"`                         |
//! | 4      | 1    | protocol version, [`VERSION`] (1)       |
//! | 5      | 1    | kind ([`FrameKind`])                    |
//! | 6      | 1    | flags: bit 0 = MORE, other bits zero    |
//! | 7      | 1    | reserved, zero                          |
//! | 8      | 16   | session id                              |
//! | 24     | 4    | payload length `len` (u32 LE)           |
//!
//! Application messages travel as one or more [`FrameKind::Data`] frames:
//! every frame but the last has the MORE flag set ([`split_message`],
//! [`message_frames`]); the receiver glues them back together with a
//! [`Reassembler`]. `docs/WIRE_PROTOCOL.md` describes the whole protocol.

use std::fmt;
use std::ops::Range;

/// The four magic bytes that start every frame.
pub const MAGIC: [u8; 4] = *b"CNCD";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 28;
/// Flag bit 0: the message continues in the next frame.
pub const FLAG_MORE: u8 = 0x01;
/// Length of a [`FrameKind::Hello`] payload.
pub const HELLO_LEN: usize = 4;
/// Maximum length in bytes of an [`FrameKind::Abort`] reason.
pub const MAX_ABORT_REASON: usize = 1024;
/// Default maximum payload of one frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// Length of a session id.
pub const SESSION_ID_LEN: usize = 16;

/// Errors found while decoding or reassembling frames.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than needed were given.
    #[error("truncated input: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The frame does not start with `b"CNCD"`.
    #[error("bad magic: expected {:02x?} (\"CNCD\"), got {got:02x?}", MAGIC)]
    BadMagic {
        /// The four bytes found.
        got: [u8; 4],
    },
    /// The frame has a protocol version we do not speak.
    #[error("unsupported protocol version: expected {expected}, got {got}")]
    UnsupportedVersion {
        /// Our version.
        expected: u8,
        /// The version found.
        got: u8,
    },
    /// The kind byte is not a known frame kind.
    #[error("unknown frame kind {got} (known kinds: 1 Hello, 2 Data, 3 Abort, 4 Close)")]
    UnknownKind {
        /// The kind byte found.
        got: u8,
    },
    /// Flag bits other than MORE are set, or MORE is set on a frame that is not Data.
    #[error("invalid flags {flags:#04x} on a {kind} frame (only bit 0 = MORE is defined, and only on Data frames)")]
    BadFlags {
        /// The flags byte found.
        flags: u8,
        /// The frame kind.
        kind: FrameKind,
    },
    /// The reserved byte is not zero.
    #[error("reserved header byte must be 0, got {got:#04x}")]
    NonZeroReserved {
        /// The byte found.
        got: u8,
    },
    /// A frame announces a payload larger than the limit.
    #[error("oversized frame: payload of {len} bytes announced, limit is {max} bytes")]
    OversizedFrame {
        /// Announced payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame's payload length is wrong for its kind.
    #[error("{kind} frame must have a payload of {expected} bytes, got {got}")]
    BadPayloadLength {
        /// The frame kind.
        kind: FrameKind,
        /// Expected length (for Abort: maximum).
        expected: usize,
        /// Announced length.
        got: usize,
    },
    /// A Hello names a party index outside `0..parties`, or fewer than 2 parties.
    #[error("invalid Hello: party index {party} with {parties} parties (need 2 <= parties and party < parties)")]
    BadHello {
        /// Claimed party index.
        party: u16,
        /// Claimed number of parties.
        parties: u16,
    },
    /// An Abort reason that is not valid UTF-8.
    #[error("abort reason is not valid UTF-8 (invalid byte at offset {valid_up_to})")]
    AbortNotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// An Abort reason longer than [`MAX_ABORT_REASON`].
    #[error("abort reason of {got} bytes exceeds the limit of {max} bytes")]
    AbortTooLong {
        /// Its length.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A frame of this kind was not expected here.
    #[error("unexpected {got} frame, expected {expected}")]
    UnexpectedKind {
        /// Kind received.
        got: FrameKind,
        /// What was expected.
        expected: FrameKind,
    },
    /// The payload handed in does not have the length the header announced.
    #[error("payload length mismatch: header announced {announced} bytes, got {got}")]
    LengthMismatch {
        /// Length in the header.
        announced: usize,
        /// Bytes actually supplied.
        got: usize,
    },
    /// A reassembled message exceeds the maximum message size.
    #[error("message too large: at least {size} bytes, limit is {max} bytes")]
    MessageTooLarge {
        /// Size reached (so far).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `finish_frame` was called without a matching `start_frame`.
    #[error("no frame in progress")]
    NoFrameInProgress,
    /// A peer-port preamble does not start with [`PREAMBLE_MAGIC`].
    #[error("bad preamble magic: expected {:02x?} (\"CONCORD\\x01\"), got {got:02x?}", PREAMBLE_MAGIC)]
    BadPreambleMagic {
        /// The eight bytes found.
        got: [u8; 8],
    },
    /// A peer-port preamble has an unknown kind byte.
    #[error("unknown preamble kind {got} (known kinds: 1 session data, 2 control)")]
    UnknownPreambleKind {
        /// The kind byte found.
        got: u8,
    },
}

/// The kind of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame on a connection: party index and party count (payload [`HELLO_LEN`] bytes).
    Hello = 1,
    /// A chunk of an application message.
    Data = 2,
    /// The sender aborts the session; payload is a UTF-8 reason of at most [`MAX_ABORT_REASON`] bytes.
    Abort = 3,
    /// The sender closes the connection in an orderly way; empty payload.
    Close = 4,
}

impl FrameKind {
    /// The kind for a header byte, if known.
    pub fn from_byte(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::Data),
            3 => Some(FrameKind::Abort),
            4 => Some(FrameKind::Close),
            _ => None,
        }
    }

    /// The header byte of this kind.
    pub fn as_byte(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameKind::Hello => "Hello",
            FrameKind::Data => "Data",
            FrameKind::Abort => "Abort",
            FrameKind::Close => "Close",
        })
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame kind.
    pub kind: FrameKind,
    /// MORE flag: the message continues in the next frame (Data frames only).
    pub more: bool,
    /// Session id.
    pub session_id: [u8; SESSION_ID_LEN],
    /// Payload length in bytes.
    pub len: u32,
}

impl FrameHeader {
    /// A header of `kind` without the MORE flag.
    pub fn new(kind: FrameKind, session_id: [u8; SESSION_ID_LEN], len: u32) -> FrameHeader {
        FrameHeader { kind, more: false, session_id, len }
    }

    /// The payload length as `usize`.
    pub fn payload_len(&self) -> usize {
        self.len as usize
    }
}

/// Encode a header into its [`HEADER_LEN`] bytes.
///
/// Encoding never fails; a header with `more` set on a non-Data kind encodes
/// but will be rejected by [`decode_header`].
pub fn encode_header(h: &FrameHeader) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = h.kind.as_byte();
    out[6] = if h.more { FLAG_MORE } else { 0 };
    out[7] = 0;
    out[8..24].copy_from_slice(&h.session_id);
    out[24..28].copy_from_slice(&h.len.to_le_bytes());
    out
}

/// Decode and validate a header from the first [`HEADER_LEN`] bytes of `bytes`.
///
/// Rejects short input, wrong magic, unsupported version, unknown kind,
/// undefined flag bits (or MORE on a non-Data frame), a non-zero reserved
/// byte, a payload length above `max_payload`, and payload lengths that are
/// impossible for the kind (Hello must be [`HELLO_LEN`] bytes, Close empty,
/// Abort at most [`MAX_ABORT_REASON`]). Extra bytes after the header are ignored.
pub fn decode_header(bytes: &[u8], max_payload: usize) -> Result<FrameHeader, WireError> {
    let Some(b) = bytes.get(..HEADER_LEN) else {
        return Err(WireError::Truncated { needed: HEADER_LEN, got: bytes.len() });
    };
    let magic = [b[0], b[1], b[2], b[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic { got: magic });
    }
    if b[4] != VERSION {
        return Err(WireError::UnsupportedVersion { expected: VERSION, got: b[4] });
    }
    let kind = FrameKind::from_byte(b[5]).ok_or(WireError::UnknownKind { got: b[5] })?;
    let flags = b[6];
    if flags & !FLAG_MORE != 0 || (flags & FLAG_MORE != 0 && kind != FrameKind::Data) {
        return Err(WireError::BadFlags { flags, kind });
    }
    if b[7] != 0 {
        return Err(WireError::NonZeroReserved { got: b[7] });
    }
    let mut session_id = [0u8; SESSION_ID_LEN];
    session_id.copy_from_slice(&b[8..24]);
    let len = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    let len_usize = len as usize;
    if u64::from(len) > max_payload as u64 {
        return Err(WireError::OversizedFrame { len: u64::from(len), max: max_payload });
    }
    match kind {
        FrameKind::Hello if len_usize != HELLO_LEN => {
            return Err(WireError::BadPayloadLength { kind, expected: HELLO_LEN, got: len_usize })
        }
        FrameKind::Close if len != 0 => return Err(WireError::BadPayloadLength { kind, expected: 0, got: len_usize }),
        FrameKind::Abort if len_usize > MAX_ABORT_REASON => {
            return Err(WireError::AbortTooLong { got: len_usize, max: MAX_ABORT_REASON })
        }
        _ => {}
    }
    Ok(FrameHeader { kind, more: flags & FLAG_MORE != 0, session_id, len })
}

/// Payload of a [`FrameKind::Hello`] frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's party index.
    pub party: u16,
    /// Number of parties in the session, as the sender knows it.
    pub parties: u16,
}

/// Encode a Hello payload: party index (u16 LE), number of parties (u16 LE).
pub fn encode_hello(h: &Hello) -> [u8; HELLO_LEN] {
    let p = h.party.to_le_bytes();
    let n = h.parties.to_le_bytes();
    [p[0], p[1], n[0], n[1]]
}

/// Decode a Hello payload, which must be exactly [`HELLO_LEN`] bytes with
/// `2 <= parties` and `party < parties`.
pub fn decode_hello(payload: &[u8]) -> Result<Hello, WireError> {
    let [p0, p1, n0, n1] = payload else {
        return Err(WireError::BadPayloadLength { kind: FrameKind::Hello, expected: HELLO_LEN, got: payload.len() });
    };
    let h = Hello { party: u16::from_le_bytes([*p0, *p1]), parties: u16::from_le_bytes([*n0, *n1]) };
    if h.parties < 2 || h.party >= h.parties {
        return Err(WireError::BadHello { party: h.party, parties: h.parties });
    }
    Ok(h)
}

/// Encode an Abort reason, truncated (at a character boundary) to
/// [`MAX_ABORT_REASON`] bytes.
pub fn encode_abort(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_ABORT_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.as_bytes()[..end].to_vec()
}

/// Decode an Abort payload: valid UTF-8 of at most [`MAX_ABORT_REASON`] bytes.
pub fn decode_abort(payload: &[u8]) -> Result<String, WireError> {
    if payload.len() > MAX_ABORT_REASON {
        return Err(WireError::AbortTooLong { got: payload.len(), max: MAX_ABORT_REASON });
    }
    match std::str::from_utf8(payload) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(WireError::AbortNotUtf8 { valid_up_to: e.valid_up_to() }),
    }
}

/// The frames of one message of `payload_len` bytes: for each frame, the byte
/// range of the message it carries and its MORE flag.
///
/// Every frame carries at most `max_frame_payload` bytes (a value of 0 is
/// treated as 1); an empty message is one empty frame. Created by
/// [`split_message`].
#[derive(Clone, Debug)]
pub struct FrameSplits {
    next: usize,
    total: usize,
    step: usize,
    done: bool,
}

impl Iterator for FrameSplits {
    type Item = (Range<usize>, bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.next;
        let end = start.saturating_add(self.step).min(self.total);
        self.next = end;
        let more = end < self.total;
        self.done = !more;
        Some((start..end, more))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.done { 0 } else { (self.total - self.next).div_ceil(self.step).max(1) };
        (n, Some(n))
    }
}

impl ExactSizeIterator for FrameSplits {}

/// Split a message of `payload_len` bytes into frames of at most
/// `max_frame_payload` bytes (see [`FrameSplits`]).
pub fn split_message(payload_len: usize, max_frame_payload: usize) -> FrameSplits {
    FrameSplits { next: 0, total: payload_len, step: max_frame_payload.clamp(1, u32::MAX as usize), done: false }
}

/// The Data frames of `message`: for each frame, its encoded header and the
/// slice of `message` that follows it on the wire. No payload is copied.
pub fn message_frames<'a>(
    session_id: [u8; SESSION_ID_LEN],
    message: &'a [u8],
    max_frame_payload: usize,
) -> impl Iterator<Item = ([u8; HEADER_LEN], &'a [u8])> + 'a {
    split_message(message.len(), max_frame_payload).map(move |(range, more)| {
        let chunk = message.get(range).unwrap_or_default();
        let header = FrameHeader {
            kind: FrameKind::Data,
            more,
            session_id,
            // split_message clamps frames to u32::MAX bytes.
            len: u32::try_from(chunk.len()).unwrap_or(u32::MAX),
        };
        (encode_header(&header), chunk)
    })
}

/// Reassembles application messages from successive Data frames.
///
/// Two ways to feed it: [`Reassembler::push`] with a header and its payload,
/// or, to avoid a copy, [`Reassembler::start_frame`] (which validates the
/// header and returns the message buffer to which the caller appends exactly
/// `header.len` bytes) followed by [`Reassembler::finish_frame`]. Either way a
/// complete message is returned when a frame without MORE arrives. After an
/// error the partial message is discarded; the connection should be dropped.
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    buf: Vec<u8>,
    /// Frame in progress: buffer length before it, its length, its MORE flag.
    pending: Option<(usize, usize, bool)>,
}

impl Reassembler {
    /// A reassembler accepting messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Reassembler {
        Reassembler { max_message, buf: Vec::new(), pending: None }
    }

    /// The maximum message size.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes of the message in progress received so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True if a message has been started but not completed.
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty() || self.pending.is_some()
    }

    /// Validate `header` as the next Data frame and return the message buffer,
    /// to which exactly `header.len` bytes must be appended before calling
    /// [`Reassembler::finish_frame`]. Capacity for them is reserved.
    pub fn start_frame(&mut self, header: &FrameHeader) -> Result<&mut Vec<u8>, WireError> {
        if header.kind != FrameKind::Data {
            self.reset();
            return Err(WireError::UnexpectedKind { got: header.kind, expected: FrameKind::Data });
        }
        let len = header.payload_len();
        let size = self.buf.len().saturating_add(len);
        if size > self.max_message {
            self.reset();
            return Err(WireError::MessageTooLarge { size, max: self.max_message });
        }
        self.buf.reserve(len);
        self.pending = Some((self.buf.len(), len, header.more));
        Ok(&mut self.buf)
    }

    /// Complete the frame begun by [`Reassembler::start_frame`]; returns the
    /// message if this frame was its last.
    pub fn finish_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some((start, len, more)) = self.pending.take() else {
            self.reset();
            return Err(WireError::NoFrameInProgress);
        };
        if self.buf.len() != start.saturating_add(len) {
            let got = self.buf.len().saturating_sub(start);
            self.reset();
            return Err(WireError::LengthMismatch { announced: len, got });
        }
        if more {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }

    /// Add one Data frame; returns the message if this frame completes it.
    pub fn push(&mut self, header: &FrameHeader, payload: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        if payload.len() != header.payload_len() {
            self.reset();
            return Err(WireError::LengthMismatch { announced: header.payload_len(), got: payload.len() });
        }
        self.start_frame(header)?.extend_from_slice(payload);
        self.finish_frame()
    }

    /// Discard any partial message.
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.pending = None;
    }
}

// ---------------------------------------------------------------------------
// Peer-port preamble.

/// The eight bytes that start a peer-port preamble: `b"CONCORD\x01"` (the
/// last byte is the preamble version).
pub const PREAMBLE_MAGIC: [u8; 8] = *b"CONCORD\x01";
/// Preamble kind byte: the connection carries a session's frames.
pub const PREAMBLE_KIND_SESSION: u8 = 1;
/// Preamble kind byte: the connection carries one control request.
pub const PREAMBLE_KIND_CONTROL: u8 = 2;
/// Length of the magic and kind bytes, the part every preamble has.
pub const PREAMBLE_HEAD_LEN: usize = PREAMBLE_MAGIC.len() + 1;
/// Length of the longest preamble (a session preamble).
pub const PREAMBLE_MAX_LEN: usize = PREAMBLE_HEAD_LEN + SESSION_ID_LEN;

/// The cleartext preamble a dialer writes on a peer port right after the TCP
/// connection is established, before the TLS handshake, so that the port can
/// route the connection. Layout: [`PREAMBLE_MAGIC`], one kind byte, then for
/// [`Preamble::Session`] the 16-byte session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preamble {
    /// Kind 1: frames of the session with this id follow.
    Session([u8; SESSION_ID_LEN]),
    /// Kind 2: one control request follows.
    Control,
}

impl Preamble {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Preamble::Session(_) => PREAMBLE_KIND_SESSION,
            Preamble::Control => PREAMBLE_KIND_CONTROL,
        }
    }

    /// Length of the encoding in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Preamble::Session(_) => PREAMBLE_MAX_LEN,
            Preamble::Control => PREAMBLE_HEAD_LEN,
        }
    }
}

/// Encode a preamble.
pub fn encode_preamble(p: &Preamble) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.encoded_len());
    out.extend_from_slice(&PREAMBLE_MAGIC);
    out.push(p.kind());
    if let Preamble::Session(id) = p {
        out.extend_from_slice(id);
    }
    out
}

/// Parse the preamble at the start of `bytes`; bytes after it (the first
/// [`Preamble::encoded_len`] bytes) are ignored.
///
/// Fails with [`WireError::Truncated`] when `bytes` is too short, naming how
/// many bytes are needed: a reader can read [`PREAMBLE_HEAD_LEN`] bytes,
/// parse, and on `Truncated { needed, .. }` read up to `needed` and parse again.
pub fn parse_preamble(bytes: &[u8]) -> Result<Preamble, WireError> {
    let Some((head, rest)) = bytes.split_first_chunk::<PREAMBLE_HEAD_LEN>() else {
        return Err(WireError::Truncated { needed: PREAMBLE_HEAD_LEN, got: bytes.len() });
    };
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&head[..PREAMBLE_MAGIC.len()]);
    if magic != PREAMBLE_MAGIC {
        return Err(WireError::BadPreambleMagic { got: magic });
    }
    match head[PREAMBLE_MAGIC.len()] {
        PREAMBLE_KIND_SESSION => match rest.first_chunk::<SESSION_ID_LEN>() {
            Some(id) => Ok(Preamble::Session(*id)),
            None => Err(WireError::Truncated { needed: PREAMBLE_MAX_LEN, got: bytes.len() }),
        },
        PREAMBLE_KIND_CONTROL => Ok(Preamble::Control),
        got => Err(WireError::UnknownPreambleKind { got }),
    }
}

#[cfg(test)]
mod tests;
