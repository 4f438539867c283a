//! Zero-copy STUN/TURN message and ChannelData codec.
//!
//! Parsing borrows from the datagram: [`Message`] holds slices and decoded
//! addresses, never an owned buffer, so the relay path can classify and parse
//! a packet without touching the heap. Writing goes through [`MessageWriter`],
//! which appends to a caller-owned `Vec<u8>` that the caller reuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The fixed magic cookie of RFC 8489 (§5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Channel numbers we accept (see [`Kind::ChannelData`]).
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;
/// STUN header length.
pub const HEADER_LEN: usize = 20;
/// ChannelData header length (RFC 8656 §12.4).
pub const CHANNEL_HEADER_LEN: usize = 4;
/// The most a Data indication header can take in front of the payload:
/// STUN header + XOR-PEER-ADDRESS (IPv6) + DATA attribute header.
pub const MAX_DATA_INDICATION_OVERHEAD: usize = HEADER_LEN + 4 + 20 + 4;

/// Methods we understand.
pub mod method {
    /// STUN Binding.
    pub const BINDING: u16 = 0x001;
    /// TURN Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// TURN Refresh.
    pub const REFRESH: u16 = 0x004;
    /// TURN Send (indication only).
    pub const SEND: u16 = 0x006;
    /// TURN Data (indication only).
    pub const DATA: u16 = 0x007;
    /// TURN CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// TURN ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types we understand.
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256 (not supported; we answer with SHA1 only).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH.
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11; comprehension-optional):
    /// asks for an IPv6 relayed address besides the IPv4 one.
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of a dual
    /// allocation was not granted.
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
}

/// Message class (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Request.
    Request,
    /// Indication.
    Indication,
    /// Success response.
    Success,
    /// Error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// Why a datagram could not be parsed. RFC 8489 §6.3: a message that fails
/// the basic checks (framing, length, FINGERPRINT) is discarded silently;
/// only a well-framed message with a bad attribute value earns a 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Too short, wrong cookie, a length that does not match the datagram,
    /// attributes that do not tile the message, or not STUN at all.
    #[error("not a STUN message")]
    NotStun,
    /// Well framed, but a known attribute's value is malformed.
    #[error("malformed attribute 0x{0:04x}")]
    BadAttribute(u16),
    /// FINGERPRINT wrong, misplaced or of the wrong length.
    #[error("bad fingerprint")]
    BadFingerprint,
}

impl ParseError {
    /// Whether the sender of a request that failed this way gets a 400
    /// (otherwise the message is dropped without an answer).
    pub fn answerable(self) -> bool {
        matches!(self, ParseError::BadAttribute(_))
    }
}

/// What a datagram on a client transport is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (first two bits 00).
    Stun,
    /// ChannelData (first byte 0x40..=0x7F). RFC 8656 narrowed channel
    /// numbers to 0x4000..=0x4FFF, but RFC 5766 clients (coturn's own
    /// `turnutils_uclient`, pjnath) still pick up to 0x7FFF; the first byte
    /// 0x50..=0x7F collides with nothing in RFC 7983 demultiplexing, so we
    /// accept the old range for interoperability.
    ChannelData,
    /// Anything else: dropped.
    Other,
}

/// Classify by the first byte (RFC 8656 §12: the first two bits demultiplex).
#[inline]
pub fn classify(data: &[u8]) -> Kind {
    match data.first() {
        Some(b) if b & 0xC0 == 0 => Kind::Stun,
        Some(b) if (0x40..=0x7F).contains(b) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// Parse a ChannelData message; returns the channel and the payload.
/// `data` may be longer than the message (TCP padding); the payload is cut
/// to the declared length.
#[inline]
pub fn parse_channel_data(data: &[u8]) -> Option<(u16, &[u8])> {
    if data.len() < CHANNEL_HEADER_LEN {
        return None;
    }
    let channel = u16::from_be_bytes([data[0], data[1]]);
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if !CHANNEL_RANGE.contains(&channel) || data.len() < CHANNEL_HEADER_LEN + len {
        return None;
    }
    Some((channel, &data[CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len]))
}

/// How many bytes a framed message at the start of a TCP stream needs, if the
/// header is complete. ChannelData over TCP is padded to 4 (RFC 8656 §12.5).
pub fn stream_frame_len(data: &[u8]) -> Option<usize> {
    if data.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    match classify(data) {
        Kind::Stun => Some(HEADER_LEN + len),
        Kind::ChannelData => Some(CHANNEL_HEADER_LEN + len.next_multiple_of(4)),
        Kind::Other => Some(usize::MAX),
    }
}

/// Up to this many XOR-PEER-ADDRESS attributes are kept per message
/// (CreatePermission may carry several); more is answered with 400.
pub const MAX_PEERS: usize = 8;
/// Up to this many distinct unknown comprehension-required attribute types
/// are kept per message (all are listed in a 420's UNKNOWN-ATTRIBUTES).
pub const MAX_UNKNOWN: usize = 8;

/// A parsed STUN message borrowing from the datagram.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The whole message bytes (header included, no trailing garbage).
    pub raw: &'a [u8],
    /// Method (12 bits).
    pub method: u16,
    /// Class.
    pub class: Class,
    /// Transaction id.
    pub transaction_id: [u8; 12],
    /// USERNAME value.
    pub username: Option<&'a [u8]>,
    /// REALM value.
    pub realm: Option<&'a [u8]>,
    /// NONCE value.
    pub nonce: Option<&'a [u8]>,
    /// Offset of the MESSAGE-INTEGRITY attribute header in `raw`, and its value.
    pub integrity: Option<(usize, &'a [u8])>,
    /// LIFETIME seconds.
    pub lifetime: Option<u32>,
    /// REQUESTED-TRANSPORT protocol number.
    pub requested_transport: Option<u8>,
    /// REQUESTED-ADDRESS-FAMILY (0x01 IPv4, 0x02 IPv6).
    pub requested_family: Option<u8>,
    /// ADDITIONAL-ADDRESS-FAMILY (only 0x02 IPv6 is valid; the engine checks).
    pub additional_family: Option<u8>,
    /// CHANNEL-NUMBER.
    pub channel: Option<u16>,
    /// DATA value.
    pub data: Option<&'a [u8]>,
    /// XOR-PEER-ADDRESS values decoded.
    pub peers: [Option<SocketAddr>; MAX_PEERS],
    /// Number of XOR-PEER-ADDRESS attributes seen (may exceed MAX_PEERS).
    pub peer_count: usize,
    /// EVEN-PORT present.
    pub even_port: bool,
    /// RESERVATION-TOKEN present.
    pub reservation_token: bool,
    /// DONT-FRAGMENT present.
    pub dont_fragment: bool,
    /// Unknown comprehension-required attribute types, first
    /// [`Message::unknown_len`] of them (answered with 420).
    pub unknown: [u16; MAX_UNKNOWN],
    /// How many of [`Message::unknown`] are set.
    pub unknown_len: usize,
    /// ERROR-CODE as a number (responses).
    pub error_code: Option<u16>,
    /// XOR-RELAYED-ADDRESS (responses): the first one.
    pub relayed: Option<SocketAddr>,
    /// A second XOR-RELAYED-ADDRESS (the other family of a dual allocation).
    pub relayed_additional: Option<SocketAddr>,
    /// ADDRESS-ERROR-CODE (responses): the family (0x01/0x02) and the code.
    pub address_error: Option<(u8, u16)>,
}

impl<'a> Message<'a> {
    /// Iterator over the peers decoded from XOR-PEER-ADDRESS attributes.
    pub fn peer_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().flatten().copied()
    }

    /// The unknown comprehension-required attribute types, in order of
    /// appearance, without repeats (RFC 8489 §6.3.1: a request with any gets 420).
    pub fn unknown_required(&self) -> &[u16] {
        &self.unknown[..self.unknown_len]
    }
}

/// Parse one STUN message: `data` is exactly one message (a UDP datagram,
/// or a frame the stream transports cut with [`stream_frame_len`]). Validates
/// the header, that the length matches `data`, the attribute framing and the
/// FINGERPRINT when present.
pub fn parse(data: &[u8]) -> Result<Message<'_>, ParseError> {
    if data.len() < HEADER_LEN || data[0] & 0xC0 != 0 {
        return Err(ParseError::NotStun);
    }
    let msg_type = u16::from_be_bytes([data[0], data[1]]);
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let cookie = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if cookie != MAGIC_COOKIE || len % 4 != 0 || data.len() != HEADER_LEN + len {
        return Err(ParseError::NotStun);
    }
    let raw = &data[..HEADER_LEN + len];
    let method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2);
    let class = match ((msg_type >> 4) & 1) | ((msg_type >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&raw[8..20]);
    let mut msg = Message {
        raw,
        method,
        class,
        transaction_id,
        username: None,
        realm: None,
        nonce: None,
        integrity: None,
        lifetime: None,
        requested_transport: None,
        requested_family: None,
        additional_family: None,
        channel: None,
        data: None,
        peers: [None; MAX_PEERS],
        peer_count: 0,
        even_port: false,
        reservation_token: false,
        dont_fragment: false,
        unknown: [0; MAX_UNKNOWN],
        unknown_len: 0,
        error_code: None,
        relayed: None,
        relayed_additional: None,
        address_error: None,
    };
    let mut pos = HEADER_LEN;
    while pos < raw.len() {
        if raw.len() - pos < 4 {
            return Err(ParseError::NotStun);
        }
        let typ = u16::from_be_bytes([raw[pos], raw[pos + 1]]);
        let alen = usize::from(u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]));
        let start = pos + 4;
        let end = start + alen;
        if end > raw.len() {
            return Err(ParseError::NotStun);
        }
        let value = &raw[start..end];
        let next = start + alen.next_multiple_of(4);
        // After MESSAGE-INTEGRITY only FINGERPRINT counts (RFC 8489 §14.5).
        if msg.integrity.is_some() && typ != attr::FINGERPRINT {
            pos = next;
            continue;
        }
        match typ {
            attr::USERNAME => msg.username = Some(value),
            attr::REALM => msg.realm = Some(value),
            attr::NONCE => msg.nonce = Some(value),
            attr::MESSAGE_INTEGRITY => {
                if alen != 20 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.integrity = Some((pos, value));
            }
            attr::LIFETIME => msg.lifetime = Some(be_u32(value, typ)?),
            attr::REQUESTED_TRANSPORT => {
                if alen != 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.requested_transport = Some(value[0]);
            }
            attr::REQUESTED_ADDRESS_FAMILY => {
                if alen != 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.requested_family = Some(value[0]);
            }
            attr::ADDITIONAL_ADDRESS_FAMILY => {
                if alen != 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.additional_family = Some(value[0]);
            }
            attr::ADDRESS_ERROR_CODE => {
                if alen < 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.address_error = Some((value[0], u16::from(value[2] & 7) * 100 + u16::from(value[3])));
            }
            attr::CHANNEL_NUMBER => {
                if alen != 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.channel = Some(u16::from_be_bytes([value[0], value[1]]));
            }
            attr::DATA => msg.data = Some(value),
            attr::XOR_PEER_ADDRESS => {
                let addr = decode_xor_address(value, &transaction_id).ok_or(ParseError::BadAttribute(typ))?;
                if msg.peer_count < MAX_PEERS {
                    msg.peers[msg.peer_count] = Some(addr);
                }
                msg.peer_count += 1;
            }
            attr::EVEN_PORT => msg.even_port = true,
            attr::RESERVATION_TOKEN => msg.reservation_token = true,
            attr::DONT_FRAGMENT => msg.dont_fragment = true,
            attr::FINGERPRINT => {
                if alen != 4 || end != raw.len() {
                    return Err(ParseError::BadFingerprint);
                }
                let want = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                if fingerprint(raw, pos) != want {
                    return Err(ParseError::BadFingerprint);
                }
            }
            // Comprehension-optional (>= 0x8000) and ones we accept and ignore.
            t if t >= 0x8000 => {}
            attr::ERROR_CODE => {
                if alen < 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                msg.error_code = Some(u16::from(value[2] & 7) * 100 + u16::from(value[3]));
            }
            attr::XOR_RELAYED_ADDRESS => {
                let addr = decode_xor_address(value, &transaction_id);
                if msg.relayed.is_none() {
                    msg.relayed = addr;
                } else if msg.relayed_additional.is_none() {
                    msg.relayed_additional = addr;
                }
            }
            attr::XOR_MAPPED_ADDRESS | attr::MAPPED_ADDRESS | attr::UNKNOWN_ATTRIBUTES => {}
            t => {
                if msg.unknown_len < MAX_UNKNOWN && !msg.unknown_required().contains(&t) {
                    msg.unknown[msg.unknown_len] = t;
                    msg.unknown_len += 1;
                }
            }
        }
        pos = next;
    }
    if pos != raw.len() {
        return Err(ParseError::NotStun);
    }
    Ok(msg)
}

fn be_u32(v: &[u8], typ: u16) -> Result<u32, ParseError> {
    <[u8; 4]>::try_from(v).map(u32::from_be_bytes).map_err(|_| ParseError::BadAttribute(typ))
}

/// Decode an XOR-*-ADDRESS value.
pub fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v[1], v.len()) {
        (0x01, 8) => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        (0x02, 20) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(tid);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Encode an XOR-*-ADDRESS value into `out` (8 or 20 bytes); returns length.
pub fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12], out: &mut [u8]) -> usize {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            out[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(tid);
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ key[i];
            }
            20
        }
    }
}

/// CRC-32 of `raw[..fp_offset]` with the length field covering the
/// FINGERPRINT attribute, XORed with 0x5354554e (RFC 8489 §14.7).
fn fingerprint(raw: &[u8], fp_offset: usize) -> u32 {
    let mut header = [0u8; 4];
    header[..2].copy_from_slice(&raw[..2]);
    let len = (fp_offset + 8 - HEADER_LEN) as u16;
    header[2..].copy_from_slice(&len.to_be_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&header);
    h.update(&raw[4..fp_offset]);
    h.finalize() ^ 0x5354_554E
}

type HmacSha1 = Hmac<Sha1>;

/// Check MESSAGE-INTEGRITY with `key` (RFC 8489 §14.5): the HMAC covers the
/// message up to the attribute, with the header length counting up to its end.
pub fn verify_integrity(msg: &Message<'_>, key: &[u8]) -> bool {
    let Some((offset, value)) = msg.integrity else {
        return false;
    };
    let mut header = [0u8; 4];
    header[..2].copy_from_slice(&msg.raw[..2]);
    let len = (offset + 24 - HEADER_LEN) as u16;
    header[2..].copy_from_slice(&len.to_be_bytes());
    let Ok(mut mac) = HmacSha1::new_from_slice(key) else {
        return false;
    };
    mac.update(&header);
    mac.update(&msg.raw[4..offset]);
    mac.verify_slice(value).is_ok()
}

/// Builds one STUN message into a reusable buffer.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    tid: [u8; 12],
}

impl<'b> MessageWriter<'b> {
    /// Start a message of `method`/`class` with transaction id `tid`,
    /// appended at the end of `buf`.
    pub fn new(buf: &'b mut Vec<u8>, method: u16, class: Class, tid: [u8; 12]) -> Self {
        let start = buf.len();
        let c = class.bits();
        let typ =
            (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7);
        buf.extend_from_slice(&typ.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        MessageWriter { buf, start, tid }
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - self.start - HEADER_LEN) as u16;
        self.buf[self.start + 2..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Append a raw attribute (padded to 4).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = value.len().next_multiple_of(4) - value.len();
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self
    }

    /// Append an XOR-encoded address attribute.
    pub fn xor_addr(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let n = encode_xor_address(addr, &self.tid, &mut v);
        self.attr(typ, &v[..n])
    }

    /// Append a u32 attribute.
    pub fn u32(&mut self, typ: u16, value: u32) -> &mut Self {
        self.attr(typ, &value.to_be_bytes())
    }

    /// Append ERROR-CODE.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Append ADDRESS-ERROR-CODE for `family` (0x01 IPv4, 0x02 IPv6).
    pub fn address_error(&mut self, family: u8, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[family, 0, (code / 100) as u8, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ADDRESS_ERROR_CODE, &v)
    }

    /// Append MESSAGE-INTEGRITY computed with `key`.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let offset = self.buf.len();
        self.attr(attr::MESSAGE_INTEGRITY, &[0u8; 20]);
        self.set_len();
        let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.buf[self.start..offset]);
        let tag = mac.finalize().into_bytes();
        self.buf[offset + 4..offset + 24].copy_from_slice(&tag);
        self
    }

    /// Append FINGERPRINT and finish the message.
    pub fn finish_with_fingerprint(mut self) {
        let offset = self.buf.len();
        self.attr(attr::FINGERPRINT, &[0u8; 4]);
        self.set_len();
        let fp = fingerprint(&self.buf[self.start..], offset - self.start);
        self.buf[offset + 4..offset + 8].copy_from_slice(&fp.to_be_bytes());
    }

    /// Finish without FINGERPRINT.
    pub fn finish(mut self) {
        self.set_len();
    }
}

/// Write a Data indication header in front of a payload that already sits at
/// `buf[head..head + len]`; returns the start offset of the message. `buf` must
/// have at least [`MAX_DATA_INDICATION_OVERHEAD`] bytes before `head` and 3
/// spare bytes after the payload for padding. No allocation.
pub fn write_data_indication_in_place(
    buf: &mut [u8],
    head: usize,
    len: usize,
    peer: SocketAddr,
    tid: [u8; 12],
) -> (usize, usize) {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let hdr = HEADER_LEN + 4 + addr_len + 4;
    let start = head - hdr;
    let padded = len.next_multiple_of(4);
    for b in &mut buf[head + len..head + padded] {
        *b = 0;
    }
    let body = (hdr - HEADER_LEN + padded) as u16;
    // Data indication type: method 0x007, class indication => 0x0017.
    buf[start..start + 2].copy_from_slice(&0x0017u16.to_be_bytes());
    buf[start + 2..start + 4].copy_from_slice(&body.to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf[start + 8..start + 20].copy_from_slice(&tid);
    let a = start + HEADER_LEN;
    buf[a..a + 2].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    buf[a + 2..a + 4].copy_from_slice(&(addr_len as u16).to_be_bytes());
    encode_xor_address(peer, &tid, &mut buf[a + 4..a + 4 + addr_len]);
    let d = a + 4 + addr_len;
    buf[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    buf[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    (start, hdr + padded)
}

/// Write a ChannelData header in front of a payload at `buf[head..head+len]`;
/// `pad` adds the 4-byte padding required on stream transports. Returns
/// (start, total length).
pub fn write_channel_data_in_place(buf: &mut [u8], head: usize, len: usize, channel: u16, pad: bool) -> (usize, usize) {
    let start = head - CHANNEL_HEADER_LEN;
    buf[start..start + 2].copy_from_slice(&channel.to_be_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
    let total = if pad {
        let padded = len.next_multiple_of(4);
        for b in &mut buf[head + len..head + padded] {
            *b = 0;
        }
        padded
    } else {
        len
    };
    (start, CHANNEL_HEADER_LEN + total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_request_with_integrity_and_fingerprint() {
        let mut buf = Vec::new();
        let tid = [7u8; 12];
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let peer6: SocketAddr = "[2001:db8::1]:6000".parse().unwrap();
        let mut w = MessageWriter::new(&mut buf, method::CREATE_PERMISSION, Class::Request, tid);
        w.xor_addr(attr::XOR_PEER_ADDRESS, peer)
            .xor_addr(attr::XOR_PEER_ADDRESS, peer6)
            .attr(attr::USERNAME, b"alice")
            .integrity(b"key");
        w.finish_with_fingerprint();
        let msg = parse(&buf).unwrap();
        assert_eq!(msg.method, method::CREATE_PERMISSION);
        assert_eq!(msg.class, Class::Request);
        assert_eq!(msg.peer_addrs().collect::<Vec<_>>(), vec![peer, peer6]);
        assert_eq!(msg.username, Some(&b"alice"[..]));
        assert!(verify_integrity(&msg, b"key"));
        assert!(!verify_integrity(&msg, b"other"));
        // Corrupt a byte: fingerprint catches it.
        let mut bad = buf.clone();
        bad[25] ^= 1;
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(&[0u8; 10]).unwrap_err(), ParseError::NotStun);
        let mut buf = Vec::new();
        MessageWriter::new(&mut buf, method::BINDING, Class::Request, [0; 12]).finish();
        buf[4] = 0; // cookie
        assert!(parse(&buf).is_err());
        assert!(parse_channel_data(&[0x40, 0, 0, 9, 1]).is_none());
        assert_eq!(parse_channel_data(&[0x40, 1, 0, 1, 9]), Some((0x4001, &[9u8][..])));
        assert_eq!(classify(&[0x80]), Kind::Other);
    }

    #[test]
    fn dual_stack_attributes_roundtrip() {
        let mut buf = Vec::new();
        let (v4, v6): (SocketAddr, SocketAddr) =
            ("192.0.2.1:50000".parse().unwrap(), "[2001:db8::1]:50002".parse().unwrap());
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Success, [5; 12]);
        w.xor_addr(attr::XOR_RELAYED_ADDRESS, v4).xor_addr(attr::XOR_RELAYED_ADDRESS, v6).address_error(2, 440, "no");
        w.finish_with_fingerprint();
        let msg = parse(&buf).unwrap();
        assert_eq!((msg.relayed, msg.relayed_additional, msg.address_error), (Some(v4), Some(v6), Some((2, 440))));

        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [6; 12]);
        w.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0]);
        w.finish_with_fingerprint();
        assert_eq!(parse(&buf).unwrap().additional_family, Some(2));
        // A malformed value is a bad attribute (answered with 400), not ignored
        // like an unknown comprehension-optional one.
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [6; 12]);
        w.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &[2]);
        w.finish_with_fingerprint();
        assert_eq!(parse(&buf).unwrap_err(), ParseError::BadAttribute(attr::ADDITIONAL_ADDRESS_FAMILY));
    }

    #[test]
    fn data_indication_in_place_parses() {
        let mut buf = vec![0u8; 200];
        let head = MAX_DATA_INDICATION_OVERHEAD;
        buf[head..head + 5].copy_from_slice(b"hello");
        let peer: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
        let (s, n) = write_data_indication_in_place(&mut buf, head, 5, peer, [3; 12]);
        let msg = parse(&buf[s..s + n]).unwrap();
        assert_eq!(msg.method, method::DATA);
        assert_eq!(msg.class, Class::Indication);
        assert_eq!(msg.data, Some(&b"hello"[..]));
        assert_eq!(msg.peers[0], Some(peer));
    }
}
