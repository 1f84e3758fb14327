//! The few DNS messages the ACME DNS-01 code sends, built and parsed by hand: a TXT query (to check
//! propagation on the authoritative server), an RFC 2136 UPDATE adding or deleting TXT values, and
//! TSIG (RFC 8945, hmac-sha256 / hmac-sha512) to sign the update and verify the answer.
//!
//! Pure: bytes in, bytes out, no sockets. Every parse of a received message is bounds-checked and
//! returns an error instead of panicking.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_TSIG: u16 = 250;
pub const CLASS_IN: u16 = 1;
pub const CLASS_NONE: u16 = 254;
pub const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5;

/// A malformed name or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS message: {0}")]
pub struct WireError(pub String);

fn werr(m: impl Into<String>) -> WireError {
    WireError(m.into())
}

/// Appends `name` (absolute or not; a trailing dot is optional) in uncompressed wire form, lower
/// case (the canonical form TSIG needs for key and algorithm names).
pub fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), WireError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(werr(format!("bad label in name {name:?}")));
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    if out.len() > 65_000 {
        return Err(werr("message too large"));
    }
    Ok(())
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// TXT RDATA: the value split into character-strings of at most 255 bytes.
pub fn txt_rdata(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        out.push(0);
    }
    for chunk in bytes.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
}

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    put_u16(&mut out, id);
    put_u16(&mut out, flags);
    for c in counts {
        put_u16(&mut out, c);
    }
    out
}

/// A non-recursive query (`RD=0`: we ask the authoritative server itself).
pub fn query(
    id: u16,
    name: &str,
    rtype: u16,
    recursion_desired: bool,
) -> Result<Vec<u8>, WireError> {
    let flags = if recursion_desired { 0x0100 } else { 0 };
    let mut out = header(id, flags, [1, 0, 0, 0]);
    put_name(&mut out, name)?;
    put_u16(&mut out, rtype);
    put_u16(&mut out, CLASS_IN);
    Ok(out)
}

/// One change of an UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add this TXT value (other values at the name stay).
    AddTxt {
        name: String,
        value: String,
        ttl: u32,
    },
    /// Delete exactly this TXT value (others stay).
    DeleteTxt { name: String, value: String },
}

/// An RFC 2136 UPDATE for `zone` with the given changes (unsigned).
pub fn update(id: u16, zone: &str, changes: &[Change]) -> Result<Vec<u8>, WireError> {
    let count = u16::try_from(changes.len()).map_err(|_| werr("too many changes"))?;
    let mut out = header(id, OPCODE_UPDATE << 11, [1, 0, count, 0]);
    put_name(&mut out, zone)?;
    put_u16(&mut out, TYPE_SOA);
    put_u16(&mut out, CLASS_IN);
    for c in changes {
        let (name, value, class, ttl) = match c {
            Change::AddTxt { name, value, ttl } => (name, value, CLASS_IN, *ttl),
            Change::DeleteTxt { name, value } => (name, value, CLASS_NONE, 0),
        };
        put_name(&mut out, name)?;
        put_u16(&mut out, TYPE_TXT);
        put_u16(&mut out, class);
        put_u32(&mut out, ttl);
        let rdata = txt_rdata(value);
        put_u16(
            &mut out,
            u16::try_from(rdata.len()).map_err(|_| werr("TXT value too long"))?,
        );
        out.extend_from_slice(&rdata);
    }
    Ok(out)
}

/// TSIG algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha512,
}

impl TsigAlgorithm {
    pub fn parse(name: &str) -> Option<TsigAlgorithm> {
        match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }

    fn wire_name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256.",
            TsigAlgorithm::HmacSha512 => "hmac-sha512.",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            TsigAlgorithm::HmacSha256 => hmac::HMAC_SHA256,
            TsigAlgorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// A TSIG key: name, algorithm and secret (already base64-decoded).
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    key: hmac::Key,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

pub const FUDGE: u16 = 300;

impl TsigKey {
    pub fn new(name: &str, algorithm: TsigAlgorithm, secret: &[u8]) -> TsigKey {
        TsigKey {
            name: name.to_string(),
            algorithm,
            key: hmac::Key::new(algorithm.ring(), secret),
        }
    }

    /// The TSIG variables (RFC 8945 §4.3.3) appended to the digest.
    fn variables(
        &self,
        time_signed: u64,
        fudge: u16,
        error: u16,
        other: &[u8],
    ) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::with_capacity(64);
        put_name(&mut v, &self.name)?;
        put_u16(&mut v, CLASS_ANY);
        put_u32(&mut v, 0);
        put_name(&mut v, self.algorithm.wire_name())?;
        v.extend_from_slice(&time_signed.to_be_bytes()[2..]);
        put_u16(&mut v, fudge);
        put_u16(&mut v, error);
        put_u16(&mut v, other.len() as u16);
        v.extend_from_slice(other);
        Ok(v)
    }

    /// Signs `msg` (a complete message without TSIG) in place: appends the TSIG record and bumps
    /// ARCOUNT. Returns the MAC, needed to verify the answer.
    pub fn sign(&self, msg: &mut Vec<u8>, now: SystemTime) -> Result<Vec<u8>, WireError> {
        if msg.len() < 12 {
            return Err(werr("message shorter than its header"));
        }
        let time_signed = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(msg);
        ctx.update(&self.variables(time_signed, FUDGE, 0, &[])?);
        let mac = ctx.sign().as_ref().to_vec();
        let id = [msg[0], msg[1]];

        let mut rdata = Vec::with_capacity(mac.len() + 32);
        put_name(&mut rdata, self.algorithm.wire_name())?;
        rdata.extend_from_slice(&time_signed.to_be_bytes()[2..]);
        put_u16(&mut rdata, FUDGE);
        put_u16(&mut rdata, mac.len() as u16);
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&id);
        put_u16(&mut rdata, 0);
        put_u16(&mut rdata, 0);

        put_name(msg, &self.name)?;
        put_u16(msg, TYPE_TSIG);
        put_u16(msg, CLASS_ANY);
        put_u32(msg, 0);
        put_u16(msg, rdata.len() as u16);
        msg.extend_from_slice(&rdata);
        let ar = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(1);
        msg[10..12].copy_from_slice(&ar.to_be_bytes());
        Ok(mac)
    }

    /// Verifies the TSIG of an answer to a request whose MAC was `request_mac`.
    pub fn verify(&self, answer: &Message, raw: &[u8], request_mac: &[u8]) -> Result<(), String> {
        let Some(t) = &answer.tsig else {
            return Err("the answer is not signed".into());
        };
        if t.mac.is_empty() {
            // A server that could not verify our request (BADKEY/BADSIG) answers unsigned.
            return Err(format!(
                "the server rejected our signature ({})",
                tsig_error_name(t.error)
            ));
        }
        let mut unsigned = match raw.get(..t.offset) {
            Some(u) if u.len() >= 12 => u.to_vec(),
            _ => return Err("the answer's TSIG record is misplaced".into()),
        };
        let ar = answer.arcount.saturating_sub(1);
        unsigned[10..12].copy_from_slice(&ar.to_be_bytes());
        unsigned[0..2].copy_from_slice(&t.original_id.to_be_bytes());
        let mut data = Vec::with_capacity(unsigned.len() + request_mac.len() + 128);
        data.extend_from_slice(&(request_mac.len() as u16).to_be_bytes());
        data.extend_from_slice(request_mac);
        data.extend_from_slice(&unsigned);
        data.extend_from_slice(
            &self
                .variables(t.time_signed, t.fudge, t.error, &t.other)
                .map_err(|e| e.to_string())?,
        );
        // Constant-time comparison inside ring.
        hmac::verify(&self.key, &data, &t.mac)
            .map_err(|_| "the answer's TSIG signature does not verify".to_string())?;
        Ok(())
    }
}

pub fn rcode_name(rcode: u16) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        other => format!("RCODE{other}"),
    }
}

pub fn tsig_error_name(error: u16) -> String {
    match error {
        0 => "no TSIG error".into(),
        16 => "BADSIG: wrong secret".into(),
        17 => "BADKEY: unknown key name or algorithm".into(),
        18 => "BADTIME: clocks differ by more than the fudge".into(),
        22 => "BADTRUNC".into(),
        other => format!("TSIG error {other}"),
    }
}

/// The TSIG record of a received message.
#[derive(Debug, Clone)]
pub struct ReceivedTsig {
    /// Where the TSIG record starts in the raw message.
    pub offset: usize,
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub original_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
}

/// What we read from an answer.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u16,
    pub flags: u16,
    pub arcount: u16,
    /// TXT values in the answer section whose owner is the queried name (character-strings
    /// joined).
    pub txt: Vec<String>,
    /// Record types found in the answer section.
    pub answer_types: Vec<u16>,
    /// NS target names in the answer section.
    pub ns: Vec<String>,
    /// A/AAAA addresses in the answer section.
    pub addrs: Vec<std::net::IpAddr>,
    pub tsig: Option<ReceivedTsig>,
}

impl Message {
    pub fn rcode(&self) -> u16 {
        self.flags & 0x000f
    }
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }
    pub fn truncated(&self) -> bool {
        self.flags & 0x0200 != 0
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let v = *self.b.get(self.pos).ok_or_else(|| werr("truncated"))?;
        self.pos += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or_else(|| werr("truncated"))?;
        let s = self.b.get(self.pos..end).ok_or_else(|| werr("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    /// Reads a possibly compressed name, lower case, without the trailing dot.
    fn name(&mut self) -> Result<String, WireError> {
        let mut labels: Vec<String> = Vec::new();
        let mut pos = self.pos;
        let mut jumped = false;
        let mut jumps = 0;
        loop {
            let len = *self.b.get(pos).ok_or_else(|| werr("truncated name"))?;
            if len & 0xc0 == 0xc0 {
                let lo = *self.b.get(pos + 1).ok_or_else(|| werr("truncated name"))?;
                if !jumped {
                    self.pos = pos + 2;
                }
                jumped = true;
                jumps += 1;
                if jumps > 64 {
                    return Err(werr("name compression loop"));
                }
                pos = (usize::from(len & 0x3f) << 8) | usize::from(lo);
                continue;
            }
            if len & 0xc0 != 0 {
                return Err(werr("unsupported label type"));
            }
            if len == 0 {
                if !jumped {
                    self.pos = pos + 1;
                }
                break;
            }
            let start = pos + 1;
            let end = start + usize::from(len);
            let label = self
                .b
                .get(start..end)
                .ok_or_else(|| werr("truncated label"))?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            if labels.len() > 128 {
                return Err(werr("name too long"));
            }
            pos = end;
        }
        Ok(labels.join("."))
    }
}

/// Parses an answer: header, answer section (TXT/NS/A/AAAA), and the TSIG record if present.
pub fn parse(raw: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader { b: raw, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()?;
    let an = r.u16()?;
    let ns = r.u16()?;
    let ar = r.u16()?;
    let mut qname = String::new();
    for _ in 0..qd {
        qname = r.name()?;
        r.u16()?;
        r.u16()?;
    }
    let mut msg = Message {
        id,
        flags,
        arcount: ar,
        txt: Vec::new(),
        answer_types: Vec::new(),
        ns: Vec::new(),
        addrs: Vec::new(),
        tsig: None,
    };
    let total = u32::from(an) + u32::from(ns) + u32::from(ar);
    for i in 0..total {
        let start = r.pos;
        let owner = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let _ttl = r.u32()?;
        let rdlen = usize::from(r.u16()?);
        let rdata_start = r.pos;
        let rdata = r.bytes(rdlen)?;
        let in_answer = i < u32::from(an);
        if in_answer {
            msg.answer_types.push(rtype);
        }
        match rtype {
            TYPE_TXT if in_answer && owner == qname => {
                let mut s = Vec::new();
                let mut p = 0;
                while p < rdata.len() {
                    let l = usize::from(rdata[p]);
                    let chunk = rdata
                        .get(p + 1..p + 1 + l)
                        .ok_or_else(|| werr("bad TXT rdata"))?;
                    s.extend_from_slice(chunk);
                    p += 1 + l;
                }
                msg.txt.push(String::from_utf8_lossy(&s).into_owned());
            }
            2 if in_answer => {
                let mut sub = Reader {
                    b: raw,
                    pos: rdata_start,
                };
                msg.ns.push(sub.name()?);
            }
            1 if in_answer && rdata.len() == 4 => {
                msg.addrs.push(std::net::IpAddr::from([
                    rdata[0], rdata[1], rdata[2], rdata[3],
                ]));
            }
            28 if in_answer && rdata.len() == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                msg.addrs.push(std::net::IpAddr::from(a));
            }
            TYPE_TSIG if i + 1 == total => {
                let mut t = Reader {
                    b: raw,
                    pos: rdata_start,
                };
                let _alg = t.name()?;
                let hi = u64::from(t.u16()?);
                let lo = u64::from(t.u32()?);
                let fudge = t.u16()?;
                let mac_len = usize::from(t.u16()?);
                let mac = t.bytes(mac_len)?.to_vec();
                let original_id = t.u16()?;
                let error = t.u16()?;
                let other_len = usize::from(t.u16()?);
                let other = t.bytes(other_len)?.to_vec();
                msg.tsig = Some(ReceivedTsig {
                    offset: start,
                    time_signed: (hi << 32) | lo,
                    fudge,
                    mac,
                    original_id,
                    error,
                    other,
                });
            }
            _ => {}
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_rdata_splits_long_values() {
        assert_eq!(txt_rdata("abc"), b"\x03abc".to_vec());
        let long = "x".repeat(300);
        let r = txt_rdata(&long);
        assert_eq!(r[0], 255);
        assert_eq!(r[256], 45);
        assert_eq!(r.len(), 302);
    }

    #[test]
    fn names_are_lowercased_and_checked() {
        let mut v = Vec::new();
        put_name(&mut v, "_ACME-challenge.Hubify.test.").unwrap();
        assert_eq!(v, b"\x0f_acme-challenge\x06hubify\x04test\x00".to_vec());
        assert!(put_name(&mut Vec::new(), "a..b").is_err());
        assert!(put_name(&mut Vec::new(), &"x".repeat(64)).is_err());
    }

    #[test]
    fn signed_update_verifies_with_the_same_key_and_not_another() {
        let key = TsigKey::new("acme-key", TsigAlgorithm::HmacSha256, b"secret-secret");
        let mut msg = update(
            7,
            "hubify.test.",
            &[Change::AddTxt {
                name: "_acme-challenge.hubify.test".into(),
                value: "v1".into(),
                ttl: 60,
            }],
        )
        .unwrap();
        let unsigned_len = msg.len();
        let mac = key.sign(&mut msg, SystemTime::now()).unwrap();
        assert_eq!(mac.len(), 32);
        let parsed = parse(&msg).unwrap();
        let t = parsed.tsig.clone().unwrap();
        assert_eq!(t.offset, unsigned_len);
        assert_eq!(t.mac, mac);
        assert_eq!(t.original_id, 7);
        assert_eq!(parsed.arcount, 1);
        // Re-deriving the request MAC the way a server does.
        let mut unsigned = msg[..t.offset].to_vec();
        unsigned[10..12].copy_from_slice(&0u16.to_be_bytes());
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, b"secret-secret"));
        ctx.update(&unsigned);
        ctx.update(&key.variables(t.time_signed, t.fudge, 0, &[]).unwrap());
        assert_eq!(ctx.sign().as_ref(), &mac[..]);
    }

    #[test]
    fn parse_survives_garbage() {
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse(&junk);
        }
        // A compression loop.
        let mut m = header(1, 0x8000, [1, 0, 0, 0]);
        m.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1]);
        assert!(parse(&m).is_err());
    }
}
