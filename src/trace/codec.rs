//! Low-level encoding shared by the writer and the reader: LEB128 varints,
//! zigzag for signed values, and CRC-32 (IEEE 802.3, the zlib/PNG one).

/// Append `v` as an unsigned LEB128 varint (7 bits a byte, low first).
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag-map a signed value so small magnitudes stay small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF):
/// the same value as zlib's `crc32()` and Python's `zlib.crc32()`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// Why a read from a [`Cursor`] failed; the caller adds file and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ended inside a value.
    Eof,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    VarintOverflow,
}

/// Reads values from a byte slice, remembering the position for errors.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Eof)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let part = (b & 0x7F) as u64;
            if i == 9 && part > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    pub fn ivarint(&mut self) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.uvarint()?))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Eof)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Eof)?;
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        // zlib.crc32(b"123456789") == 0xCBF43926, the standard check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn varints_round_trip() {
        let values = [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX];
        let mut buf = Vec::new();
        for v in values {
            put_uvarint(&mut buf, v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -300] {
            put_ivarint(&mut buf, v);
        }
        let mut c = Cursor::new(&buf);
        for v in values {
            assert_eq!(c.uvarint(), Ok(v));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -300] {
            assert_eq!(c.ivarint(), Ok(v));
        }
        assert!(c.is_empty());
        assert_eq!(c.u8(), Err(DecodeError::Eof));
    }

    #[test]
    fn overlong_varints_are_rejected() {
        let mut c = Cursor::new(&[0xFF; 11]);
        assert_eq!(c.uvarint(), Err(DecodeError::VarintOverflow));
        // 10th byte may only carry the top bit of a u64.
        let mut buf = vec![0xFF; 9];
        buf.push(0x02);
        assert_eq!(
            Cursor::new(&buf).uvarint(),
            Err(DecodeError::VarintOverflow)
        );
        let mut c = Cursor::new(&[0x80, 0x80]);
        assert_eq!(c.uvarint(), Err(DecodeError::Eof));
    }
}
