//! memcached's binary protocol: a streaming frame parser and the response composer.
//!
//! PURE, like the text parser: bytes in, a typed request (borrowing from the buffer) out, or
//! [`BinaryError::Incomplete`] / [`BinaryError::Invalid`] with exactly how memcached 1.6.18
//! answers and how many bytes it drops. Every rule below was checked against the real binary.
//!
//! Frame (all integers big-endian): a 24-byte header `magic opcode key_len:u16 extras_len:u8
//! data_type:u8 vbucket:u16 body_len:u32 opaque:u32 cas:u64`, then `body_len` bytes: extras,
//! key, value. Responses use magic 0x81 and echo the opcode and opaque.
//!
//! Validation happens on the header alone, before any body byte is buffered (as memcached does),
//! so the read buffer never holds more than one header, extras, key and an acceptable value:
//! * magic other than 0x80: close, no reply.
//! * `key_len + extras_len > body_len`: `0x0081 Unknown command`, close.
//! * `key_len > 250`, or extras/key/body lengths wrong for the opcode: `0x0004 Invalid
//!   arguments`, close.
//! * unknown opcode: `0x0081 Unknown command`, and memcached drops `extras_len + key_len +
//!   body_len` bytes after the header (it counts extras and key twice; replicated).
//! * SASL opcodes (SASL is not enabled): shape-checked like memcached (bad shape: `Invalid
//!   arguments`, close), then `Unknown command` with the whole frame dropped.
//! * a storage value too large for `item_size_max`: [`Command::TooLarge`]: the header, extras
//!   and key are consumed, the value is swallowed as it arrives.
//! * touch/gat/stat consume only header, extras and key; trailing body bytes are read as the
//!   next frame (memcached does not check `body_len` for them).
//!
//! Deliberate differences (timing or memory-layout artifacts of memcached, not protocol):
//! * memcached sends the error for a swallowed body (`Too large.`, `Unknown command`) only once
//!   the whole body has arrived; corecache answers at once. The byte stream is the same.
//! * On bad magic memcached also drops replies it had queued but not yet written in the same
//!   read batch (e.g. a touch answered just before); corecache writes them, then closes.
//! * memcached's incr/decr rewrites a shorter result in place padded with spaces unless the item
//!   is still referenced by a queued get/touch reply of the same batch, in which case it stores
//!   a new unpadded item; corecache always pads in place (the text protocol's rule).

use super::{sasl, Limits, SaslGate};

/// First byte of every request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// First byte of every response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Bytes in a request or response header.
pub const HEADER_LEN: usize = 24;

/// Request opcodes memcached 1.6 serves (SASL and verbosity answer `Unknown command`).
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
}

/// Response status codes, with memcached's message bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    KeyNotFound,
    KeyExists,
    TooLarge,
    InvalidArguments,
    NotStored,
    NonNumeric,
    UnknownCommand,
    OutOfMemory,
    /// Also what memcached answers a refused flush (`-F`).
    AuthError,
    /// A SASL exchange needs another step.
    AuthContinue,
    /// The server could not do what was asked (corecache: a mutation whose durability log
    /// record could not be written, under `--log-fsync always`).
    Internal,
}

impl Status {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0x0000,
            Status::KeyNotFound => 0x0001,
            Status::KeyExists => 0x0002,
            Status::TooLarge => 0x0003,
            Status::InvalidArguments => 0x0004,
            Status::NotStored => 0x0005,
            Status::NonNumeric => 0x0006,
            Status::UnknownCommand => 0x0081,
            Status::OutOfMemory => 0x0082,
            Status::AuthError => 0x0020,
            Status::AuthContinue => 0x0021,
            Status::Internal => 0x0084,
        }
    }

    /// The body memcached sends with this error (exact bytes).
    pub fn message(self) -> &'static [u8] {
        match self {
            Status::Success => b"",
            Status::KeyNotFound => b"Not found",
            Status::KeyExists => b"Data exists for key.",
            Status::TooLarge => b"Too large.",
            Status::InvalidArguments => b"Invalid arguments",
            Status::NotStored => b"Not stored.",
            Status::NonNumeric => b"Non-numeric server-side value for incr or decr",
            Status::UnknownCommand => b"Unknown command",
            Status::OutOfMemory => b"Out of memory",
            Status::AuthError => b"Auth failure.",
            Status::AuthContinue => b"",
            Status::Internal => b"Internal error",
        }
    }
}

/// The storage opcodes (quiet or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// What a well-formed frame asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// get/getq/getk/getkq, and gat/gatq/gatk/gatkq when `touch_exptime` is set.
    Get {
        with_key: bool,
        touch_exptime: Option<u32>,
    },
    /// set/add/replace (extras: client_flags, exptime) and append/prepend (no extras).
    Store {
        op: StoreOp,
        client_flags: u32,
        exptime: u32,
        value: &'a [u8],
    },
    /// A storage frame whose item would exceed `item_size_max`: reply `Too large.`, then
    /// discard `swallow` value bytes; a set also removes the key's old item.
    TooLarge {
        op: StoreOp,
        swallow: usize,
    },
    Delete,
    /// increment/decrement; `exptime == 0xffffffff` means "do not create".
    Arith {
        incr: bool,
        delta: u64,
        initial: u64,
        exptime: u32,
    },
    Touch {
        exptime: u32,
    },
    /// flush with an optional delay (0 when absent).
    Flush {
        exptime: u32,
    },
    Noop,
    Version,
    /// stat; the key is the group.
    Stat,
    Quit,
    /// SASL list mechs (`-S` only).
    SaslList,
    /// SASL auth, or SASL step when `step`: the key is the mechanism, the value its data.
    SaslAuth {
        step: bool,
        data: &'a [u8],
    },
}

/// One parsed request frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryRequest<'a> {
    /// The opcode as sent (echoed in the response).
    pub opcode: u8,
    /// A quiet opcode: no reply on success (gets: none on a miss).
    pub quiet: bool,
    pub opaque: u32,
    /// The request's cas (0: none).
    pub cas: u64,
    pub key: &'a [u8],
    pub command: Command<'a>,
}

/// Why a frame was not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryError {
    /// Not a whole frame yet: read more and retry from the same start.
    Incomplete,
    Invalid(BinaryRejection),
}

/// How to answer and skip a bad frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryRejection {
    /// Error response to send (`None`: nothing, e.g. bad magic).
    pub status: Option<Status>,
    pub opcode: u8,
    pub opaque: u32,
    /// Bytes of the buffer to drop (`HEADER_LEN` unless `close`).
    pub consumed: usize,
    /// Further bytes to discard as they arrive.
    pub swallow: usize,
    /// Close after the reply.
    pub close: bool,
}

/// The fixed header fields of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Decodes a header from the first 24 bytes (`None` if fewer).
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    let h = buf.get(..HEADER_LEN)?;
    Some(Header {
        magic: *h.first()?,
        opcode: *h.get(1)?,
        key_len: be_u16(h, 2),
        extras_len: *h.get(4)?,
        body_len: be_u32(h, 8),
        opaque: be_u32(h, 12),
        cas: be_u64(h, 16),
    })
}

/// The shape an opcode requires of its lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// extras 0, key 0, body 0.
    Bare,
    /// extras 0, key > 0, body == key.
    KeyOnly,
    /// set/add/replace: extras 8, key > 0, body >= key + 8.
    Storage,
    /// append/prepend: extras 0, key > 0.
    Concat,
    /// incr/decr: extras 20, key > 0, body == key + 20.
    Arith,
    /// touch/gat*: extras 4, key > 0 (body not checked).
    Touch,
    /// flush: key 0, extras 0 or 4, body == extras.
    Flush,
    /// stat: extras 0 (body not checked).
    Stat,
    /// SASL: without `-S` checked like memcached, then answered `Unknown command`, frame
    /// dropped.
    SaslList,
    SaslAuth,
}

fn shape_of(opcode: u8) -> Option<Shape> {
    use opcode::*;
    Some(match opcode {
        NOOP | VERSION | QUIT | QUITQ => Shape::Bare,
        GET | GETQ | GETK | GETKQ | DELETE | DELETEQ => Shape::KeyOnly,
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ => Shape::Storage,
        APPEND | APPENDQ | PREPEND | PREPENDQ => Shape::Concat,
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ => Shape::Arith,
        TOUCH | GAT | GATQ | GATK | GATKQ => Shape::Touch,
        FLUSH | FLUSHQ => Shape::Flush,
        STAT => Shape::Stat,
        SASL_LIST_MECHS => Shape::SaslList,
        SASL_AUTH | SASL_STEP => Shape::SaslAuth,
        _ => return None,
    })
}

fn shape_ok(shape: Shape, h: &Header) -> bool {
    let (e, k, b) = (
        usize::from(h.extras_len),
        usize::from(h.key_len),
        h.body_len as usize,
    );
    match shape {
        Shape::Bare | Shape::SaslList => e == 0 && k == 0 && b == 0,
        Shape::KeyOnly => e == 0 && k > 0 && b == k,
        Shape::Storage => e == 8 && k > 0 && b >= k + 8,
        Shape::Concat => e == 0 && k > 0,
        Shape::Arith => e == 20 && k > 0 && b == k + 20,
        Shape::Touch => e == 4 && k > 0,
        Shape::Flush => k == 0 && (e == 0 || e == 4) && b == e,
        Shape::Stat => e == 0,
        Shape::SaslAuth => e == 0 && k > 0,
    }
}

fn is_quiet(opcode: u8) -> bool {
    use opcode::*;
    matches!(
        opcode,
        GETQ | GETKQ
            | SETQ
            | ADDQ
            | REPLACEQ
            | DELETEQ
            | INCREMENTQ
            | DECREMENTQ
            | QUITQ
            | FLUSHQ
            | APPENDQ
            | PREPENDQ
            | GATQ
            | GATKQ
    )
}

fn store_op(opcode: u8) -> StoreOp {
    use opcode::*;
    match opcode {
        ADD | ADDQ => StoreOp::Add,
        REPLACE | REPLACEQ => StoreOp::Replace,
        APPEND | APPENDQ => StoreOp::Append,
        PREPEND | PREPENDQ => StoreOp::Prepend,
        _ => StoreOp::Set,
    }
}

/// The whole length of the frame `buf` starts with, once its header is complete (what
/// `body_len` says; a hint of how much input to make room for, bounded by the caller).
pub fn pending_len(buf: &[u8]) -> Option<usize> {
    let h = parse_header(buf)?;
    HEADER_LEN.checked_add(usize::try_from(h.body_len).ok()?)
}

/// Parses one frame from the start of `buf`: the request and the bytes it used.
pub fn parse<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<(BinaryRequest<'a>, usize), BinaryError> {
    let Some(h) = parse_header(buf) else {
        return Err(BinaryError::Incomplete);
    };
    let shape = check_header(&h, limits)?;
    let (extras_len, key_len) = (usize::from(h.extras_len), usize::from(h.key_len));
    let head_len = HEADER_LEN + extras_len + key_len;
    let (Some(extras), Some(key)) = (
        buf.get(HEADER_LEN..HEADER_LEN + extras_len),
        buf.get(HEADER_LEN + extras_len..head_len),
    ) else {
        return Err(BinaryError::Incomplete);
    };
    let (command, consumed) = match shape {
        Shape::Storage | Shape::Concat => storage_command(&h, buf, extras, limits)?,
        Shape::SaslAuth => {
            let end = HEADER_LEN + h.body_len as usize;
            let Some(data) = buf.get(head_len..end) else {
                return Err(BinaryError::Incomplete);
            };
            let step = h.opcode == opcode::SASL_STEP;
            (Command::SaslAuth { step, data }, end)
        }
        _ => {
            // touch/gat/stat end after the key, whatever body_len says (as in memcached).
            let end = match shape {
                Shape::Touch | Shape::Stat => head_len,
                _ => HEADER_LEN + h.body_len as usize,
            };
            if buf.len() < end {
                return Err(BinaryError::Incomplete);
            }
            (simple_command(h.opcode, shape, extras), end)
        }
    };
    let request = BinaryRequest {
        opcode: h.opcode,
        quiet: is_quiet(h.opcode),
        opaque: h.opaque,
        cas: h.cas,
        key,
        command,
    };
    Ok((request, consumed))
}

/// Validates a header the way memcached does, in its order; the opcode's shape if it is served.
fn check_header(h: &Header, limits: &Limits) -> Result<Shape, BinaryError> {
    let reject = |status: Option<Status>, swallow: usize, close: bool| {
        BinaryError::Invalid(BinaryRejection {
            status,
            opcode: h.opcode,
            opaque: h.opaque,
            consumed: HEADER_LEN,
            swallow,
            close,
        })
    };
    if h.magic != REQUEST_MAGIC {
        return Err(reject(None, 0, true));
    }
    let (extras_len, key_len) = (usize::from(h.extras_len), usize::from(h.key_len));
    let body_len = h.body_len as usize;
    if key_len > body_len || key_len + extras_len > body_len {
        return Err(reject(Some(Status::UnknownCommand), 0, true));
    }
    if limits.sasl == SaslGate::Locked
        && !matches!(
            h.opcode,
            opcode::SASL_LIST_MECHS | opcode::SASL_AUTH | opcode::SASL_STEP | opcode::VERSION
        )
    {
        // memcached checks this before anything else but the lengths, and closes.
        return Err(reject(Some(Status::AuthError), 0, true));
    }
    if key_len > limits.key_len_max {
        return Err(reject(Some(Status::InvalidArguments), 0, true));
    }
    let Some(shape) = shape_of(h.opcode) else {
        // memcached drops extras and key twice over (see the module docs).
        let swallow = body_len.saturating_add(extras_len).saturating_add(key_len);
        return Err(reject(Some(Status::UnknownCommand), swallow, false));
    };
    if !shape_ok(shape, h) {
        return Err(reject(Some(Status::InvalidArguments), 0, true));
    }
    if matches!(shape, Shape::SaslList | Shape::SaslAuth) && limits.sasl == SaslGate::Off {
        return Err(reject(Some(Status::UnknownCommand), body_len, false));
    }
    if shape == Shape::SaslAuth {
        // memcached reads the mechanism, answers, and drops the data.
        let data_len = body_len - key_len;
        if key_len > sasl::MECH_LEN_MAX {
            return Err(reject(
                Some(Status::InvalidArguments),
                key_len + data_len,
                false,
            ));
        }
        if limits.item_total_size(key_len, data_len) > limits.item_size_max {
            return Err(reject(Some(Status::OutOfMemory), key_len + data_len, false));
        }
    }
    Ok(shape)
}

/// set/add/replace/append/prepend: the whole value, or `TooLarge` once header, extras and key
/// are in (the value is then swallowed, never buffered).
fn storage_command<'a>(
    h: &Header,
    buf: &'a [u8],
    extras: &[u8],
    limits: &Limits,
) -> Result<(Command<'a>, usize), BinaryError> {
    let (extras_len, key_len) = (usize::from(h.extras_len), usize::from(h.key_len));
    let head_len = HEADER_LEN + extras_len + key_len;
    let value_len = h.body_len as usize - extras_len - key_len;
    let op = store_op(h.opcode);
    let client_flags = be_u32(extras, 0);
    // memcached stores nonzero client flags in 4 extra bytes, which count against -I.
    let flags_len = if client_flags == 0 { 0 } else { 4 };
    let item_size = limits
        .item_total_size(key_len, value_len)
        .saturating_add(flags_len);
    if item_size > limits.item_size_max {
        let command = Command::TooLarge {
            op,
            swallow: value_len,
        };
        return Ok((command, head_len));
    }
    let end = head_len + value_len;
    let Some(value) = buf.get(head_len..end) else {
        return Err(BinaryError::Incomplete);
    };
    let command = Command::Store {
        op,
        client_flags,
        exptime: be_u32(extras, 4),
        value,
    };
    Ok((command, end))
}

fn simple_command(op: u8, shape: Shape, extras: &[u8]) -> Command<'static> {
    use opcode::*;
    match shape {
        Shape::Bare => match op {
            NOOP => Command::Noop,
            VERSION => Command::Version,
            _ => Command::Quit,
        },
        Shape::KeyOnly => match op {
            DELETE | DELETEQ => Command::Delete,
            _ => Command::Get {
                with_key: matches!(op, GETK | GETKQ),
                touch_exptime: None,
            },
        },
        Shape::Arith => Command::Arith {
            incr: matches!(op, INCREMENT | INCREMENTQ),
            delta: be_u64(extras, 0),
            initial: be_u64(extras, 8),
            exptime: be_u32(extras, 16),
        },
        Shape::Touch => {
            let exptime = be_u32(extras, 0);
            match op {
                TOUCH => Command::Touch { exptime },
                _ => Command::Get {
                    with_key: matches!(op, GATK | GATKQ),
                    touch_exptime: Some(exptime),
                },
            }
        }
        Shape::Flush => Command::Flush {
            exptime: be_u32(extras, 0),
        },
        Shape::Stat => Command::Stat,
        Shape::SaslList => Command::SaslList,
        // Storage and SASL auth shapes are handled by the caller.
        Shape::Storage | Shape::Concat | Shape::SaslAuth => Command::Noop,
    }
}

// ---- responses ----

/// Appends a response: header, extras, key, value.
#[allow(clippy::too_many_arguments)]
pub fn response(
    out: &mut Vec<u8>,
    opcode: u8,
    status: Status,
    opaque: u32,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let body_len = extras.len() + key.len() + value.len();
    out.reserve(HEADER_LEN + body_len);
    out.push(RESPONSE_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0); // data type
    out.extend_from_slice(&status.code().to_be_bytes());
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// An error response with memcached's message body and cas 0.
pub fn error(out: &mut Vec<u8>, opcode: u8, status: Status, opaque: u32) {
    response(out, opcode, status, opaque, 0, &[], &[], status.message());
}

/// A success response with no body (set, delete, noop, flush, quit, ...).
pub fn success(out: &mut Vec<u8>, opcode: u8, opaque: u32, cas: u64) {
    response(out, opcode, Status::Success, opaque, cas, &[], &[], &[]);
}

/// Converts a text stats reply (`STAT name value\r\n`... `END\r\n`) to binary stat responses:
/// one per line with key = name and value = value, then the empty-key terminator.
pub fn stats_from_text(text: &[u8], opaque: u32, out: &mut Vec<u8>) {
    stat_entries_from_text(text, opaque, out);
    success(out, opcode::STAT, opaque, 0);
}

/// [`stats_from_text`] without the terminating empty stat (memcached sends none after
/// `sizes_enable` / `sizes_disable`).
pub fn stat_entries_from_text(text: &[u8], opaque: u32, out: &mut Vec<u8>) {
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"STAT ") else {
            continue;
        };
        let (name, value) = match rest.iter().position(|&b| b == b' ') {
            Some(at) => (
                rest.get(..at).unwrap_or_default(),
                rest.get(at + 1..).unwrap_or_default(),
            ),
            None => (rest, &[][..]),
        };
        response(
            out,
            opcode::STAT,
            Status::Success,
            opaque,
            0,
            &[],
            name,
            value,
        );
    }
}

/// Request encoder (tests and tools): a frame with the given parts.
pub fn request(
    opcode: u8,
    opaque: u32,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    response(
        &mut out,
        opcode,
        Status::Success,
        opaque,
        cas,
        extras,
        key,
        value,
    );
    if let Some(m) = out.first_mut() {
        *m = REQUEST_MAGIC;
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: Limits = Limits::DEFAULT;

    fn flags_exp(f: u32, e: u32) -> Vec<u8> {
        let mut v = f.to_be_bytes().to_vec();
        v.extend_from_slice(&e.to_be_bytes());
        v
    }

    fn valid_frames() -> Vec<Vec<u8>> {
        let mut arith = 5u64.to_be_bytes().to_vec();
        arith.extend_from_slice(&7u64.to_be_bytes());
        arith.extend_from_slice(&0u32.to_be_bytes());
        vec![
            request(opcode::GET, 1, 0, &[], b"foo", &[]),
            request(opcode::GETKQ, 2, 0, &[], b"foo", &[]),
            request(opcode::SET, 3, 9, &flags_exp(5, 0), b"foo", b"bar"),
            request(opcode::APPENDQ, 4, 0, &[], b"k", b"tail"),
            request(opcode::DELETE, 5, 0, &[], b"k", &[]),
            request(opcode::INCREMENT, 6, 0, &arith, b"n", &[]),
            request(opcode::GATK, 7, 0, &100u32.to_be_bytes(), b"k", &[]),
            request(opcode::TOUCH, 7, 0, &100u32.to_be_bytes(), b"k", &[]),
            request(opcode::FLUSH, 8, 0, &[], &[], &[]),
            request(opcode::FLUSHQ, 8, 0, &10u32.to_be_bytes(), &[], &[]),
            request(opcode::NOOP, 9, 0, &[], &[], &[]),
            request(opcode::VERSION, 10, 0, &[], &[], &[]),
            request(opcode::STAT, 11, 0, &[], b"items", &[]),
            request(opcode::QUITQ, 12, 0, &[], &[], &[]),
        ]
    }

    #[test]
    fn pending_len_is_the_header_and_its_body() {
        let mut frame = vec![0u8; HEADER_LEN];
        frame[0] = 0x80;
        frame[8..12].copy_from_slice(&70_000u32.to_be_bytes());
        assert_eq!(pending_len(&frame), Some(HEADER_LEN + 70_000));
        assert_eq!(pending_len(&frame[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn set_parses_every_field() {
        let f = request(opcode::SETQ, 0xdead, 42, &flags_exp(5, 60), b"foo", b"bar");
        let (r, n) = parse(&f, &L).unwrap();
        assert_eq!(n, f.len());
        assert_eq!(r.opcode, opcode::SETQ);
        assert!(r.quiet);
        assert_eq!((r.opaque, r.cas, r.key), (0xdead, 42, &b"foo"[..]));
        assert_eq!(
            r.command,
            Command::Store {
                op: StoreOp::Set,
                client_flags: 5,
                exptime: 60,
                value: b"bar"
            }
        );
    }

    #[test]
    fn incomplete_at_every_split_point() {
        for f in valid_frames() {
            let whole = parse(&f, &L).unwrap();
            assert_eq!(whole.1, f.len());
            for cut in 0..f.len() {
                assert_eq!(
                    parse(&f[..cut], &L),
                    Err(BinaryError::Incomplete),
                    "{f:?} cut {cut}"
                );
            }
            // A following frame does not change the parse.
            let mut two = f.clone();
            two.extend_from_slice(&f);
            assert_eq!(parse(&two, &L).unwrap(), whole);
        }
    }

    #[test]
    fn malformed_frames_are_rejected_like_memcached() {
        let mut bad_magic = request(opcode::NOOP, 0, 0, &[], &[], &[]);
        bad_magic[0] = 0x00;
        let r = |f: &[u8]| match parse(f, &L) {
            Err(BinaryError::Invalid(rej)) => rej,
            other => panic!("{other:?}"),
        };
        assert_eq!(r(&bad_magic).status, None);
        assert!(r(&bad_magic).close);
        let long = vec![b'k'; 251];
        let rej = r(&request(opcode::GET, 0, 0, &[], &long, &[]));
        assert_eq!(
            (rej.status, rej.close),
            (Some(Status::InvalidArguments), true)
        );
        let rej = r(&request(opcode::GET, 0, 0, b"abcd", b"k", &[]));
        assert_eq!(
            (rej.status, rej.close),
            (Some(Status::InvalidArguments), true)
        );
        let rej = r(&request(0x40, 0, 0, b"ab", b"kkk", b"vvvv"));
        assert_eq!(rej.status, Some(Status::UnknownCommand));
        assert_eq!((rej.consumed, rej.swallow, rej.close), (24, 14, false));
        let mut short_body = request(opcode::GET, 0, 0, &[], b"foo", &[]);
        short_body[11] = 1; // body_len 1 < key_len 3
        let rej = r(&short_body);
        assert_eq!(
            (rej.status, rej.close),
            (Some(Status::UnknownCommand), true)
        );
    }

    #[test]
    fn too_large_value_is_not_buffered() {
        let mut f = request(opcode::SET, 0, 0, &flags_exp(0, 0), b"k", &[]);
        let value_len = 100 * 1024 * 1024u32;
        f[8..12].copy_from_slice(&(9 + value_len).to_be_bytes());
        let (r, n) = parse(&f, &L).unwrap();
        assert_eq!(n, f.len());
        assert_eq!(
            r.command,
            Command::TooLarge {
                op: StoreOp::Set,
                swallow: value_len as usize
            }
        );
        // The largest value memcached accepts with `-I 1m`, key `a`, flags 0 is 1048516 bytes.
        let ok = request(
            opcode::SET,
            0,
            0,
            &flags_exp(0, 0),
            b"a",
            &vec![b'x'; 1048516],
        );
        assert!(matches!(
            parse(&ok, &L).unwrap().0.command,
            Command::Store { .. }
        ));
        let big = request(
            opcode::SET,
            0,
            0,
            &flags_exp(0, 0),
            b"a",
            &vec![b'x'; 1048517],
        );
        assert!(matches!(
            parse(&big, &L).unwrap().0.command,
            Command::TooLarge { .. }
        ));
    }

    #[test]
    fn stats_from_text_makes_one_response_per_line() {
        let mut out = Vec::new();
        stats_from_text(b"STAT pid 7\r\nSTAT version 1.6 x\r\nEND\r\n", 3, &mut out);
        let mut expected = Vec::new();
        response(
            &mut expected,
            opcode::STAT,
            Status::Success,
            3,
            0,
            &[],
            b"pid",
            b"7",
        );
        response(
            &mut expected,
            opcode::STAT,
            Status::Success,
            3,
            0,
            &[],
            b"version",
            b"1.6 x",
        );
        success(&mut expected, opcode::STAT, 3, 0);
        assert_eq!(out, expected);
    }

    /// Parses a stream fed in two reads, as the runtime does: every complete frame, in order.
    fn parse_two_reads(stream: &[u8], split: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = stream[..split].to_vec();
        let mut fed = split;
        loop {
            match parse(&buf, &L) {
                Ok((r, n)) => {
                    out.push(format!("{r:?}"));
                    buf.drain(..n);
                }
                Err(BinaryError::Incomplete) if fed < stream.len() => {
                    buf.extend_from_slice(&stream[fed..]);
                    fed = stream.len();
                }
                Err(other) => {
                    out.push(format!("{other:?}"));
                    return out;
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_two_read_split_parses_the_same(
            picks in proptest::collection::vec(0usize..14, 1..8),
            split_seed in any::<usize>(),
        ) {
            let frames = valid_frames();
            let stream: Vec<u8> = picks.iter().flat_map(|&i| frames[i].clone()).collect();
            let whole = parse_two_reads(&stream, stream.len());
            let split = split_seed % (stream.len() + 1);
            prop_assert_eq!(parse_two_reads(&stream, split), whole);
        }

        #[test]
        fn never_panics_and_consumes_within_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            match parse(&bytes, &L) {
                Ok((r, n)) => {
                    prop_assert!(n > 0 && n <= bytes.len());
                    prop_assert!(r.key.len() <= L.key_len_max);
                }
                Err(BinaryError::Incomplete) => {}
                Err(BinaryError::Invalid(rej)) => prop_assert!(rej.consumed > 0),
            }
        }

        #[test]
        fn random_header_fields_never_panic(op in any::<u8>(), key_len in any::<u16>(), extras_len in any::<u8>(), body_len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut f = vec![REQUEST_MAGIC, op];
            f.extend_from_slice(&key_len.to_be_bytes());
            f.push(extras_len);
            f.extend_from_slice(&[0, 0, 0]);
            f.extend_from_slice(&body_len.to_be_bytes());
            f.extend_from_slice(&[0; 12]);
            f.extend_from_slice(&tail);
            if let Ok((_, n)) = parse(&f, &L) {
                prop_assert!(n > 0 && n <= f.len());
            }
        }
    }
}
