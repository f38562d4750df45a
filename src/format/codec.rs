//! Little-endian binary encoding of on-image structures, and the CRC-32C that guards them.
//!
//! Every decoder works on untrusted bytes: a short or malformed input is a [`DecodeError`],
//! never a panic or an out-of-bounds read.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Appends fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    /// The encoded bytes so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A little-endian i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
}

/// Reads fields from a byte slice, checking bounds.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError(format!(
                "needed {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A little-endian i64.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError(format!(
                "string of {n} bytes exceeds the limit of {max}"
            )));
        }
        Ok(self.take(n)?.to_vec())
    }
    /// A count of items that each need at least `min_item` bytes; refuses counts the rest of
    /// the input cannot hold, so a corrupt count cannot make the caller allocate wildly.
    pub fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > (self.remaining() / min_item.max(1)) as u64 {
            return Err(DecodeError(format!(
                "count {n} cannot fit in {} bytes",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
}

/// CRC-32C (Castagnoli) of `data`: the `crc32c` crate's, which uses the CPU's CRC instruction
/// (SSE 4.2 on x86-64, the CRC extension on AArch64) where there is one, and a table elsewhere.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    /// The hardware path works in 8-byte steps with a tail: every length and alignment
    /// must give what the bit-at-a-time definition gives, or images written before would
    /// read as corrupt.
    #[test]
    fn crc32c_matches_the_definition_at_every_length_and_alignment() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in data {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0x82F6_3B78 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        let data: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for len in 0..data.len() - start {
                let piece = &data[start..start + len];
                assert_eq!(crc32c(piece), bitwise(piece), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn reader_refuses_short_input_and_huge_counts() {
        let mut w = Writer::new();
        w.u64(1 << 40).u32(7);
        let mut r = Reader::new(&w.buf);
        assert!(r.count(16).is_err());
        assert!(Reader::new(&[1, 0]).u32().is_err());
    }
}
