//! WebSocket frame boundaries (RFC 6455 §5.2), tracked as bytes pass through the tunnel: the
//! relay never decodes, unmasks or rewrites a payload; it only needs to know where one frame
//! ends and the next begins (to add its own close frame there at shutdown) and whether a close
//! frame went by.

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte masking key.
const HEAD_MAX: usize = 14;
/// The close opcode.
const CLOSE: u8 = 0x8;

/// Where one direction of a WebSocket stands between frames.
#[derive(Debug, Default, Clone)]
pub struct FrameScan {
    /// The frame header read so far (complete headers are consumed at once).
    head: [u8; HEAD_MAX],
    head_len: u8,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
    /// A close frame's header went by.
    close_seen: bool,
    /// Not WebSocket framing (a 64-bit length with its top bit set): no boundary is ever
    /// reported again.
    broken: bool,
}

impl FrameScan {
    /// Passes `bytes` (the next bytes of the stream).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() && !self.broken {
            rest = self.step(rest);
        }
    }

    /// Passes the bytes of `bytes` up to the first frame boundary and returns how many that
    /// is: 0 when the stream is at a boundary now; `None` when `bytes` ends inside a frame (all
    /// of it passed).
    pub fn until_boundary(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut rest = bytes;
        loop {
            if self.at_boundary() {
                return Some(bytes.len() - rest.len());
            }
            if rest.is_empty() || self.broken {
                return None;
            }
            rest = self.step(rest);
        }
    }

    /// Between two frames: a frame of the router's own can go here.
    pub fn at_boundary(&self) -> bool {
        !self.broken && self.head_len == 0 && self.payload_left == 0
    }

    /// A close frame's header has gone by.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Consumes the start of `rest`: payload bytes, or one header byte (completing the header
    /// when it can). Returns what is left.
    fn step<'a>(&mut self, rest: &'a [u8]) -> &'a [u8] {
        if self.payload_left > 0 {
            let take = (rest.len() as u64).min(self.payload_left) as usize;
            self.payload_left -= take as u64;
            return &rest[take..];
        }
        self.head[self.head_len as usize] = rest[0];
        self.head_len += 1;
        let head = &self.head[..self.head_len as usize];
        match header(head) {
            Header::Incomplete => {}
            Header::Broken => self.broken = true,
            Header::Complete { opcode, payload } => {
                if opcode == CLOSE {
                    self.close_seen = true;
                }
                self.payload_left = payload;
                self.head_len = 0;
            }
        }
        &rest[1..]
    }
}

enum Header {
    Incomplete,
    Broken,
    Complete { opcode: u8, payload: u64 },
}

/// Reads the frame header at the start of `head` (RFC 6455 §5.2).
fn header(head: &[u8]) -> Header {
    let [b0, b1, ..] = *head else {
        return Header::Incomplete;
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let total = 2 + ext + if masked { 4 } else { 0 };
    if head.len() < total {
        return Header::Incomplete;
    }
    let payload = match ext {
        0 => u64::from(len7),
        2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[2..10]);
            let n = u64::from_be_bytes(b);
            // "the most significant bit MUST be 0"
            if n >> 63 != 0 {
                return Header::Broken;
            }
            n
        }
    };
    Header::Complete {
        opcode: b0 & 0x0f,
        payload,
    }
}

/// The close frame `1001 Going Away` the router sends a client at shutdown (server to client:
/// unmasked).
pub const GOING_AWAY_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

/// The close frame `1001 Going Away` the router sends an upstream at shutdown (client to
/// server: masked with `key`).
pub fn going_away_to_server(key: [u8; 4]) -> [u8; 8] {
    [
        0x88,
        0x82,
        key[0],
        key[1],
        key[2],
        key[3],
        0x03 ^ key[0],
        0xe9 ^ key[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn boundaries_of_every_length_form_fed_byte_by_byte() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let f = frame(0x2, true, &vec![7u8; len], mask);
                let mut s = FrameScan::default();
                for (i, b) in f.iter().enumerate() {
                    assert!(!s.at_boundary() || i == 0, "len {len}: boundary at {i}");
                    s.feed(&[*b]);
                }
                assert!(s.at_boundary(), "len {len} mask {mask:?}");
                assert!(!s.close_seen());
            }
        }
    }

    #[test]
    fn until_boundary_stops_between_frames() {
        let a = frame(0x1, false, b"hello", None);
        let b = frame(0x0, true, b"world", None);
        let mut bytes = a.clone();
        bytes.extend_from_slice(&b);
        let mut s = FrameScan::default();
        assert_eq!(s.until_boundary(&bytes), Some(0));
        // Inside the first frame: the rest of it, then the boundary.
        let mut s = FrameScan::default();
        s.feed(&a[..3]);
        assert_eq!(s.until_boundary(&bytes[3..]), Some(a.len() - 3));
        assert!(s.at_boundary());
        // A chunk that ends inside a frame.
        let mut s = FrameScan::default();
        s.feed(&a[..1]);
        assert_eq!(s.until_boundary(&a[1..4]), None);
        assert!(!s.at_boundary());
    }

    #[test]
    fn a_close_frame_is_seen_masked_or_not_and_control_frames_between_fragments_pass() {
        let mut s = FrameScan::default();
        s.feed(&frame(0x1, false, b"part", Some([9, 9, 9, 9])));
        s.feed(&frame(0x9, true, b"ping", Some([1, 1, 1, 1])));
        assert!(s.at_boundary() && !s.close_seen());
        s.feed(&frame(0x8, true, &[0x03, 0xe8], Some([5, 6, 7, 8])));
        assert!(s.close_seen());
        let mut s = FrameScan::default();
        s.feed(&GOING_AWAY_TO_CLIENT);
        assert!(s.close_seen() && s.at_boundary());
        let mut s = FrameScan::default();
        s.feed(&going_away_to_server([0xaa, 0xbb, 0xcc, 0xdd]));
        assert!(s.close_seen() && s.at_boundary());
    }

    #[test]
    fn the_router_s_close_frames_say_1001() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let f = going_away_to_server(key);
        assert_eq!([f[6] ^ key[0], f[7] ^ key[1]], [0x03, 0xe9]);
        assert_eq!(u16::from_be_bytes([0x03, 0xe9]), 1001);
        assert_eq!(&GOING_AWAY_TO_CLIENT[2..], &1001u16.to_be_bytes());
    }

    #[test]
    fn a_length_with_its_top_bit_set_is_not_websocket_framing() {
        let mut s = FrameScan::default();
        let mut f = vec![0x82, 127];
        f.extend_from_slice(&(1u64 << 63).to_be_bytes());
        s.feed(&f);
        assert!(!s.at_boundary());
        assert_eq!(s.until_boundary(&[0x82, 0x00]), None);
    }
}
