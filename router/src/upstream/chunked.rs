//! The chunked transfer coding (RFC 9112 §7.1): where a body ends, and its decoded bytes, fed in
//! pieces. Used for upstream responses and for client request bodies handed to Pingora.

/// Finds the end of a chunked body (RFC 9112 §7.1), fed in pieces.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerLineStart,
    TrailerLine,
    /// After a trailer line's CR.
    TrailerLf,
    EndLf,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl Chunked {
    /// Feeds the next bytes; `Ok(Some(n))`: the body ends after `n` of them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        self.decode(bytes, |_| {})
    }

    /// [`Chunked::feed`], giving `data` the ranges of `bytes` that are chunk data (the
    /// decoded body).
    pub(crate) fn decode(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BadChunk);
                        }
                        self.size = self.size * 16 + d;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = ChunkState::Extension,
                    b'\r' if self.digits > 0 => self.state = ChunkState::SizeLf,
                    _ => return Err(BadChunk),
                },
                // Extensions are skipped, but no bare LF or control byte in them: a decoder
                // that ends the line there would read the rest as data (smuggling).
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\t' => {}
                    0..=0x1f | 0x7f => return Err(BadChunk),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.size_done();
                }
                ChunkState::Data => {
                    let take = (self.size).min((bytes.len() - i) as u64);
                    data(i..i + take as usize);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    _ => return Err(BadChunk),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerLineStart => match b {
                    b'\r' => self.state = ChunkState::EndLf,
                    b'\n' => return Err(BadChunk),
                    _ => self.state = ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b'\n' => return Err(BadChunk),
                    _ => {}
                },
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::TrailerLineStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    return Ok(Some(i + 1));
                }
            }
            i += 1;
        }
        Ok(None)
    }

    fn size_done(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerLineStart
        } else {
            ChunkState::Data
        };
        self.digits = 0;
    }
}

/// Where a chunked body fed in `pieces` ends (`Ok(Some(n))`: after `n` bytes in all), as the
/// router's decoder finds it, with the decoded body; `Err` for a malformed one.
pub fn chunked_end(pieces: &[&[u8]]) -> Result<(Option<usize>, Vec<u8>), BadChunk> {
    let mut scan = Chunked::default();
    let mut at = 0;
    let mut body = Vec::new();
    for p in pieces {
        match scan.decode(p, |r| body.extend_from_slice(&p[r])) {
            Ok(Some(n)) => return Ok((Some(at + n), body)),
            Ok(None) => at += p.len(),
            Err(BadChunk) => return Err(BadChunk),
        }
    }
    Ok((None, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(body: &[u8], piece: usize) -> Result<Option<usize>, BadChunk> {
        let mut c = Chunked::default();
        let mut at = 0;
        for p in body.chunks(piece.max(1)) {
            if let Some(n) = c.feed(p)? {
                return Ok(Some(at + n));
            }
            at += p.len();
        }
        Ok(None)
    }

    #[test]
    fn chunked_end_is_found_in_any_pieces() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..body.len() {
            assert_eq!(scan_all(body, piece).expect("valid"), Some(end), "{piece}");
        }
        assert_eq!(scan_all(b"0\r\n\r\n", 100).expect("valid"), Some(5));
        assert_eq!(scan_all(b"3\r\nabc\r\n", 100).expect("valid"), None);
        assert!(scan_all(b"zz\r\n", 100).is_err());
        assert!(scan_all(b"3\r\nabcX\r\n", 100).is_err());
        assert!(scan_all(b"ffffffffffffffff\r\n", 100).is_err());
    }

    #[test]
    fn chunked_end_is_found_for_generated_bodies() {
        // A small LCG (no dependency): 400 bodies of random chunk sizes (0–5000, hex in either
        // case), extensions and trailers, each fed in random pieces, followed by the next
        // message's bytes; the scanner must stop exactly at the body's end.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n.max(1)
        };
        for case in 0..400 {
            let mut body = Vec::new();
            for _ in 0..next(6) {
                let size = next(5000) + 1;
                let hex = if next(2) == 0 {
                    format!("{size:x}")
                } else {
                    format!("{size:X}")
                };
                body.extend_from_slice(hex.as_bytes());
                if next(3) == 0 {
                    body.extend_from_slice(b";name=\"v\"");
                }
                body.extend_from_slice(b"\r\n");
                body.extend((0..size).map(|i| (i % 251) as u8));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in 0..next(3) {
                body.extend_from_slice(format!("x-t{t}: {case}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut scan = Chunked::default();
            let mut at = 0;
            let found = loop {
                assert!(at < body.len(), "case {case}: no end found");
                let piece = ((next(3000) + 1) as usize).min(body.len() - at);
                if let Some(n) = scan.feed(&body[at..at + piece]).expect("valid") {
                    break at + n;
                }
                at += piece;
            };
            assert_eq!(found, end, "case {case}");
        }
    }

    #[test]
    fn line_ends_are_crlf_and_extensions_have_no_control_bytes() {
        for bad in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3;x\nabc\r\n0\r\n\r\n",
            b"3;a\x01b\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\n\n",
            b"\r\n",
        ] {
            assert!(
                scan_all(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            scan_all(b"3;a=\"b\tc\"\r\nabc\r\n0\r\n\r\n", 100).expect("valid"),
            Some(21)
        );
    }
}
