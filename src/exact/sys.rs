//! Raw `perf_event_open`, `mmap` and `ioctl` for exact mode: the only unsafe code in
//! `src/exact/`. Everything here is a thin, owned wrapper; decoding is in `records.rs`.

use std::ffi::CString;
use std::io;
use std::mem::offset_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use perf_event_open_sys as sys;
use perf_event_open_sys::bindings::{perf_event_attr, perf_event_mmap_page};

const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";

/// The uprobe PMU: its `type` and the `config` bit that makes a uretprobe.
#[derive(Debug, Clone, Copy)]
pub struct UprobePmu {
    pub type_: u32,
    pub retprobe_bit: u32,
}

/// Parses `format/retprobe` ("config:0").
pub fn parse_config_bit(s: &str) -> Option<u32> {
    s.trim().strip_prefix("config:")?.parse().ok()
}

pub fn uprobe_pmu() -> io::Result<UprobePmu> {
    let type_ = std::fs::read_to_string(format!("{UPROBE_PMU}/type"))?;
    let type_ = type_
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "uprobe PMU type"))?;
    let bit = std::fs::read_to_string(format!("{UPROBE_PMU}/format/retprobe"))?;
    let retprobe_bit = parse_config_bit(&bit)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "uprobe retprobe format"))?;
    Ok(UprobePmu {
        type_,
        retprobe_bit,
    })
}

/// What to open.
pub struct UprobeSpec<'a> {
    pub pmu: UprobePmu,
    pub path: &'a CString,
    pub offset: u64,
    pub retprobe: bool,
    pub sample_type: u64,
    pub regs_mask: u64,
    pub wakeup_bytes: u32,
}

/// Opens one disabled uprobe event on the one thread `tid` (pid = TID, cpu = -1, no
/// `inherit`): the kernel places the breakpoint only in that thread's address space and
/// records only that thread's hits. Never `inherit`: with a sampling period it breaks the
/// target's clone() (perf-facts.md).
pub fn open_uprobe(spec: &UprobeSpec<'_>, tid: u32) -> io::Result<OwnedFd> {
    // SAFETY: perf_event_attr is a plain C struct for which all-zero is the documented
    // "nothing requested" value.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = spec.pmu.type_;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = if spec.retprobe {
        1u64 << spec.pmu.retprobe_bit
    } else {
        0
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr.sample_type = spec.sample_type;
    attr.__bindgen_anon_3.uprobe_path = spec.path.as_ptr() as u64;
    attr.__bindgen_anon_4.probe_offset = spec.offset;
    attr.sample_regs_user = spec.regs_mask;
    attr.clockid = libc::CLOCK_MONOTONIC;
    attr.set_use_clockid(1);
    attr.set_disabled(1);
    attr.set_watermark(1);
    attr.__bindgen_anon_2.wakeup_watermark = spec.wakeup_bytes;
    // SAFETY: attr is initialised and outlives the call; the path pointer it carries points
    // into `spec.path`, alive for the duration of the call (the kernel copies it).
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            tid as i32,
            -1,
            -1,
            sys::bindings::PERF_FLAG_FD_CLOEXEC as _,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a dummy software event on the one thread `tid` that records nothing but its
/// context switches (`PERF_RECORD_SWITCH`, with `PERF_RECORD_MISC_SWITCH_OUT_PREEMPT` on a
/// preemption), its exit and its renames, each stamped with TID and CLOCK_MONOTONIC time
/// (`sample_id_all`, sample type TID | TIME). Enabled at once; no sampling period, so
/// nothing the target does is slowed but the switch itself. User-space only (exclude_kernel),
/// which is what `perf_event_paranoid` 2 allows an unprivileged user on their own process.
pub fn open_switch_events(tid: u32) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is the documented "nothing requested" perf_event_attr.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = sys::bindings::PERF_TYPE_SOFTWARE;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = u64::from(sys::bindings::PERF_COUNT_SW_DUMMY);
    attr.sample_type = u64::from(sys::bindings::PERF_SAMPLE_TID | sys::bindings::PERF_SAMPLE_TIME);
    attr.set_sample_id_all(1);
    attr.set_context_switch(1);
    attr.set_task(1);
    attr.set_comm(1);
    attr.set_exclude_kernel(1);
    attr.set_exclude_hv(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    attr.set_use_clockid(1);
    // SAFETY: attr is initialised and outlives the call.
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            tid as i32,
            -1,
            -1,
            sys::bindings::PERF_FLAG_FD_CLOEXEC as _,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(r: i32) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn event_id(fd: &OwnedFd) -> io::Result<u64> {
    let mut id = 0u64;
    // SAFETY: PERF_EVENT_IOC_ID writes one u64 to the pointer.
    check(unsafe { sys::ioctls::ID(fd.as_raw_fd(), &mut id) })?;
    Ok(id)
}

/// Sends `fd`'s records to `target`'s ring buffer (same CPU, same clock).
pub fn set_output(fd: &OwnedFd, target: RawFd) -> io::Result<()> {
    // SAFETY: plain ioctl on descriptors we own.
    check(unsafe { sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), target) })
}

pub fn enable(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain ioctl on a descriptor we own.
    check(unsafe { sys::ioctls::ENABLE(fd.as_raw_fd(), 0) })
}

pub fn disable(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain ioctl on a descriptor we own.
    check(unsafe { sys::ioctls::DISABLE(fd.as_raw_fd(), 0) })
}

/// Raises RLIMIT_NOFILE's soft limit towards the hard limit so `needed` more descriptors fit
/// (one per probe point per thread).
pub fn ensure_fd_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read/write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < needed + 256 {
            lim.rlim_cur = (needed + 256).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A perf ring buffer: one metadata page and `2^n` data pages, mapped read-write so we can
/// advance `data_tail` (the kernel never overwrites unread data; it counts losses instead).
pub struct RingBuffer {
    base: *mut u8,
    len: usize,
    data_offset: usize,
    data_size: usize,
    tail: u64,
}

// SAFETY: the mapping is owned by this value; the kernel side is synchronised through
// data_head/data_tail with acquire/release ordering.
unsafe impl Send for RingBuffer {}

impl RingBuffer {
    pub fn map(fd: &OwnedFd, data_pages: usize) -> io::Result<RingBuffer> {
        let page = page_size();
        let len = page * (1 + data_pages);
        // SAFETY: a fresh shared mapping of the perf fd; checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base as *mut u8;
        // SAFETY: the metadata page is mapped and the kernel filled in data_offset/size.
        let (data_offset, data_size, tail) = unsafe {
            let meta = base as *const perf_event_mmap_page;
            (
                std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_offset)) as usize,
                std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_size)) as usize,
                std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_tail)),
            )
        };
        let (data_offset, data_size) = if data_size == 0 {
            (page, page * data_pages) // kernels before 4.1 leave them 0
        } else {
            (data_offset, data_size)
        };
        Ok(RingBuffer {
            base,
            len,
            data_offset,
            data_size,
            tail,
        })
    }

    fn head_ptr(&self) -> &AtomicU64 {
        // SAFETY: data_head is an aligned u64 inside the mapped metadata page, written by the
        // kernel; we only read it atomically.
        unsafe {
            &*(self.base.add(offset_of!(perf_event_mmap_page, data_head)) as *const AtomicU64)
        }
    }

    fn tail_ptr(&self) -> &AtomicU64 {
        // SAFETY: data_tail is an aligned u64 in the metadata page that only we write.
        unsafe {
            &*(self.base.add(offset_of!(perf_event_mmap_page, data_tail)) as *const AtomicU64)
        }
    }

    /// Appends every unread byte (whole records) to `out` and frees them in the buffer.
    /// Returns the number of bytes copied.
    pub fn read_into(&mut self, out: &mut Vec<u8>) -> usize {
        let head = self.head_ptr().load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail) as usize;
        if avail == 0 || avail > self.data_size {
            return 0;
        }
        let start = (self.tail % self.data_size as u64) as usize;
        let first = avail.min(self.data_size - start);
        out.reserve(avail);
        // SAFETY: [tail, head) lies within the data area (modulo its size), was published by
        // the kernel before data_head (acquire above), and is not written again until we
        // advance data_tail below.
        unsafe {
            let data = self.base.add(self.data_offset);
            let dst = out.as_mut_ptr().add(out.len());
            std::ptr::copy_nonoverlapping(data.add(start), dst, first);
            std::ptr::copy_nonoverlapping(data, dst.add(first), avail - first);
            out.set_len(out.len() + avail);
        }
        self.tail = head;
        fence(Ordering::Release);
        self.tail_ptr().store(head, Ordering::Release);
        avail
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

/// Which of `fds` report POLLHUP now (a per-thread event whose thread has exited).
pub fn hung_up(fds: &[RawFd]) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd of the given length; timeout 0 never blocks.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0)
        .collect())
}

/// Waits until one of `fds` is readable (its watermark was reached) or `timeout_ms` passed.
pub fn poll_any(fds: &[RawFd], timeout_ms: i32) -> io::Result<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_bits() {
        assert_eq!(parse_config_bit("config:0\n"), Some(0));
        assert_eq!(parse_config_bit("config:32-63"), None);
    }
}
