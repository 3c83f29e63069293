//! Reading the target's memory, behind a narrow trait so the decoding code can
//! be tested over local buffers.

use anyhow::{bail, Context, Result};

/// Read-only access to another address space.
pub trait Memory {
    /// Fill `buf` from `addr`. Fails if any byte cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()>;
}

/// Typed helpers over [`Memory`]. All little-endian x86_64 for now.
pub trait MemoryExt: Memory {
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }
    fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn read_i64(&self, addr: u64) -> Result<i64> {
        Ok(self.read_u64(addr)? as i64)
    }
    fn read_u32(&self, addr: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_i32(&self, addr: u64) -> Result<i32> {
        Ok(self.read_u32(addr)? as i32)
    }
    fn read_u8(&self, addr: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }
    /// A pointer-sized value.
    fn read_ptr(&self, addr: u64) -> Result<u64> {
        self.read_u64(addr)
    }
}

impl<M: Memory + ?Sized> MemoryExt for M {}

/// Little-endian field access into a buffer already copied from the target,
/// so one `process_vm_readv` serves every field of a struct.
#[derive(Debug, Clone, Copy)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    fn field<const N: usize>(&self, off: u64) -> Result<[u8; N]> {
        let off = usize::try_from(off).context("offset too large")?;
        match off.checked_add(N).and_then(|end| self.0.get(off..end)) {
            Some(s) => {
                let mut a = [0u8; N];
                a.copy_from_slice(s);
                Ok(a)
            }
            None => bail!(
                "field at offset {off} (+{N}) is outside the {} bytes read",
                self.0.len()
            ),
        }
    }
    pub fn u64(&self, off: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(self.field::<8>(off)?))
    }
    pub fn i64(&self, off: u64) -> Result<i64> {
        Ok(self.u64(off)? as i64)
    }
    pub fn u32(&self, off: u64) -> Result<u32> {
        Ok(u32::from_le_bytes(self.field::<4>(off)?))
    }
    pub fn i32(&self, off: u64) -> Result<i32> {
        Ok(self.u32(off)? as i32)
    }
    pub fn u8(&self, off: u64) -> Result<u8> {
        Ok(self.field::<1>(off)?[0])
    }
}

/// The target process, read with `process_vm_readv` (via remoteprocess).
pub struct ProcessMem {
    pub process: remoteprocess::Process,
}

impl Memory for ProcessMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        use remoteprocess::ProcessMemory;
        let a = usize::try_from(addr).context("address does not fit")?;
        self.process
            .read(a, buf)
            .with_context(|| format!("reading {} bytes at {addr:#x}", buf.len()))
    }
}

/// Reads through whole 4 KiB pages, each read once per cache: a stack walk reads many small
/// structures that sit side by side (3.11+ frames in one data-stack chunk, the same code
/// objects for every thread), and one `process_vm_readv` per page instead of per structure
/// made stack sampling several times faster. Every read through one cache sees the memory of
/// the moment its page was first read: make one per snapshot. A page that cannot be read
/// whole (the end of a mapping) falls back to exact reads.
pub struct PageCache<'a, M: Memory> {
    inner: &'a M,
    pages: std::cell::RefCell<std::collections::HashMap<u64, Option<Box<[u8; PAGE]>>>>,
}

const PAGE: usize = 4096;

impl<'a, M: Memory> PageCache<'a, M> {
    pub fn new(inner: &'a M) -> Self {
        PageCache {
            inner,
            pages: Default::default(),
        }
    }
}

impl<M: Memory> Memory for PageCache<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let end = addr
            .checked_add(buf.len() as u64)
            .context("read past the end of the address space")?;
        let mut pages = self.pages.borrow_mut();
        let mut at = addr;
        while at < end {
            let base = at & !(PAGE as u64 - 1);
            let page = pages.entry(base).or_insert_with(|| {
                let mut p = Box::new([0u8; PAGE]);
                self.inner.read(base, &mut p[..]).ok().map(|()| p)
            });
            let Some(page) = page else {
                drop(pages);
                return self.inner.read(addr, buf);
            };
            let from = (at - base) as usize;
            let n = (PAGE - from).min((end - at) as usize);
            let dst = (at - addr) as usize;
            buf[dst..dst + n].copy_from_slice(&page[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }
}

/// A fake address space for unit tests: a list of (base address, bytes).
#[derive(Debug, Default, Clone)]
pub struct LocalMem {
    pub regions: Vec<(u64, Vec<u8>)>,
}

impl LocalMem {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, base: u64, bytes: Vec<u8>) -> &mut Self {
        self.regions.push((base, bytes));
        self
    }
}

impl Memory for LocalMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        for (base, bytes) in &self.regions {
            if addr >= *base {
                let off = (addr - base) as usize;
                if let Some(src) = off
                    .checked_add(buf.len())
                    .and_then(|end| bytes.get(off..end))
                {
                    buf.copy_from_slice(src);
                    return Ok(());
                }
            }
        }
        bail!("unmapped read of {} bytes at {addr:#x}", buf.len())
    }
}

#[cfg(test)]
mod page_cache_tests {
    use super::*;

    #[test]
    fn reads_across_pages_and_falls_back_at_mapping_ends() {
        let bytes: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        let mut m = LocalMem::new();
        m.add(0x10000, bytes.clone());
        // A short region whose page cannot be read whole.
        m.add(0x20010, vec![7u8; 32]);
        let c = PageCache::new(&m);
        let mut buf = vec![0u8; PAGE + 100];
        c.read(0x10000 + PAGE as u64 - 50, &mut buf).unwrap();
        assert_eq!(buf[..], bytes[PAGE - 50..2 * PAGE + 50]);
        assert_eq!(
            c.read_u64(0x10008).unwrap(),
            u64::from_le_bytes(bytes[8..16].try_into().unwrap())
        );
        assert_eq!(c.read_u8(0x20012).unwrap(), 7);
        assert!(c.read_u8(0x20100).is_err());
    }
}
