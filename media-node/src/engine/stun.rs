//! Just enough STUN to route a first packet: the local ufrag in a Binding request's
//! `USERNAME` (`<receiver ufrag>:<sender ufrag>`, RFC 8445 §7.2.2). Faces the network, so
//! it never panics and never reads past the datagram (fuzzed in `fuzz/`).

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The receiver's (our) ufrag from a STUN message's `USERNAME`, if `data` is one.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != MAGIC_COOKIE {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let end = (20 + declared).min(data.len());
    let mut i = 20;
    while i + 4 <= end {
        let kind = u16::from_be_bytes([data[i], data[i + 1]]);
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        let value = data.get(i + 4..i + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to 4 bytes.
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(username: &[u8], extra_first: bool) -> Vec<u8> {
        let mut attrs = vec![];
        if extra_first {
            // PRIORITY (4 bytes) then a 3-byte attribute that needs padding.
            attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
            attrs.extend_from_slice(&[0x80, 0x2a, 0x00, 0x03, 9, 9, 9, 0]);
        }
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(local_ufrag(&binding(b"srvUfrag:cli", false)), Some("srvUfrag"));
        assert_eq!(local_ufrag(&binding(b"abc:def", true)), Some("abc"), "after padded attributes");
    }

    #[test]
    fn ignores_what_is_not_a_stun_username() {
        assert_eq!(local_ufrag(&[]), None);
        assert_eq!(local_ufrag(&[0x80; 40]), None, "RTP");
        let mut no_cookie = binding(b"a:b", false);
        no_cookie[4] = 0;
        assert_eq!(local_ufrag(&no_cookie), None);
        assert_eq!(local_ufrag(&binding(b":b", false)), None, "empty ufrag");
        assert_eq!(local_ufrag(&binding(&[0xff, 0xfe], false)), None, "not UTF-8");
        let full = binding(b"abcdef:g", false);
        assert_eq!(local_ufrag(&full[..full.len() - 4]), None, "truncated attribute");
    }
}
