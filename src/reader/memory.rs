//! Reading the target's memory, behind a narrow trait so the decoding code can
//! be tested over local buffers.

use anyhow::{bail, Context, Result};

/// Read-only access to another address space.
pub trait Memory {
    /// Fill `buf` from `addr`. Fails if any byte cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()>;

    /// Many reads at once: `parts[i] = (addr, len)` fills the next `len` bytes of `buf`, in
    /// order (`buf` is exactly as long as all of them). Fails if any byte cannot be read.
    /// The process reader does it in one system call (a gather read), so every part is read
    /// within microseconds of the others.
    fn read_many(&self, parts: &[(u64, usize)], buf: &mut [u8]) -> Result<()> {
        let mut at = 0;
        for &(addr, len) in parts {
            let dst = buf
                .get_mut(at..at + len)
                .context("read_many: buffer shorter than its parts")?;
            self.read(addr, dst)?;
            at += len;
        }
        Ok(())
    }
}

/// Reads gathered into one [`Memory::read_many`] call: add the parts, run it, then look at
/// each part through the index `add` returned.
#[derive(Debug, Default)]
pub struct Gather {
    parts: Vec<(u64, usize)>,
    starts: Vec<usize>,
    buf: Vec<u8>,
    /// The last [`Gather::run`] read every part.
    read_ok: bool,
}

impl Gather {
    /// Forgets the parts (keeps the allocations).
    pub fn clear(&mut self) {
        self.parts.clear();
        self.starts.clear();
        self.buf.clear();
        self.read_ok = false;
    }

    /// Adds a read of `len` bytes at `addr`; returns its index.
    pub fn add(&mut self, addr: u64, len: u64) -> usize {
        let len = len as usize;
        self.starts.push(self.buf.len());
        self.parts.push((addr, len));
        self.buf.resize(self.buf.len() + len, 0);
        self.parts.len() - 1
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Reads every part.
    pub fn run(&mut self, mem: &dyn Memory) -> Result<()> {
        let r = mem.read_many(&self.parts, &mut self.buf);
        self.read_ok = r.is_ok();
        r
    }

    /// What the last run read, as memory in front of `inner`: a read that lies wholly in one
    /// part is served from it, any other from `inner`. None if the last run failed.
    pub fn as_memory<'a, M: Memory + ?Sized>(&'a self, inner: &'a M) -> Option<Gathered<'a, M>> {
        if !self.read_ok {
            return None;
        }
        let mut index: Vec<(u64, usize)> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0, i))
            .collect();
        index.sort_unstable();
        Some(Gathered {
            gather: self,
            index,
            inner,
        })
    }

    /// The bytes of part `i` (after [`Gather::run`]).
    pub fn get(&self, i: usize) -> Bytes<'_> {
        let start = self.starts[i];
        Bytes(&self.buf[start..start + self.parts[i].1])
    }
}

/// [`Gather::as_memory`]: a gather read's parts in front of another memory. Finding the
/// lists again after a planned reading found them changed reads only what that reading did
/// not already hold (a new thread state), not every link again.
pub struct Gathered<'a, M: Memory + ?Sized> {
    gather: &'a Gather,
    /// (part address, part index), by address.
    index: Vec<(u64, usize)>,
    inner: &'a M,
}

impl<M: Memory + ?Sized> Memory for Gathered<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let end = addr.saturating_add(buf.len() as u64);
        let i = self.index.partition_point(|p| p.0 <= addr);
        // Parts overlap only a little (a GIL read twice, a TID inside its thread state's
        // neighbourhood): the few parts starting nearest below `addr` are enough to look at.
        for &(start, part) in self.index[..i].iter().rev().take(4) {
            let len = self.gather.parts[part].1;
            if end <= start + len as u64 {
                let from = self.gather.starts[part] + (addr - start) as usize;
                buf.copy_from_slice(&self.gather.buf[from..from + buf.len()]);
                return Ok(());
            }
        }
        self.inner.read(addr, buf)
    }
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

    /// One `process_vm_readv` per [`IOV_MAX`] parts. A part that cannot be read (the kernel
    /// stops at the first such part and says how far it got) fails the whole call; the
    /// error says which part, by address.
    fn read_many(&self, parts: &[(u64, usize)], buf: &mut [u8]) -> Result<()> {
        check_parts_fit(parts, buf)?;
        let pid = self.process.pid as libc::pid_t;
        let mut at = 0usize;
        for chunk in parts.chunks(IOV_MAX) {
            let want: usize = chunk.iter().map(|p| p.1).sum();
            let remote: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(addr, len)| libc::iovec {
                    iov_base: addr as usize as *mut libc::c_void,
                    iov_len: len,
                })
                .collect();
            let local = libc::iovec {
                iov_base: buf[at..].as_mut_ptr().cast(),
                iov_len: want,
            };
            // SAFETY: `local` points into `buf`, which has `want` bytes from `at` (checked
            // above: the parts sum to its length); the remote iovecs are only read by the
            // kernel, from the other process.
            let got = unsafe {
                libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as _, 0)
            };
            if got < 0 {
                let e = std::io::Error::last_os_error();
                let (addr, len) = chunk[0];
                return Err(anyhow::Error::new(e).context(format!(
                    "reading {len} bytes at {addr:#x} (and {} more parts)",
                    chunk.len() - 1
                )));
            }
            if got as usize != want {
                // Find the part it stopped in.
                let mut sum = 0usize;
                let mut failed = chunk[0];
                for &p in chunk {
                    if sum + p.1 > got as usize {
                        failed = p;
                        break;
                    }
                    sum += p.1;
                }
                let e = std::io::Error::from_raw_os_error(libc::EFAULT);
                return Err(anyhow::Error::new(e)
                    .context(format!("reading {} bytes at {:#x}", failed.1, failed.0)));
            }
            at += want;
        }
        Ok(())
    }
}

/// [`Memory::read_many`]'s contract: `buf` is exactly as long as all the parts.
fn check_parts_fit(parts: &[(u64, usize)], buf: &[u8]) -> Result<()> {
    let total: usize = parts.iter().map(|p| p.1).sum();
    if buf.len() != total {
        bail!(
            "read_many: buffer of {} bytes for {total} bytes of parts",
            buf.len()
        );
    }
    Ok(())
}

/// Parts per `process_vm_readv` (the kernel's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Reads through whole 4 KiB pages, each read once per cache: a stack walk reads many small
/// structures that sit side by side (3.11+ frames in one data-stack chunk, the same code
/// objects for every thread), and one `process_vm_readv` per page instead of per structure
/// made stack sampling several times faster. Every read through one cache sees the memory of
/// the moment its page was first read: make one per snapshot. A page that cannot be read
/// whole (the end of a mapping) falls back to exact reads.
pub struct PageCache<'a, M: Memory + ?Sized> {
    inner: &'a M,
    pages: std::cell::RefCell<std::collections::HashMap<u64, Option<Box<[u8; PAGE]>>>>,
}

const PAGE: usize = 4096;

impl<'a, M: Memory + ?Sized> PageCache<'a, M> {
    pub fn new(inner: &'a M) -> Self {
        PageCache {
            inner,
            pages: Default::default(),
        }
    }
}

impl<M: Memory + ?Sized> PageCache<'_, M> {
    /// Copies `buf.len()` bytes at `addr` from pages already cached; false (nothing read)
    /// when any of them is not.
    fn copy_cached(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        let pages = self.pages.borrow();
        let mut at = addr;
        while at < end {
            let base = at & !(PAGE as u64 - 1);
            let Some(Some(page)) = pages.get(&base) else {
                return false;
            };
            let from = (at - base) as usize;
            let n = (PAGE - from).min((end - at) as usize);
            let dst = (at - addr) as usize;
            buf[dst..dst + n].copy_from_slice(&page[from..from + n]);
            at += n as u64;
        }
        true
    }
}

impl<M: Memory + ?Sized> Memory for PageCache<'_, M> {
    /// Parts on pages already cached are copied from them; all the others are read in one
    /// gather read of the inner memory (not cached: a gather is for many small scattered
    /// parts, such as every key of a dict, which would each cost a page read).
    fn read_many(&self, parts: &[(u64, usize)], buf: &mut [u8]) -> Result<()> {
        check_parts_fit(parts, buf)?;
        let mut missing = Vec::new();
        let mut at = 0;
        for &(addr, len) in parts {
            if !self.copy_cached(addr, &mut buf[at..at + len]) {
                missing.push((addr, len, at));
            }
            at += len;
        }
        if missing.is_empty() {
            return Ok(());
        }
        let want: Vec<(u64, usize)> = missing.iter().map(|&(a, n, _)| (a, n)).collect();
        let mut got = vec![0u8; want.iter().map(|p| p.1).sum()];
        self.inner.read_many(&want, &mut got)?;
        let mut from = 0;
        for &(_, n, to) in &missing {
            buf[to..to + n].copy_from_slice(&got[from..from + n]);
            from += n;
        }
        Ok(())
    }

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

/// A [`PageCache`] that first serves reads from spans read ahead in one gather read: the
/// spans the walk read at the last sample (the thread-state fields, frames and code-object
/// headers of stacks that mostly have not changed since). Every read is logged, and the log,
/// merged, is what to read ahead next time: one system call for all the stacks of a sample
/// instead of one per page they touch.
pub struct ReadAhead<'a, M: Memory> {
    pages: PageCache<'a, M>,
    /// (address, length, offset in `buf`), sorted by address, not overlapping.
    spans: Vec<(u64, usize, usize)>,
    buf: Vec<u8>,
    log: std::cell::RefCell<Vec<(u64, usize)>>,
    /// A read was not served from the spans: the walk went somewhere new.
    missed: std::cell::Cell<bool>,
}

/// Bounds on what is read ahead: spans per sample, and the bytes of one merged span.
const READ_AHEAD_MAX_SPANS: usize = 4096;
const READ_AHEAD_MAX_SPAN: usize = 16 * 1024;
/// Reads closer than this are merged into one span (fewer iovecs, a few bytes more).
const READ_AHEAD_MERGE_GAP: u64 = 256;

impl<'a, M: Memory> ReadAhead<'a, M> {
    /// Reads `plan` (from [`ReadAhead::into_plan`] of the last sample) in one gather read.
    /// If any of it cannot be read (a thread's memory went away), nothing is read ahead.
    pub fn new(inner: &'a M, plan: &[(u64, usize)]) -> Self {
        Self::with_buffer(inner, plan, Vec::new())
    }

    /// [`ReadAhead::new`], reading into `buf` (from [`ReadAhead::into_parts`] of the last
    /// walk: no allocation, no zeroing, once it is big enough).
    pub fn with_buffer(inner: &'a M, plan: &[(u64, usize)], mut buf: Vec<u8>) -> Self {
        let mut spans = Vec::with_capacity(plan.len());
        let mut at = 0;
        for &(addr, len) in plan {
            spans.push((addr, len, at));
            at += len;
        }
        if buf.len() < at {
            buf.resize(at, 0);
        }
        buf.truncate(at);
        if !plan.is_empty() && inner.read_many(plan, &mut buf).is_err() {
            spans.clear();
            buf.clear();
        }
        ReadAhead {
            pages: PageCache::new(inner),
            spans,
            buf,
            log: Default::default(),
            missed: std::cell::Cell::new(false),
        }
    }

    /// What this walk read, merged: the plan for the next one.
    pub fn into_plan(self) -> Vec<(u64, usize)> {
        self.into_parts().0
    }

    /// Whether every read was served from the spans read ahead (the plan still fits).
    pub fn all_read_ahead(&self) -> bool {
        !self.missed.get()
    }

    /// The buffer alone (the plan kept as it was).
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The plan for the next walk, and the buffer to read it into.
    pub fn into_parts(self) -> (Vec<(u64, usize)>, Vec<u8>) {
        let buf = self.buf;
        let mut log = self.log.into_inner();
        log.sort_unstable();
        let mut out: Vec<(u64, usize)> = Vec::with_capacity(log.len());
        for (addr, len) in log {
            let end = addr + len as u64;
            if let Some(last) = out.last_mut() {
                let last_end = last.0 + last.1 as u64;
                if addr <= last_end + READ_AHEAD_MERGE_GAP
                    && end.max(last_end) - last.0 <= READ_AHEAD_MAX_SPAN as u64
                {
                    last.1 = (end.max(last_end) - last.0) as usize;
                    continue;
                }
            }
            if out.len() >= READ_AHEAD_MAX_SPANS {
                break;
            }
            out.push((addr, len));
        }
        (out, buf)
    }
}

impl<M: Memory> Memory for ReadAhead<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        {
            let mut log = self.log.borrow_mut();
            if log.len() < 4 * READ_AHEAD_MAX_SPANS {
                log.push((addr, len));
            }
        }
        // The last span starting at or before `addr`.
        let i = self.spans.partition_point(|s| s.0 <= addr);
        if i > 0 {
            let (start, n, off) = self.spans[i - 1];
            if addr + len as u64 <= start + n as u64 {
                let from = off + (addr - start) as usize;
                buf.copy_from_slice(&self.buf[from..from + len]);
                return Ok(());
            }
        }
        self.missed.set(true);
        self.pages.read(addr, buf)
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

    #[test]
    fn read_ahead_serves_last_walks_spans_and_plans_the_next() {
        let bytes: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        let mut m = LocalMem::new();
        m.add(0x10000, bytes.clone());
        // First walk: nothing read ahead; two nearby reads and one far away.
        let first = ReadAhead::new(&m, &[]);
        assert_eq!(
            first.read_u64(0x10010).unwrap(),
            first.pages.read_u64(0x10010).unwrap()
        );
        first.read_u32(0x10020).unwrap();
        first.read_u8(0x10000 + 2 * PAGE as u64).unwrap();
        let plan = first.into_plan();
        assert_eq!(plan, vec![(0x10010, 0x14), (0x10000 + 2 * PAGE as u64, 1)]);
        // Second walk: served from the spans, same bytes.
        let second = ReadAhead::new(&m, &plan);
        assert_eq!(second.buf.len(), 0x15);
        let mut b = [0u8; 4];
        second.read(0x10014, &mut b).unwrap();
        assert_eq!(b[..], bytes[0x14..0x18]);
        // A read outside every span still works (through the pages).
        second.read(0x10100, &mut b).unwrap();
        assert_eq!(b[..], bytes[0x100..0x104]);
        // A plan that cannot be read any more reads nothing ahead, and still serves reads.
        let gone = ReadAhead::new(&m, &[(0x90000, 8), (0x10010, 8)]);
        assert!(gone.spans.is_empty());
        assert_eq!(gone.read_u8(0x10011).unwrap(), bytes[0x11]);
    }

    #[test]
    fn process_gather_read_in_one_call_and_says_which_part_failed() {
        let mem = ProcessMem {
            process: remoteprocess::Process::new(std::process::id() as remoteprocess::Pid).unwrap(),
        };
        let a: Vec<u8> = (0..200).collect();
        let b = [0xabu8; 16];
        let parts = [(a.as_ptr() as u64 + 10, 20), (b.as_ptr() as u64, 16)];
        let mut buf = vec![0u8; 36];
        mem.read_many(&parts, &mut buf).unwrap();
        assert_eq!(buf[..20], a[10..30]);
        assert_eq!(buf[20..], b[..]);
        // More parts than one system call takes.
        let many: Vec<(u64, usize)> = (0..2500)
            .map(|i| (a.as_ptr() as u64 + i % 199, 1))
            .collect();
        let mut buf = vec![0u8; many.len()];
        mem.read_many(&many, &mut buf).unwrap();
        assert!(buf.iter().enumerate().all(|(i, &v)| v == (i % 199) as u8));
        // The second part is unmapped: the error names it.
        let bad = [(a.as_ptr() as u64, 8), (8, 8)];
        let mut buf = vec![0u8; 16];
        let e = format!("{:#}", mem.read_many(&bad, &mut buf).unwrap_err());
        assert!(e.contains("at 0x8"), "{e}");
    }

    #[test]
    fn gather_reads_every_part_in_order() {
        let mut m = LocalMem::new();
        m.add(0x1000, (0u8..64).collect());
        let mut g = Gather::default();
        let a = g.add(0x1008, 8);
        let b = g.add(0x1000, 4);
        g.run(&m).unwrap();
        assert_eq!(
            g.get(a).u64(0).unwrap(),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15])
        );
        assert_eq!(g.get(b).u32(0).unwrap(), u32::from_le_bytes([0, 1, 2, 3]));
        g.clear();
        g.add(0x2000, 1);
        assert!(g.run(&m).is_err());
    }

    /// Counts the reads and gather reads that reach it.
    struct Counting<'a>(&'a LocalMem, std::cell::Cell<usize>, std::cell::Cell<usize>);

    impl Memory for Counting<'_> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
            self.1.set(self.1.get() + 1);
            self.0.read(addr, buf)
        }
        fn read_many(&self, parts: &[(u64, usize)], buf: &mut [u8]) -> Result<()> {
            self.2.set(self.2.get() + 1);
            let mut at = 0;
            for &(a, n) in parts {
                self.0.read(a, &mut buf[at..at + n])?;
                at += n;
            }
            Ok(())
        }
    }

    #[test]
    fn page_cache_gathers_what_its_pages_do_not_hold_in_one_read() {
        let bytes: Vec<u8> = (0..4 * PAGE).map(|i| (i % 241) as u8).collect();
        let mut m = LocalMem::new();
        m.add(0x40000, bytes.clone());
        let counting = Counting(&m, Default::default(), Default::default());
        let c = PageCache::new(&counting);
        // The first page is cached by a plain read.
        c.read_u64(0x40010).unwrap();
        assert_eq!(counting.1.get(), 1);
        // Parts on it are copied; the parts on three other pages come in one gather read.
        let parts = [
            (0x40020u64, 8usize),
            (0x41000 + 5, 16),
            (0x42000, 3),
            (0x43ff8, 8),
        ];
        let mut buf = vec![0u8; 35];
        c.read_many(&parts, &mut buf).unwrap();
        assert_eq!((counting.1.get(), counting.2.get()), (1, 1));
        let mut at = 0;
        for &(a, n) in &parts {
            let off = (a - 0x40000) as usize;
            assert_eq!(buf[at..at + n], bytes[off..off + n], "part at {a:#x}");
            at += n;
        }
        // All parts cached: nothing reaches the inner memory.
        let mut small = vec![0u8; 8];
        c.read_many(&[(0x40100, 8)], &mut small).unwrap();
        assert_eq!((counting.1.get(), counting.2.get()), (1, 1));
        // A length that does not add up is refused.
        assert!(c.read_many(&[(0x40100, 8)], &mut buf).is_err());
    }

    #[test]
    fn a_gather_serves_reads_inside_its_parts_and_passes_the_rest_on() {
        let bytes: Vec<u8> = (0..PAGE).map(|i| (i % 233) as u8).collect();
        let mut m = LocalMem::new();
        m.add(0x50000, bytes.clone());
        let counting = Counting(&m, Default::default(), Default::default());
        let mut g = Gather::default();
        g.add(0x50100, 64);
        g.add(0x50800, 16);
        g.add(0x50808, 16);
        // Not run yet (or failed): no memory to read through.
        assert!(g.as_memory(&counting).is_none());
        g.run(&m).unwrap();
        let gm = g.as_memory(&counting).unwrap();
        let want =
            |a: u64| u64::from_le_bytes(bytes[(a - 0x50000) as usize..][..8].try_into().unwrap());
        assert_eq!(gm.read_u64(0x50100 + 56).unwrap(), want(0x50100 + 56));
        // Inside the second of two overlapping parts.
        assert_eq!(gm.read_u64(0x50810).unwrap(), want(0x50810));
        assert_eq!(counting.1.get(), 0);
        // Across a part's end, and outside every part: read from the inner memory.
        assert_eq!(gm.read_u64(0x50100 + 60).unwrap(), want(0x50100 + 60));
        assert_eq!(gm.read_u64(0x50400).unwrap(), want(0x50400));
        assert_eq!(counting.1.get(), 2);
        // A failed run leaves nothing to read through.
        g.clear();
        g.add(0x90000, 8);
        assert!(g.run(&m).is_err());
        assert!(g.as_memory(&counting).is_none());
    }
}
