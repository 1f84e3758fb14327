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
