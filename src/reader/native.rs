//! Native stacks of one thread of another process (for `gilscope check`'s attribution).
//!
//! The thread — that one thread only — is stopped with `PTRACE_SEIZE` + `PTRACE_INTERRUPT`
//! (remoteprocess's thread lock) just long enough to read its registers (`PTRACE_GETREGS`)
//! and copy the top 256 KiB of its stack (`process_vm_readv`), typically a few tens of
//! microseconds; then it is let go, and the copy is walked with the objects' `.eh_frame`
//! call-frame information (gimli). Nothing in the target's memory is changed.
//!
//! Objects are read through `/proc/PID/map_files/` (so a target in a chroot or container, or
//! one whose file was replaced on disk, is unwound with its own files), else through
//! `/proc/PID/root`; the vDSO (`clock_gettime`, `gettimeofday`: what `std::chrono` and
//! `time.time()` call) has no file and is read as the ELF image it is from the target's
//! memory. Symbols come from `.symtab` and `.dynsym`; in a stripped object (a wheel), a frame
//! past every symbol's end is named by the nearest exported symbol before it, marked
//! approximate; a frame with no symbol at all is given as `object+0xFILE_OFFSET`.
//!
//! Code without call-frame information for an address (hand-written assembly, some JIT
//! stubs) is stepped over with the frame-pointer chain when `rbp` points into the stack.
//!
//! Why our own loop over gimli rather than framehop (samply's unwinder): framehop's
//! `UnwinderX86_64` wants each module's sections up front and caches rules per module; we
//! unwind a handful of captures per run, after the hold ended, from objects we open lazily
//! through `/proc/PID/map_files` — the same .eh_frame/.eh_frame_hdr rules either way, and this
//! loop already covers lld-linked PyO3 objects, `-O2` code without frame pointers, libc,
//! libstdc++, libm and now the vDSO (tests/check_real.rs checks each).
//!
//! Why not libunwind: libunwind 1.6 (Debian 12) finds no unwind information in objects whose
//! executable segment's address differs from its file offset — what LLVM's lld, Rust's default
//! linker since 1.90, produces — so PyO3 extensions' stacks stopped at their first frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindContext, UnwindSection};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::analysis::holds::{NativeFrame, NativeProbe};
use crate::reader::memory::{MemoryExt, ProcessMem};

/// Frames read at most (an unwind that loops is cut here).
const MAX_FRAMES: usize = 256;

/// A symbol as people write it: Rust (legacy and v0) and C++ names demangled, Rust's hash
/// suffix dropped, GCC's clone suffixes dropped (`builtin_sum.lto_priv.0` → `builtin_sum`,
/// `_PyEval_EvalFrameDefault.cold` → `_PyEval_EvalFrameDefault`).
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    match name.split_once('.') {
        Some((base, _)) if !base.is_empty() => base.to_string(),
        _ => name.to_string(),
    }
}

/// The vDSO's name in /proc/PID/maps.
const VDSO: &str = "[vdso]";

/// One executable mapping of the target.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

/// The target's executable mappings of files, and the vDSO.
fn read_maps(pid: u32) -> Result<Vec<Mapping>> {
    Ok(super::procfs::maps(pid)?
        .into_iter()
        .filter(|m| m.exec && (m.path.starts_with('/') || m.path == VDSO))
        .map(|m| Mapping {
            start: m.start,
            end: m.end,
            offset: m.offset,
            path: m.path,
        })
        .collect())
}

/// What unwinding and naming need from one object file.
struct ObjectInfo {
    data: Vec<u8>,
    /// (svma, file range) of `.eh_frame` and `.eh_frame_hdr`.
    eh_frame: Option<(u64, std::ops::Range<usize>)>,
    eh_frame_hdr: Option<(u64, std::ops::Range<usize>)>,
    text_svma: u64,
    /// Loadable segments: (p_vaddr, p_offset, p_filesz, executable).
    segments: Vec<(u64, u64, u64, bool)>,
    /// Function symbols sorted by address: (address, size, name).
    symbols: Vec<(u64, u64, String)>,
    /// Only the exported symbols are known (no .symtab, no debug file).
    stripped: bool,
    /// svma ranges of the PLT sections (`.plt`, `.plt.sec`, `.plt.got`, `.iplt`): stubs that
    /// jump to another object's function, named by no symbol of this one.
    plt: Vec<(u64, u64)>,
}

fn section(file: &object::File<'_>, name: &str) -> Option<(u64, std::ops::Range<usize>)> {
    let s = file.section_by_name(name)?;
    let (off, size) = s.file_range()?;
    Some((s.address(), off as usize..(off + size) as usize))
}

/// Function symbols of an ELF file: (address, size, name), unsorted.
fn function_symbols(file: &object::File<'_>) -> Vec<(u64, u64, String)> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .collect()
}

/// A stripped object's full symbol table, from its separate debug file (build-id or
/// .gnu_debuglink, under the target's root first: Debian's -dbg packages).
fn debug_file_symbols(file: &object::File<'_>, pid: u32, path: &str) -> Vec<(u64, u64, String)> {
    let build_id = file
        .build_id()
        .ok()
        .flatten()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>());
    let link = file
        .gnu_debuglink()
        .ok()
        .flatten()
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned());
    for cand in
        crate::exact::symbols::debug_candidates(pid, path, build_id.as_deref(), link.as_deref())
    {
        let Ok(data) = std::fs::read(&cand) else {
            continue;
        };
        if let Ok(dbg) = object::File::parse(&*data) {
            let same = build_id.is_none()
                || dbg
                    .build_id()
                    .ok()
                    .flatten()
                    .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
                    == build_id;
            if same {
                return function_symbols(&dbg);
            }
        }
    }
    Vec::new()
}

impl ObjectInfo {
    fn load(data: Vec<u8>, pid: u32, path: &str) -> Result<Self> {
        let file = object::File::parse(&*data).context("parsing the ELF file")?;
        let eh_frame = section(&file, ".eh_frame");
        let eh_frame_hdr = section(&file, ".eh_frame_hdr");
        let text_svma = file.section_by_name(".text").map_or(0, |s| s.address());
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                let exec = matches!(s.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_X.0 != 0);
                (s.address(), off, size, exec)
            })
            .collect();
        let plt = file
            .sections()
            .filter(|s| {
                s.name()
                    .is_ok_and(|n| n == ".plt" || n.starts_with(".plt.") || n == ".iplt")
            })
            .map(|s| (s.address(), s.address() + s.size()))
            .collect();
        let mut symbols = function_symbols(&file);
        let mut stripped = false;
        if file.section_by_name(".symtab").is_none() {
            let debug = debug_file_symbols(&file, pid, path);
            stripped = debug.is_empty();
            symbols.extend(debug);
        }
        symbols.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        symbols.dedup_by_key(|s| s.0);
        drop(file);
        Ok(ObjectInfo {
            data,
            eh_frame,
            eh_frame_hdr,
            text_svma,
            segments,
            symbols,
            stripped,
            plt,
        })
    }

    fn in_plt(&self, svma: u64) -> bool {
        self.plt.iter().any(|&(a, b)| a <= svma && svma < b)
    }

    /// Load bias of an executable mapping of this object at `start..start+len` from file
    /// offset `offset`. The mapping is page-aligned, so it can also cover the tail of the
    /// segment before (lld puts a read-only segment right before the code): the executable
    /// segment overlapping it is the one mapped.
    fn bias(&self, start: u64, offset: u64, len: u64) -> u64 {
        let overlaps = |off: u64, size: u64| off < offset + len && offset < off + size.max(1);
        let seg = self
            .segments
            .iter()
            .find(|(_, off, size, exec)| *exec && overlaps(*off, *size))
            .or_else(|| {
                self.segments
                    .iter()
                    .find(|(_, off, size, _)| overlaps(*off, *size))
            });
        match seg {
            // The mapping's first byte is file offset `offset`, i.e. p_vaddr + (offset - p_offset).
            Some((vaddr, off, _, _)) => {
                start.wrapping_sub(vaddr.wrapping_add(offset).wrapping_sub(*off))
            }
            None => start.wrapping_sub(offset),
        }
    }

    /// The symbol at `svma`, and whether it is only the nearest one before it (the address
    /// lies past its end: in a stripped object, code of a local function after an exported
    /// one).
    fn symbol(&self, svma: u64) -> Option<(&str, bool)> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= svma)
            .checked_sub(1)?;
        let (addr, size, name) = &self.symbols[i];
        let inside = *size == 0 || svma < addr + size;
        // Only inside an executable segment: past the last function lies no code of it.
        let in_code = self
            .segments
            .iter()
            .any(|(vaddr, _, filesz, exec)| *exec && *vaddr <= svma && svma < vaddr + filesz);
        (inside || (self.stripped && in_code)).then_some((name.as_str(), !inside))
    }
}

type EhFrameReader<'a> = gimli::EndianSlice<'a, LittleEndian>;

/// The value of a CFA expression (DWARF operations on the registers and the stack):
/// `pc` is rip.
fn evaluate_cfa(
    mem: &ProcessMem,
    expr: gimli::Expression<EhFrameReader<'_>>,
    regs: &Regs,
    pc: u64,
    stack: &StackCopy,
) -> Option<u64> {
    let encoding = gimli::Encoding {
        format: gimli::Format::Dwarf64,
        version: 4,
        address_size: 8,
    };
    let mut eval = expr.evaluation(encoding);
    let mut result = eval.evaluate().ok()?;
    for _ in 0..64 {
        result = match result {
            gimli::EvaluationResult::Complete => {
                return match eval.value_result() {
                    Some(v) => v.to_u64(u64::MAX).ok(),
                    None => match eval.as_result() {
                        [gimli::Piece {
                            location: gimli::Location::Address { address },
                            ..
                        }] => Some(*address),
                        _ => None,
                    },
                };
            }
            gimli::EvaluationResult::RequiresRegister { register, .. } => {
                let v = if register.0 == RA {
                    Some(pc)
                } else {
                    regs.0.get(register.0 as usize).copied().flatten()
                }?;
                eval.resume_with_register(gimli::Value::Generic(v)).ok()?
            }
            gimli::EvaluationResult::RequiresMemory {
                address, size: 8, ..
            } => {
                let v = stack_word(mem, stack, address)?;
                eval.resume_with_memory(gimli::Value::Generic(v)).ok()?
            }
            _ => return None,
        };
    }
    None
}

/// Bytes of stack copied while the thread is stopped (the walk reads deeper frames live).
const STACK_COPY: usize = 256 * 1024;

/// The top of a thread's stack, copied while it was stopped.
struct StackCopy {
    base: u64,
    data: Vec<u8>,
}

/// A word of the thread's stack: from the copy, else (deeper than the copy) live.
fn stack_word(mem: &ProcessMem, stack: &StackCopy, addr: u64) -> Option<u64> {
    if let Some(off) = addr.checked_sub(stack.base) {
        if let Some(b) = stack.data.get(off as usize..off as usize + 8) {
            return Some(u64::from_le_bytes(b.try_into().ok()?));
        }
    }
    mem.read_u64(addr).ok()
}

/// The registers an x86-64 unwind carries from frame to frame (DWARF numbering).
#[derive(Debug, Clone, Copy, Default)]
struct Regs([Option<u64>; 17]);

const RBP: u16 = 6;
const RSP: u16 = 7;
const RA: u16 = 16;

/// Unwinds threads of one process.
pub struct NativeUnwinder {
    pid: u32,
    mem: ProcessMem,
    maps: Vec<Mapping>,
    objects: HashMap<String, Option<Arc<ObjectInfo>>>,
    ctx: Box<UnwindContext<usize>>,
    /// Objects mapped at the last capture and not loaded yet, kept open by path.
    files: HashMap<String, std::fs::File>,
    /// Captures waiting to be walked, by token.
    captures: HashMap<u64, (Regs, StackCopy)>,
    next_token: u64,
    /// Total time threads were stopped, and how many unwinds.
    pub paused: Duration,
    pub count: u64,
    /// The main thread, when it is seized already (`check` watching for the exit): it is
    /// stopped through the watch, not seized again.
    main: Option<Arc<std::sync::Mutex<super::exit_watch::ExitWatch>>>,
}

impl NativeUnwinder {
    pub fn new(pid: u32) -> Result<Self> {
        let process = remoteprocess::Process::new(pid as remoteprocess::Pid)
            .with_context(|| format!("opening process {pid}"))?;
        Ok(NativeUnwinder {
            pid,
            mem: ProcessMem { process },
            maps: read_maps(pid)?,
            objects: HashMap::new(),
            ctx: Box::new(UnwindContext::new()),
            captures: HashMap::new(),
            files: HashMap::new(),
            next_token: 0,
            paused: Duration::ZERO,
            count: 0,
            main: None,
        })
    }

    /// The main thread is seized by `watch` (same thread of gilscope): stop it through it.
    pub fn set_exit_watch(&mut self, watch: Arc<std::sync::Mutex<super::exit_watch::ExitWatch>>) {
        self.main = Some(watch);
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn mapping(&mut self, addr: u64) -> Option<Mapping> {
        let find = |maps: &[Mapping]| {
            maps.iter()
                .find(|m| m.start <= addr && addr < m.end)
                .cloned()
        };
        if let Some(m) = find(&self.maps) {
            return Some(m);
        }
        // Loaded since the last look (the process may be gone: keep what we had).
        if let Ok(maps) = read_maps(self.pid) {
            self.maps = maps;
        }
        find(&self.maps)
    }

    fn object(&mut self, m: &Mapping) -> Option<Arc<ObjectInfo>> {
        if let Some(o) = self.objects.get(&m.path) {
            return o.clone();
        }
        let data = if m.path == VDSO {
            // No file: the kernel maps a whole ELF image (section headers included).
            self.mem.read_vec(m.start, (m.end - m.start) as usize).ok()
        } else {
            self.read_object_file(m)
        };
        let loaded = data
            .and_then(|data| ObjectInfo::load(data, self.pid, &m.path).ok())
            .map(Arc::new);
        self.objects.insert(m.path.clone(), loaded.clone());
        loaded
    }

    fn read_object_file(&mut self, m: &Mapping) -> Option<Vec<u8>> {
        match self.files.remove(&m.path) {
            // Opened when the stack was captured: readable even if the process is gone now.
            Some(mut f) => {
                let mut d = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut d).ok().map(|_| d)
            }
            None => [
                format!("/proc/{}/map_files/{:x}-{:x}", self.pid, m.start, m.end),
                format!("/proc/{}/root{}", self.pid, m.path),
            ]
            .iter()
            .find_map(|p| std::fs::read(p).ok()),
        }
    }

    /// After a capture (the thread runs again): the current maps, and an open file for every
    /// mapped object not loaded yet, so that the capture can be walked even after the process
    /// has exited (opening is cheap; reading and parsing waits for the walk).
    fn keep_objects_open(&mut self) {
        let Ok(maps) = read_maps(self.pid) else {
            return;
        };
        for m in &maps {
            if self.objects.contains_key(&m.path) || self.files.contains_key(&m.path) {
                continue;
            }
            if m.path == VDSO {
                // A few pages, read now: the memory is gone with the process.
                self.object(m);
                continue;
            }
            let f = std::fs::File::open(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                self.pid, m.start, m.end
            ))
            .or_else(|_| std::fs::File::open(format!("/proc/{}/root{}", self.pid, m.path)));
            if let Ok(f) = f {
                self.files.insert(m.path.clone(), f);
            }
        }
        self.maps = maps;
    }

    /// Stops `tid` just long enough to read its registers and copy the top of its stack.
    fn stop_and_capture(&mut self, tid: u32) -> Result<(Regs, StackCopy)> {
        if let Some(watch) = self.main.clone().filter(|_| tid == self.pid) {
            let t0 = Instant::now();
            let mut w = watch
                .lock()
                .map_err(|_| anyhow!("the exit watch is poisoned"))?;
            if !w.interrupt() {
                bail!("thread {tid} is gone");
            }
            let captured = self.read_regs_and_stack(tid);
            w.resume();
            drop(w);
            self.paused += t0.elapsed();
            self.count += 1;
            return captured;
        }
        let thread =
            remoteprocess::Thread::new(tid as i32).with_context(|| format!("thread {tid}"))?;
        let t0 = Instant::now();
        let lock = thread
            .lock()
            .with_context(|| format!("stopping thread {tid} with ptrace"))?;
        let captured = self.read_regs_and_stack(tid);
        drop(lock);
        self.paused += t0.elapsed();
        self.count += 1;
        captured
    }

    /// Walks and names a capture (may load object files: slow the first time).
    fn symbolized(&mut self, regs: Regs, stack: &StackCopy) -> Result<Vec<NativeFrame>> {
        let ips = self.walk(regs, stack)?;
        Ok(ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| self.symbolicate(ip, i == 0))
            .collect())
    }

    /// The registers of the stopped thread `tid` and a copy of its stack from the stack
    /// pointer up (at most [`STACK_COPY`] bytes).
    fn read_regs_and_stack(&self, tid: u32) -> Result<(Regs, StackCopy)> {
        // SAFETY: user_regs_struct is plain data; PTRACE_GETREGS fills it for a stopped tracee.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGS,
                tid as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                &mut r as *mut libc::user_regs_struct as *mut libc::c_void,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reading the registers of thread {tid}"));
        }
        let mut regs = Regs::default();
        for (n, v) in [
            (0, r.rax),
            (1, r.rdx),
            (2, r.rcx),
            (3, r.rbx),
            (4, r.rsi),
            (5, r.rdi),
            (6, r.rbp),
            (7, r.rsp),
            (8, r.r8),
            (9, r.r9),
            (10, r.r10),
            (11, r.r11),
            (12, r.r12),
            (13, r.r13),
            (14, r.r14),
            (15, r.r15),
            (16, r.rip),
        ] {
            regs.0[n] = Some(v);
        }
        // The stack ends somewhere above rsp. process_vm_readv stops at the first remote
        // element it cannot read (it never splits one), so ask page by page: it then reads up
        // to the end of the mapping and says how much that was.
        let mut data = vec![0u8; STACK_COPY];
        let local = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let first_page_len = 4096 - (r.rsp % 4096) as usize;
        let mut remote = Vec::with_capacity(STACK_COPY / 4096 + 1);
        let mut at = r.rsp;
        let mut left = STACK_COPY;
        while left > 0 {
            let len = if remote.is_empty() {
                first_page_len.min(left)
            } else {
                4096.min(left)
            };
            remote.push(libc::iovec {
                iov_base: at as *mut libc::c_void,
                iov_len: len,
            });
            at += len as u64;
            left -= len;
        }
        // SAFETY: one local buffer of STACK_COPY bytes that we own; the remote elements add up
        // to the same length and are only read.
        let n = unsafe {
            libc::process_vm_readv(
                self.pid as libc::pid_t,
                &local,
                1,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        data.truncate(usize::try_from(n).unwrap_or(0));
        Ok((regs, StackCopy { base: r.rsp, data }))
    }

    fn walk(&mut self, mut regs: Regs, stack: &StackCopy) -> Result<Vec<u64>> {
        let Some(mut pc) = regs.0[RA as usize] else {
            bail!("no instruction pointer");
        };
        let mut out = vec![pc];
        while out.len() < MAX_FRAMES {
            // Return addresses point after the call: look the call itself up.
            let lookup = if out.len() == 1 {
                pc
            } else {
                pc.wrapping_sub(1)
            };
            let Some(next) = self.step(&regs, lookup, stack)? else {
                break;
            };
            let (Some(new_pc), Some(new_sp), Some(old_sp)) = (
                next.0[RA as usize],
                next.0[RSP as usize],
                regs.0[RSP as usize],
            ) else {
                break;
            };
            if new_pc == 0 || new_sp <= old_sp {
                break; // the outermost frame, or no progress
            }
            out.push(new_pc);
            pc = new_pc;
            regs = next;
        }
        Ok(out)
    }

    /// One frame up: the caller's registers (RA = its pc), or None where the unwind ends.
    fn step(&mut self, regs: &Regs, pc: u64, stack: &StackCopy) -> Result<Option<Regs>> {
        let Some(m) = self.mapping(pc) else {
            return Ok(None);
        };
        let Some(obj) = self.object(&m) else {
            return Ok(None);
        };
        let Some((eh_svma, eh_range)) = obj.eh_frame.clone() else {
            return Ok(None);
        };
        let bias = obj.bias(m.start, m.offset, m.end - m.start);
        let svma = pc.wrapping_sub(bias);
        let eh_data = obj
            .data
            .get(eh_range)
            .ok_or_else(|| anyhow!(".eh_frame outside the file"))?;
        let eh = EhFrame::new(eh_data, LittleEndian);
        let mut bases = BaseAddresses::default()
            .set_eh_frame(eh_svma)
            .set_text(obj.text_svma);
        let hdr_table = match &obj.eh_frame_hdr {
            Some((hdr_svma, hdr_range)) => {
                bases = bases.set_eh_frame_hdr(*hdr_svma);
                obj.data
                    .get(hdr_range.clone())
                    .and_then(|d| EhFrameHdr::new(d, LittleEndian).parse(&bases, 8).ok())
            }
            None => None,
        };
        let row = match hdr_table.as_ref().and_then(|h| h.table()) {
            Some(t) => t.unwind_info_for_address(
                &eh,
                &bases,
                &mut self.ctx,
                svma,
                EhFrame::cie_from_offset,
            ),
            None => {
                eh.unwind_info_for_address(&bases, &mut self.ctx, svma, EhFrame::cie_from_offset)
            }
        };
        let Ok(row) = row else {
            // A PLT stub without call-frame information: a jump that has pushed nothing
            // (IBT's .plt.sec, .plt.got), the return address on top of the stack.
            if obj.in_plt(svma) {
                let Some(rsp) = regs.0[RSP as usize] else {
                    return Ok(None);
                };
                let mut next = Regs::default();
                for n in [3u16, RBP, 12, 13, 14, 15] {
                    next.0[n as usize] = regs.0[n as usize];
                }
                next.0[RA as usize] = stack_word(&self.mem, stack, rsp);
                next.0[RSP as usize] = Some(rsp + 8);
                return Ok(Some(next));
            }
            // No call-frame information here (hand-written assembly, a JIT stub).
            return Ok(self.frame_pointer_step(regs, stack));
        };
        let cfa = match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => {
                let Some(base) = regs.0.get(register.0 as usize).copied().flatten() else {
                    return Ok(None);
                };
                base.wrapping_add_signed(*offset)
            }
            // GNU ld describes its lazy .plt stubs by an expression of rsp and rip.
            gimli::CfaRule::Expression(e) => {
                let Ok(expr) = e.get(&eh) else {
                    return Ok(None);
                };
                match evaluate_cfa(&self.mem, expr, regs, pc, stack) {
                    Some(cfa) => cfa,
                    None => return Ok(None),
                }
            }
        };
        let mut next = Regs::default();
        // Callee-saved registers keep their values unless a rule says where they went.
        for n in [3u16, RBP, 12, 13, 14, 15] {
            next.0[n as usize] = regs.0[n as usize];
        }
        for (reg, rule) in row.registers() {
            let n = reg.0 as usize;
            if n > 16 {
                continue;
            }
            next.0[n] = match rule {
                gimli::RegisterRule::Undefined => None,
                gimli::RegisterRule::SameValue => regs.0[n],
                gimli::RegisterRule::Offset(o) => {
                    stack_word(&self.mem, stack, cfa.wrapping_add_signed(*o))
                }
                gimli::RegisterRule::ValOffset(o) => Some(cfa.wrapping_add_signed(*o)),
                gimli::RegisterRule::Register(r) => regs.0.get(r.0 as usize).copied().flatten(),
                _ => None,
            };
        }
        if row.register(gimli::Register(RA)).is_none() {
            // x86-64 CIEs always say where the return address is; be safe anyway.
            next.0[RA as usize] = stack_word(&self.mem, stack, cfa.wrapping_sub(8));
        }
        next.0[RSP as usize] = Some(cfa);
        Ok(Some(next))
    }

    /// One frame up through the frame-pointer chain: `[rbp]` is the caller's rbp and
    /// `[rbp + 8]` the return address, when rbp points into the stack above rsp.
    fn frame_pointer_step(&self, regs: &Regs, stack: &StackCopy) -> Option<Regs> {
        let (rbp, rsp) = (regs.0[RBP as usize]?, regs.0[RSP as usize]?);
        let stack_end = stack.base + stack.data.len() as u64;
        if rbp < rsp || rbp + 16 > stack_end || rbp % 8 != 0 {
            return None;
        }
        let mut next = Regs::default();
        for n in [3u16, 12, 13, 14, 15] {
            next.0[n as usize] = regs.0[n as usize];
        }
        next.0[RBP as usize] = stack_word(&self.mem, stack, rbp);
        next.0[RA as usize] = stack_word(&self.mem, stack, rbp + 8);
        next.0[RSP as usize] = Some(rbp + 16);
        Some(next)
    }

    fn symbolicate(&mut self, ip: u64, innermost: bool) -> NativeFrame {
        let lookup = if innermost { ip } else { ip.wrapping_sub(1) };
        let mut frame = NativeFrame {
            addr: ip,
            object: String::new(),
            symbol: None,
            file_offset: None,
            approximate: false,
        };
        if let Some(m) = self.mapping(lookup) {
            frame.object = m.path.clone();
            if m.path != VDSO {
                frame.file_offset = Some(ip - m.start + m.offset);
            }
            if let Some(obj) = self.object(&m) {
                let svma = lookup.wrapping_sub(obj.bias(m.start, m.offset, m.end - m.start));
                if obj.in_plt(svma) {
                    // A stub on the way to another object: no function of this one (the
                    // nearest symbol before a PLT is `_init`).
                    frame.symbol = Some("[plt]".into());
                    frame.approximate = true;
                } else if let Some((name, approximate)) = obj.symbol(svma) {
                    frame.symbol = Some(demangle(name));
                    frame.approximate = approximate;
                }
            }
        }
        frame
    }

    /// The native stack of `tid`, innermost first, symbolized (capture and walk at once).
    pub fn stack(&mut self, tid: u32) -> Result<Vec<NativeFrame>> {
        let (regs, stack) = self.stop_and_capture(tid)?;
        self.symbolized(regs, &stack)
    }
}

impl NativeProbe for NativeUnwinder {
    fn capture(&mut self, pid: u32, tid: u32) -> std::result::Result<u64, String> {
        if pid != self.pid {
            return Err(format!("unwinder is for process {}, not {pid}", self.pid));
        }
        let captured = self.stop_and_capture(tid).map_err(|e| format!("{e:#}"))?;
        self.keep_objects_open();
        self.next_token += 1;
        self.captures.insert(self.next_token, captured);
        Ok(self.next_token)
    }

    fn resolve(&mut self, token: u64) -> std::result::Result<Vec<NativeFrame>, String> {
        let (regs, stack) = self
            .captures
            .remove(&token)
            .ok_or_else(|| format!("no capture {token}"))?;
        self.symbolized(regs, &stack).map_err(|e| format!("{e:#}"))
    }

    fn discard(&mut self, token: u64) {
        self.captures.remove(&token);
    }

    fn paused(&self) -> Duration {
        self.paused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            demangle("_RNvNtNtCsjrHSEGnQ3l9_3std6thread9functions5sleep"),
            "std::thread::functions::sleep"
        );
        assert_eq!(
            demangle("_ZN3std6thread5sleep17h0123456789abcdefE"),
            "std::thread::sleep"
        );
        assert_eq!(demangle("_ZN5boost4algoEv"), "boost::algo()");
        assert_eq!(demangle("gilext_hold_spin"), "gilext_hold_spin");
        assert_eq!(demangle("builtin_sum.lto_priv.0"), "builtin_sum");
        assert_eq!(
            demangle("_PyEval_EvalFrameDefault.cold"),
            "_PyEval_EvalFrameDefault"
        );
    }

    /// Unwinds `sleep 5` (a child: a thread of our own process cannot be ptraced) through
    /// the C library to its caller.
    #[test]
    fn unwinds_a_sleeping_process_through_libc() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait until it is blocked in its sleep (nanosleep 35 or clock_nanosleep 230, first
        // field of /proc/PID/syscall), not still being loaded.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let sc = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            if matches!(sc.split_whitespace().next(), Some("35" | "230")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`sleep 5` never reached its nanosleep: {sc:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut u = NativeUnwinder::new(pid).unwrap();
        let stack = u.stack(pid);
        let _ = child.kill();
        let _ = child.wait();
        let stack = stack.unwrap();
        let names: Vec<String> = stack
            .iter()
            .map(|f| format!("{} ({})", f.symbol.as_deref().unwrap_or("?"), f.object))
            .collect();
        assert!(stack.len() >= 3, "{names:?}");
        assert!(
            stack[0].object.contains("libc")
                && stack[0]
                    .symbol
                    .as_deref()
                    .is_some_and(|s| s.contains("nanosleep")),
            "{names:?}"
        );
        // Past libc, into the sleep binary itself.
        assert!(
            stack.iter().any(|f| f.object.ends_with("/sleep")),
            "{names:?}"
        );
        assert!(u.count == 1 && u.paused > Duration::ZERO);
    }
}
