//! Where to put the GIL uprobes in a real CPython build.
//!
//! `take_gil` and `drop_gil` are static functions: they exist only in `.symtab` (gone when the
//! file is stripped) and in DWARF. This module looks in, in order:
//!
//! 1. the ELF file the target maps (`.symtab`: pyenv and other source builds);
//! 2. its separate debug file, found by build-id under `<root>/usr/lib/debug/.build-id/ab/
//!    cdef….debug` (the target's root first, `/proc/PID/root`, then the host's) or by
//!    `.gnu_debuglink` (Debian's `python3.X-dbg`, Fedora's debuginfo);
//!
//! and matches LTO/IPA-renamed symbols by prefix (`take_gil.lto_priv.0`,
//! `drop_gil.constprop.0`), never the `.cold`/`.part` fragments. DWARF (in whichever file has
//! it) adds every inlined copy of `drop_gil` (LTO builds inline it into a dozen callers; the
//! free-threaded 3.13t has no out-of-line `drop_gil` at all) and says which register holds the
//! `tstate` argument at each probe point. File offsets come from the program headers of the
//! file the target maps.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SegmentFlags, SymbolKind};

/// What a probe point reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// `take_gil` entry (uprobe).
    TakeEnter,
    /// `take_gil` return (uretprobe at the function's entry).
    TakeReturn,
    /// `drop_gil` entry, out of line or an inlined copy.
    Drop,
}

/// An x86_64 register, numbered as `perf_regs.h` numbers it (`PERF_REG_X86_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PerfReg(pub u8);

impl PerfReg {
    pub const RDI: PerfReg = PerfReg(5);
    pub const RSI: PerfReg = PerfReg(4);
    pub const RDX: PerfReg = PerfReg(3);

    /// From a DWARF x86_64 register number (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp,
    /// 7 rsp, 8–15 r8–r15).
    pub fn from_dwarf(n: u16) -> Option<PerfReg> {
        Some(PerfReg(match n {
            0 => 0,                // ax
            1 => 3,                // dx
            2 => 2,                // cx
            3 => 1,                // bx
            4 => 4,                // si
            5 => 5,                // di
            6 => 6,                // bp
            8..=15 => n as u8 + 8, // r8..r15 → 16..23
            _ => return None,      // rsp, vector registers
        }))
    }

    pub fn name(self) -> &'static str {
        const NAMES: [&str; 24] = [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip", "flags", "cs", "ss",
            "ds", "es", "fs", "gs", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("?")
    }
}

/// One place to put a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    pub kind: ProbeKind,
    /// Symbol, or "drop_gil inlined in <function>" for a DWARF inlined copy.
    pub function: String,
    /// Virtual address in the ELF file.
    pub vaddr: u64,
    /// Offset in the ELF file (what the uprobe PMU wants in `config2`).
    pub file_offset: u64,
    /// Where the thread state argument is at this point, when known.
    pub tstate_reg: Option<PerfReg>,
    /// "symtab", "dwarf" or "dwarf-inlined".
    pub found_by: &'static str,
    /// The kernel single-steps the probed instruction out of line (a second trap at every
    /// hit) instead of emulating it: see [`kernel_steps`].
    pub stepped: bool,
}

/// Everything needed to open the probes.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub pid: u32,
    /// The file as the target sees it (e.g. `/usr/bin/python3.14` inside a container).
    pub binary: String,
    /// The same file as gilscope opens it (`/proc/PID/root/...`): passed to the kernel, which
    /// attaches probes to the inode, so containers and chroots work.
    pub probe_path: PathBuf,
    pub build_id: Option<String>,
    /// Where the symbols came from (the binary itself or its debug file, host path).
    pub symbols_from: PathBuf,
    /// Where DWARF came from, if anywhere.
    pub dwarf_from: Option<PathBuf>,
    pub minor: u32,
    pub free_threaded: bool,
    pub points: Vec<ProbePoint>,
    /// Things the caller may want to show with `-v` (inlined copies found, fallbacks used).
    pub notes: Vec<String>,
}

impl ProbePlan {
    pub fn points_of(&self, kind: ProbeKind) -> impl Iterator<Item = &ProbePoint> {
        self.points.iter().filter(move |p| p.kind == kind)
    }

    /// One line: "take_gil.lto_priv.0 + 9 drop_gil locations from <file> (debug file by build-id)".
    pub fn summary(&self) -> String {
        let take = self
            .points_of(ProbeKind::TakeEnter)
            .map(|p| p.function.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let drops = self.points_of(ProbeKind::Drop).count();
        let inlined = self
            .points_of(ProbeKind::Drop)
            .filter(|p| p.found_by == "dwarf-inlined")
            .count();
        format!(
            "{take} + {drops} drop_gil location(s) ({inlined} inlined) in {}, symbols from {}",
            self.binary,
            self.symbols_from.display()
        )
    }
}

/// Why exact mode cannot be used, and what would enable it: one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoExactReason {
    /// "no symbol for take_gil in /usr/bin/python3.14 (stripped, no debug file found)".
    pub reason: String,
    /// "install python3.14-dbg (debug symbols for /usr/bin/python3.14)".
    pub enable: String,
}

impl fmt::Display for NoExactReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; to enable exact mode: {}", self.reason, self.enable)
    }
}

impl std::error::Error for NoExactReason {}

/// Which argument of `drop_gil` is the thread state, by version (C signatures,
/// cpython-internals.md §5.1). `take_gil(tstate)` is arg 0 everywhere.
fn drop_gil_tstate_arg(minor: u32) -> PerfReg {
    match minor {
        ..=11 => PerfReg::RDX, // (ceval, ceval2, tstate)
        _ => PerfReg::RSI,     // 3.12 (ceval, tstate); 3.13+ (interp, tstate, final_release)
    }
}

/// `drop_gil_impl(tstate, gil)` (3.13+).
const DROP_GIL_IMPL_TSTATE: PerfReg = PerfReg::RDI;

/// Does `sym` name `base` or a compiler clone of it that starts at the function's entry?
/// `take_gil`, `take_gil.lto_priv.0`, `drop_gil.constprop.0`, `drop_gil.isra.0`: yes.
/// `take_gil.cold`, `drop_gil.constprop.0.cold`, `take_gil.part.0`: no (fragments).
pub fn matches_function(sym: &str, base: &str) -> bool {
    let Some(rest) = sym.strip_prefix(base) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    if !rest.starts_with('.') {
        return false; // take_gil_foo
    }
    !rest
        .split('.')
        .any(|part| part == "cold" || part == "part" || part.starts_with("cold"))
}

/// Is the clone's argument list possibly different from the C signature?
fn clone_may_change_args(sym: &str) -> bool {
    sym.contains(".isra") || sym.contains(".constprop")
}

struct Elf {
    path: PathBuf,
    data: Vec<u8>,
}

impl Elf {
    fn read(path: &Path) -> std::io::Result<Elf> {
        Ok(Elf {
            path: path.to_path_buf(),
            data: std::fs::read(path)?,
        })
    }

    fn parse(&self) -> Result<object::File<'_>, String> {
        object::File::parse(&*self.data).map_err(|e| {
            format!(
                "{} is not an ELF file gilscope can read: {e}",
                self.path.display()
            )
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PT_LOAD segments: (vaddr, memsz-in-file, file offset, executable).
fn load_segments(file: &object::File<'_>) -> Vec<(u64, u64, u64, bool)> {
    file.segments()
        .filter_map(|s| {
            let (off, size) = s.file_range();
            let exec = match s.flags() {
                SegmentFlags::Elf { p_flags, .. } => p_flags.0 & object::elf::PF_X.0 != 0,
                _ => false,
            };
            (size > 0).then_some((s.address(), size, off, exec))
        })
        .collect()
}

/// File offset of `vaddr` through the program headers of the mapped file; only inside an
/// executable segment (a probe elsewhere would be refused by the kernel or be wrong).
pub fn vaddr_to_offset(segments: &[(u64, u64, u64, bool)], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .find(|(va, size, _, exec)| *exec && vaddr >= *va && vaddr < va + size)
        .map(|(va, _, off, _)| vaddr - va + off)
}

#[derive(Debug, Clone, Default)]
struct SymbolHits {
    /// (symbol, vaddr) of take_gil and its clones.
    take: Vec<(String, u64)>,
    drop: Vec<(String, u64)>,
    drop_impl: Vec<(String, u64)>,
    release_lock: Vec<(String, u64)>,
    /// Whether the file had any local function symbols at all.
    has_symtab: bool,
}

fn find_symbols(file: &object::File<'_>) -> SymbolHits {
    let mut hits = SymbolHits::default();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.address() == 0 || sym.is_undefined() {
            continue;
        }
        hits.has_symtab = true;
        let Ok(name) = sym.name() else { continue };
        let entry = (name.to_string(), sym.address());
        // drop_gil_impl also starts with "drop_gil": test the longer name first.
        if matches_function(name, "drop_gil_impl") {
            hits.drop_impl.push(entry);
        } else if matches_function(name, "drop_gil") {
            hits.drop.push(entry);
        } else if matches_function(name, "take_gil") {
            hits.take.push(entry);
        } else if matches_function(name, "_PyEval_ReleaseLock") {
            hits.release_lock.push(entry);
        }
    }
    for v in [
        &mut hits.take,
        &mut hits.drop,
        &mut hits.drop_impl,
        &mut hits.release_lock,
    ] {
        v.sort_by_key(|(_, a)| *a);
        v.dedup_by_key(|(_, a)| *a);
    }
    hits
}

/// The debug file candidates for a binary, most specific first.
pub(crate) fn debug_candidates(
    pid: u32,
    binary_as_seen: &str,
    build_id: Option<&str>,
    debuglink: Option<&str>,
) -> Vec<PathBuf> {
    let roots = [
        PathBuf::from(format!("/proc/{pid}/root")),
        PathBuf::from("/"),
    ];
    let mut out = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        for root in &roots {
            out.push(root.join(format!(
                "usr/lib/debug/.build-id/{}/{}.debug",
                &id[..2],
                &id[2..]
            )));
        }
    }
    if let Some(link) = debuglink {
        let dir = Path::new(binary_as_seen)
            .parent()
            .map(|p| p.to_string_lossy().trim_start_matches('/').to_string())
            .unwrap_or_default();
        for root in &roots {
            out.push(root.join(&dir).join(link));
            out.push(root.join(&dir).join(".debug").join(link));
            out.push(root.join("usr/lib/debug").join(&dir).join(link));
            if let Some(id) = build_id.filter(|id| id.len() > 2) {
                out.push(
                    root.join(format!("usr/lib/debug/.build-id/{}", &id[..2]))
                        .join(link),
                );
            }
        }
    }
    out.dedup();
    out
}

/// CRC-32 (IEEE, as `.gnu_debuglink` uses).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The Debian/Ubuntu package owning `binary_as_seen` in the target's root, from dpkg's lists.
fn dpkg_owner(pid: u32, binary_as_seen: &str) -> Option<String> {
    let dir = PathBuf::from(format!("/proc/{pid}/root/var/lib/dpkg/info"));
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pkg) = name.strip_suffix(".list") else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if text.lines().any(|l| l == binary_as_seen) {
            return Some(pkg.split(':').next().unwrap_or(pkg).to_string());
        }
    }
    None
}

/// The package that brings debug symbols for a file owned by `pkg` (Debian naming).
fn debug_package_for(pkg: &str) -> String {
    // python3.14-minimal, libpython3.14, libpython3.14-minimal, python3.14 → python3.14-dbg
    let base = pkg.trim_start_matches("lib").trim_end_matches("-minimal");
    if base.starts_with("python3.") {
        return format!("{base}-dbg");
    }
    format!("{pkg}-dbgsym")
}

fn enable_hint(pid: u32, binary: &str, minor: u32) -> String {
    match dpkg_owner(pid, binary) {
        Some(pkg) => format!(
            "install {} (debug symbols for {binary}{})",
            debug_package_for(&pkg),
            if std::fs::read_link(format!("/proc/{pid}/root")).ok() == Some(PathBuf::from("/")) {
                String::new()
            } else {
                ", inside the target's container/chroot".to_string()
            }
        ),
        None => format!(
            "install the debug symbols of {binary} (Debian/Ubuntu: python3.{minor}-dbg; Fedora: \
             `dnf debuginfo-install python3`), or use a Python built from source (pyenv keeps its \
             symbols)"
        ),
    }
}

/// The target's file, as gilscope can open it, and its path inside the target's root.
struct TargetFile {
    host_path: PathBuf,
    target_path: String,
}

/// `binary` may be the path inside the target's root (`/usr/bin/python3.14`) or the path
/// as gilscope sees it in `/proc/PID/maps` (`/srv/chroot/usr/bin/python3.14`: the kernel shows
/// paths relative to the reader's root). Picks the candidate with the mapped file's inode.
fn locate_target_file(pid: u32, binary: &str) -> TargetFile {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::read_link(format!("/proc/{pid}/root"))
        .map(|p| p.to_string_lossy().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let target_path = match binary.strip_prefix(root.as_str()) {
        Some(rest) if !root.is_empty() && rest.starts_with('/') => rest.to_string(),
        _ => binary.to_string(),
    };
    let mapped_inode = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .and_then(|maps| {
            maps.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6 && f[5..].join(" ") == binary)
                    .then(|| f[4].parse::<u64>().ok())
                    .flatten()
            })
        });
    let candidates = [
        PathBuf::from(format!("/proc/{pid}/root{target_path}")),
        PathBuf::from(format!("/proc/{pid}/root{binary}")),
        PathBuf::from(binary),
    ];
    let host_path = candidates
        .iter()
        .find(|c| match (std::fs::metadata(c), mapped_inode) {
            (Ok(m), Some(ino)) => m.ino() == ino,
            (Ok(_), None) => true,
            _ => false,
        })
        .unwrap_or(&candidates[0])
        .clone();
    TargetFile {
        host_path,
        target_path,
    }
}

/// Finds where to probe `take_gil` / `drop_gil` in the file holding `_PyRuntime`
/// (`binary_as_seen_by_target`: `RuntimeLocation::binary`, either the path inside the
/// target's root or the path gilscope sees in `/proc/PID/maps`).
pub fn resolve_gil_probes(
    pid: u32,
    binary_as_seen_by_target: &str,
    minor: u32,
    free_threaded: bool,
) -> Result<ProbePlan, NoExactReason> {
    let file = locate_target_file(pid, binary_as_seen_by_target);
    let main = Elf::read(&file.host_path).map_err(|e| NoExactReason {
        reason: format!("cannot read {} ({e})", file.host_path.display()),
        enable: "run gilscope as root (or with CAP_SYS_PTRACE) while the target is alive".into(),
    })?;
    resolve_in(
        pid,
        &file.target_path,
        &main,
        file.host_path.clone(),
        minor,
        free_threaded,
    )
}

/// `resolve_gil_probes` for a file at a host path (tests: fallback messages without a
/// process; `pid` is only used for the target's root and dpkg lookups).
pub fn resolve_gil_probes_in_file(
    pid: u32,
    binary_as_seen_by_target: &str,
    host_path: &Path,
    minor: u32,
    free_threaded: bool,
) -> Result<ProbePlan, NoExactReason> {
    let main = Elf::read(host_path).map_err(|e| NoExactReason {
        reason: format!("cannot read {} ({e})", host_path.display()),
        enable: "check the path".into(),
    })?;
    resolve_in(
        pid,
        binary_as_seen_by_target,
        &main,
        host_path.to_path_buf(),
        minor,
        free_threaded,
    )
}

fn resolve_in(
    pid: u32,
    binary: &str,
    main: &Elf,
    probe_path: PathBuf,
    minor: u32,
    free_threaded: bool,
) -> Result<ProbePlan, NoExactReason> {
    let mut notes = Vec::new();
    let main_file = main.parse().map_err(|e| NoExactReason {
        reason: e,
        enable: "exact mode needs an x86_64 ELF CPython".into(),
    })?;
    let segments = load_segments(&main_file);
    let build_id = main_file.build_id().ok().flatten().map(hex);
    let debuglink = main_file
        .gnu_debuglink()
        .ok()
        .flatten()
        .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));

    let mut symbols = find_symbols(&main_file);
    let mut symbols_from = probe_path.clone();
    let main_has_dwarf = main_file
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0 && s.kind() != object::SectionKind::UninitializedData);

    // The separate debug file: when the binary lacks the symbols or the DWARF.
    let mut debug: Option<Elf> = None;
    if symbols.take.is_empty() || !main_has_dwarf {
        for cand in debug_candidates(
            pid,
            binary,
            build_id.as_deref(),
            debuglink.as_ref().map(|(n, _)| n.as_str()),
        ) {
            let Ok(elf) = Elf::read(&cand) else { continue };
            let Ok(file) = elf.parse() else { continue };
            let id = file.build_id().ok().flatten().map(hex);
            let matches = match (&build_id, &id, &debuglink) {
                (Some(want), Some(got), _) => want == got,
                (None, _, Some((_, crc))) => crc32(&elf.data) == *crc,
                _ => false,
            };
            if !matches {
                notes.push(format!(
                    "{} does not match {binary} (build-id/CRC)",
                    cand.display()
                ));
                continue;
            }
            let hits = find_symbols(&file);
            drop(file);
            if symbols.take.is_empty() && !hits.take.is_empty() {
                symbols = hits;
                symbols_from = cand.clone();
            }
            notes.push(format!("debug file {}", cand.display()));
            debug = Some(elf);
            break;
        }
    }

    // DWARF: inlined copies of drop_gil, and argument registers.
    let dwarf_elf = if main_has_dwarf {
        Some(main)
    } else {
        debug.as_ref()
    };
    let mut dwarf_info = DwarfInfo::default();
    let mut dwarf_from = None;
    if let Some(elf) = dwarf_elf {
        match elf
            .parse()
            .map_err(anyhow::Error::msg)
            .and_then(|f| scan_dwarf(&f))
        {
            Ok(info) => {
                dwarf_info = info;
                dwarf_from = Some(elf.path.clone());
            }
            Err(e) => notes.push(format!("DWARF of {} unreadable: {e:#}", elf.path.display())),
        }
    }

    let mut points = Points {
        map: BTreeMap::new(),
        segments: &segments,
        data: &main.data,
    };
    let add = |points: &mut Points<'_>, kind, function: String, vaddr, reg, found_by| {
        points.add(kind, function, vaddr, reg, found_by)
    };

    // take_gil: out-of-line entries (the uretprobe needs a real return).
    let mut take: Vec<(String, u64, &'static str)> = symbols
        .take
        .iter()
        .map(|(n, a)| (n.clone(), *a, "symtab"))
        .collect();
    if take.is_empty() {
        take = dwarf_info
            .concrete
            .iter()
            .filter(|c| c.target == Target::TakeGil)
            .map(|c| ("take_gil".to_string(), c.entry, "dwarf"))
            .collect();
    }
    for (name, vaddr, found_by) in &take {
        let reg = dwarf_info
            .tstate_reg_at(*vaddr)
            .or((!clone_may_change_args(name)).then_some(PerfReg::RDI));
        if add(
            &mut points,
            ProbeKind::TakeEnter,
            name.clone(),
            *vaddr,
            reg,
            found_by,
        ) {
            add(
                &mut points,
                ProbeKind::TakeReturn,
                name.clone(),
                *vaddr,
                None,
                found_by,
            );
        }
    }
    let inlined_take = dwarf_info
        .inlined
        .iter()
        .filter(|i| i.target == Target::TakeGil)
        .count();
    if inlined_take > 0 {
        notes.push(format!(
            "take_gil is also inlined in {inlined_take} place(s): waits there are not seen"
        ));
    }

    // drop_gil: every out-of-line copy and every inlined copy.
    let drop_reg = drop_gil_tstate_arg(minor);
    for (name, vaddr) in &symbols.drop {
        let reg = dwarf_info
            .tstate_reg_at(*vaddr)
            .or((!clone_may_change_args(name) || minor >= 13).then_some(drop_reg));
        add(
            &mut points,
            ProbeKind::Drop,
            name.clone(),
            *vaddr,
            reg,
            "symtab",
        );
    }
    for c in dwarf_info
        .concrete
        .iter()
        .filter(|c| c.target == Target::DropGil)
    {
        add(
            &mut points,
            ProbeKind::Drop,
            "drop_gil".into(),
            c.entry,
            c.tstate_reg,
            "dwarf",
        );
    }
    let mut inlined_drop = 0;
    for i in dwarf_info
        .inlined
        .iter()
        .filter(|i| i.target == Target::DropGil)
    {
        let name = format!("drop_gil inlined at {:#x}", i.entry);
        if add(
            &mut points,
            ProbeKind::Drop,
            name,
            i.entry,
            i.tstate_reg,
            "dwarf-inlined",
        ) {
            inlined_drop += 1;
        }
    }
    if inlined_drop > 0 {
        notes.push(format!(
            "drop_gil: {inlined_drop} inlined copies from DWARF"
        ));
    }
    // Alternatives when drop_gil itself is nowhere to be found.
    if !points.has(ProbeKind::Drop) {
        for (name, vaddr) in &symbols.drop_impl {
            add(
                &mut points,
                ProbeKind::Drop,
                name.clone(),
                *vaddr,
                Some(DROP_GIL_IMPL_TSTATE),
                "symtab",
            );
        }
        for i in dwarf_info
            .inlined
            .iter()
            .filter(|i| i.target == Target::DropGilImpl)
        {
            let name = format!("drop_gil_impl inlined at {:#x}", i.entry);
            add(
                &mut points,
                ProbeKind::Drop,
                name,
                i.entry,
                i.tstate_reg,
                "dwarf-inlined",
            );
        }
        if points.has(ProbeKind::Drop) {
            notes.push("drop_gil not found: probing drop_gil_impl instead".into());
        } else if minor >= 12 {
            for (name, vaddr) in &symbols.release_lock {
                add(
                    &mut points,
                    ProbeKind::Drop,
                    name.clone(),
                    *vaddr,
                    Some(PerfReg::RSI),
                    "symtab",
                );
            }
            if points.has(ProbeKind::Drop) {
                notes.push(
                    "drop_gil not found: probing _PyEval_ReleaseLock (misses the eval loop's \
                     periodic hand-offs on 3.12)"
                        .into(),
                );
            }
        }
    }

    let has_take = points.has(ProbeKind::TakeEnter);
    let has_drop = points.has(ProbeKind::Drop);
    if !has_take || !has_drop {
        let missing = if !has_take { "take_gil" } else { "drop_gil" };
        let why = if !symbols.has_symtab && debug.is_none() {
            format!(
                "{binary} is stripped and no debug file was found{}",
                build_id
                    .as_deref()
                    .map(|id| format!(" (build-id {id})"))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "no {missing} in the symbols of {binary}{}",
                if dwarf_from.is_some() {
                    " or its DWARF"
                } else {
                    ""
                }
            )
        };
        return Err(NoExactReason {
            reason: format!("exact mode unavailable: {why}"),
            enable: enable_hint(pid, binary, minor),
        });
    }

    Ok(ProbePlan {
        pid,
        binary: binary.to_string(),
        probe_path,
        build_id,
        symbols_from,
        dwarf_from,
        minor,
        free_threaded,
        points: points.map.into_values().collect(),
        notes,
    })
}

struct Points<'a> {
    map: BTreeMap<(u64, ProbeKind), ProbePoint>,
    segments: &'a [(u64, u64, u64, bool)],
    /// The probed file's bytes (to look at the first instructions of a probe point).
    data: &'a [u8],
}

/// `endbr64`, which `-fcf-protection` builds (Debian's, Ubuntu's, Fedora's) put first in every
/// function that can be called indirectly.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// Where to put a uprobe meant for the instruction at `file_offset`: past an `endbr64` that is
/// followed by a register push. The kernel single-steps `endbr64` out of line (a second trap:
/// 16-18 µs a hit on this machine's kind against 1.5 µs for an emulated push, measured on sid's
/// 3.15 and pyenv's 3.12), and pushes are emulated. Past it, the registers and the stack are the
/// same (`endbr64` changes neither), so the arguments and the return address are read the same;
/// and a push can be no loop's head, so the probe is hit exactly when the function is entered.
/// Whether the kernel's x86 uprobes single-step the instruction at `file_offset` out of line
/// rather than emulate it. Emulated (one trap a hit): register pushes, `call`/`jmp` with a
/// relative target, conditional jumps, `nop`. Everything else (a `mov`, `endbr64`, ...) is
/// copied out of line and single-stepped: a second trap, ~30× dearer than an emulated hit on
/// this project's VMs (docs/exact-mode.md, "Overhead").
pub fn kernel_steps(data: &[u8], file_offset: u64) -> bool {
    let Some(code) = usize::try_from(file_offset)
        .ok()
        .and_then(|at| data.get(at..at.checked_add(2)?))
    else {
        return true;
    };
    let emulated = matches!(code[0], 0x50..=0x57 | 0xe8 | 0xe9 | 0xeb | 0x70..=0x7f | 0x90)
        || (code[0] == 0x41 && (0x50..=0x57).contains(&code[1]))
        || (code[0] == 0x0f && (0x80..=0x8f).contains(&code[1]));
    !emulated
}

pub fn past_endbr64(data: &[u8], file_offset: u64) -> u64 {
    let Ok(at) = usize::try_from(file_offset) else {
        return file_offset;
    };
    let Some(code) = at.checked_add(6).and_then(|end| data.get(at..end)) else {
        return file_offset;
    };
    let push =
        (0x50..=0x57).contains(&code[4]) || (code[4] == 0x41 && (0x50..=0x57).contains(&code[5]));
    if code[..4] == ENDBR64 && push {
        file_offset + 4
    } else {
        file_offset
    }
}

impl Points<'_> {
    /// Adds a probe point unless its address is outside the executable segments.
    fn add(
        &mut self,
        kind: ProbeKind,
        function: String,
        vaddr: u64,
        tstate_reg: Option<PerfReg>,
        found_by: &'static str,
    ) -> bool {
        let Some(file_offset) = vaddr_to_offset(self.segments, vaddr) else {
            return false;
        };
        let probed = past_endbr64(self.data, file_offset);
        self.map.entry((vaddr, kind)).or_insert(ProbePoint {
            kind,
            function,
            vaddr: vaddr + (probed - file_offset),
            file_offset: probed,
            tstate_reg,
            found_by,
            stepped: kernel_steps(self.data, probed),
        });
        true
    }

    fn has(&self, kind: ProbeKind) -> bool {
        self.map.keys().any(|(_, k)| *k == kind)
    }
}

// ------------------------------------------------------------------------------------ DWARF

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    TakeGil,
    DropGil,
    DropGilImpl,
}

impl Target {
    fn from_name(name: &[u8]) -> Option<Target> {
        match name {
            b"take_gil" => Some(Target::TakeGil),
            b"drop_gil" => Some(Target::DropGil),
            b"drop_gil_impl" => Some(Target::DropGilImpl),
            _ => None,
        }
    }
}

/// A code location of one of the functions, found in DWARF.
#[derive(Debug, Clone)]
struct DwarfSite {
    target: Target,
    entry: u64,
    tstate_reg: Option<PerfReg>,
}

#[derive(Debug, Default)]
struct DwarfInfo {
    /// Out-of-line instances (DW_TAG_subprogram with code).
    concrete: Vec<DwarfSite>,
    /// Inlined instances (DW_TAG_inlined_subroutine).
    inlined: Vec<DwarfSite>,
}

impl DwarfInfo {
    fn tstate_reg_at(&self, vaddr: u64) -> Option<PerfReg> {
        self.concrete
            .iter()
            .chain(&self.inlined)
            .find(|s| s.entry == vaddr)
            .and_then(|s| s.tstate_reg)
    }
}

type R<'a> = gimli::EndianSlice<'a, gimli::RunTimeEndian>;

/// What pass 1 remembers about a DIE that has code and an abstract origin.
struct Instance {
    origin: u64,
    /// Global `.debug_info` offset of the instance's DIE.
    die: u64,
    entry: u64,
    inlined: bool,
}

/// What a subprogram DIE says about its identity.
enum Link {
    Named(Target),
    Origin(u64),
}

fn ref_offset(value: gimli::AttributeValue<R<'_>>, unit: &gimli::Unit<R<'_>>) -> Option<u64> {
    match value {
        gimli::AttributeValue::UnitRef(o) => {
            o.to_debug_info_offset(&unit.header).map(|o| o.0 as u64)
        }
        gimli::AttributeValue::DebugInfoRef(o) => Some(o.0 as u64),
        _ => None,
    }
}

#[allow(non_upper_case_globals)] // gimli's DW_* constants in match patterns
fn scan_dwarf(file: &object::File<'_>) -> anyhow::Result<DwarfInfo> {
    use gimli::constants::*;

    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, object::Error> {
        match file.section_by_name(id.name()) {
            Some(s) => s.uncompressed_data(),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf =
        sections.borrow(|s| gimli::EndianSlice::new(s.as_ref(), gimli::RunTimeEndian::Little));

    // Pass over every DIE, reading attributes only of subprograms and inlined subroutines.
    let mut links: HashMap<u64, Link> = HashMap::new();
    let mut instances: Vec<Instance> = Vec::new();
    let mut unit_starts: Vec<u64> = Vec::new();
    let mut attrs = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit_off = header.offset().0 as u64;
        unit_starts.push(unit_off);
        let unit = dwarf.unit(header)?;
        let mut raw = unit.entries_raw(None)?;
        while !raw.is_empty() {
            let off = raw.next_offset();
            let Some(abbrev) = raw.read_abbreviation()? else {
                continue;
            };
            let tag = abbrev.tag();
            if tag != DW_TAG_subprogram && tag != DW_TAG_inlined_subroutine {
                raw.skip_attributes(abbrev.attributes())?;
                continue;
            }
            raw.read_attributes(abbrev.attributes(), &mut attrs)?;
            let global = unit_off + off.0 as u64;
            let mut name = None;
            let mut origin = None;
            let mut entry_pc = None;
            let mut low_pc = None;
            let mut has_ranges = false;
            for a in &attrs {
                match a.name() {
                    DW_AT_name => name = dwarf.attr_string(&unit, a.value()).ok(),
                    DW_AT_abstract_origin | DW_AT_specification => {
                        origin = ref_offset(a.value(), &unit)
                    }
                    DW_AT_entry_pc => entry_pc = dwarf.attr_address(&unit, a.value())?,
                    DW_AT_low_pc => low_pc = dwarf.attr_address(&unit, a.value())?,
                    DW_AT_ranges => has_ranges = true,
                    _ => {}
                }
            }
            if let Some(t) = name.and_then(|n| Target::from_name(n.slice())) {
                links.insert(global, Link::Named(t));
            } else if let Some(o) = origin {
                if tag == DW_TAG_subprogram {
                    links.insert(global, Link::Origin(o));
                }
            }
            let Some(origin) = origin else { continue };
            // Code address of this instance: entry_pc, low_pc, or the first range.
            let mut entry = entry_pc.or(low_pc);
            if entry.is_none() && has_ranges {
                let entry_die = unit.entry(off)?;
                let mut ranges = dwarf.die_ranges(&unit, &entry_die)?;
                entry = ranges.next()?.map(|r| r.begin);
            }
            if let Some(entry) = entry.filter(|&e| e != 0) {
                instances.push(Instance {
                    origin,
                    die: global,
                    entry,
                    inlined: tag == DW_TAG_inlined_subroutine,
                });
            }
        }
    }

    let resolve = |mut off: u64| -> Option<Target> {
        for _ in 0..8 {
            match links.get(&off)? {
                Link::Named(t) => return Some(*t),
                Link::Origin(o) => off = *o,
            }
        }
        None
    };

    let dies = DieReader {
        dwarf: &dwarf,
        unit_starts,
    };
    let mut info = DwarfInfo::default();
    for inst in instances {
        let Some(target) = resolve(inst.origin) else {
            continue;
        };
        let tstate_reg = dies.tstate_location(inst.die, inst.entry).unwrap_or(None);
        let site = DwarfSite {
            target,
            entry: inst.entry,
            tstate_reg,
        };
        if inst.inlined {
            info.inlined.push(site);
        } else {
            info.concrete.push(site);
        }
    }
    info.inlined.sort_by_key(|s| s.entry);
    info.inlined.dedup_by_key(|s| s.entry);
    info.concrete.sort_by_key(|s| s.entry);
    info.concrete.dedup_by_key(|s| s.entry);
    Ok(info)
}

/// Random access to DIEs by global `.debug_info` offset (for the few instances we probe).
struct DieReader<'a, 'd> {
    dwarf: &'a gimli::Dwarf<R<'d>>,
    /// Sorted start offsets of the units.
    unit_starts: Vec<u64>,
}

impl<'d> DieReader<'_, 'd> {
    fn unit_of(&self, global: u64) -> anyhow::Result<(gimli::Unit<R<'d>>, gimli::UnitOffset)> {
        let idx = self.unit_starts.partition_point(|&s| s <= global);
        let start = *self
            .unit_starts
            .get(idx.wrapping_sub(1))
            .ok_or_else(|| anyhow::anyhow!("DIE offset {global:#x} before the first unit"))?;
        let header = self
            .dwarf
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(start as usize))?;
        let unit = self.dwarf.unit(header)?;
        Ok((unit, gimli::UnitOffset((global - start) as usize)))
    }

    /// Is the formal parameter at `global` (or what it is an instance of) named `tstate`?
    fn is_tstate_param(&self, mut global: u64) -> bool {
        for _ in 0..6 {
            let Ok((unit, off)) = self.unit_of(global) else {
                return false;
            };
            let Ok(e) = unit.entry(off) else { return false };
            if let Some(v) = e.attr_value(gimli::constants::DW_AT_name) {
                return self
                    .dwarf
                    .attr_string(&unit, v)
                    .is_ok_and(|n| n.slice() == b"tstate");
            }
            let Some(o) = e
                .attr_value(gimli::constants::DW_AT_abstract_origin)
                .and_then(|v| ref_offset(v, &unit))
            else {
                return false;
            };
            global = o;
        }
        false
    }

    /// The register holding the `tstate` parameter of the instance at `die` when execution
    /// is at `pc`, when its location there is a plain register.
    fn tstate_location(&self, die: u64, pc: u64) -> anyhow::Result<Option<PerfReg>> {
        use gimli::constants::*;
        let (unit, off) = self.unit_of(die)?;
        let mut tree = unit.entries_tree(Some(off))?;
        let root = tree.root()?;
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            if e.tag() != DW_TAG_formal_parameter {
                continue;
            }
            let own = e
                .offset()
                .to_debug_info_offset(&unit.header)
                .map(|o| o.0 as u64);
            if !own.is_some_and(|o| self.is_tstate_param(o)) {
                continue;
            }
            let Some(loc) = e.attr_value(DW_AT_location) else {
                return Ok(None);
            };
            if let gimli::AttributeValue::Exprloc(expr) = loc {
                return Ok(register_of(expr, unit.encoding()));
            }
            let Some(mut list) = self.dwarf.attr_locations(&unit, loc)? else {
                return Ok(None);
            };
            while let Some(entry) = list.next()? {
                if entry.range.begin <= pc && pc < entry.range.end {
                    return Ok(register_of(entry.data, unit.encoding()));
                }
            }
            return Ok(None);
        }
        Ok(None)
    }
}

fn register_of(expr: gimli::Expression<R<'_>>, enc: gimli::Encoding) -> Option<PerfReg> {
    let mut ops = expr.operations(enc);
    let first = ops.next().ok()??;
    if ops.next().ok()?.is_some() {
        return None;
    }
    match first {
        gimli::Operation::Register { register } => PerfReg::from_dwarf(register.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lto_names() {
        assert!(matches_function("take_gil", "take_gil"));
        assert!(matches_function("take_gil.lto_priv.0", "take_gil"));
        assert!(matches_function("drop_gil.constprop.0", "drop_gil"));
        assert!(matches_function("drop_gil.isra.0", "drop_gil"));
        assert!(!matches_function("drop_gil.constprop.0.cold", "drop_gil"));
        assert!(!matches_function("take_gil.lto_priv.0.cold", "take_gil"));
        assert!(!matches_function("take_gil.part.0", "take_gil"));
        assert!(!matches_function("take_gil.cold.1", "take_gil"));
        assert!(!matches_function("drop_gil_impl.lto_priv.0", "drop_gil"));
        assert!(matches_function(
            "drop_gil_impl.lto_priv.0",
            "drop_gil_impl"
        ));
        assert!(!matches_function("take_gilx", "take_gil"));
    }

    #[test]
    fn offsets_from_program_headers() {
        // A non-PIE executable: text at 0x401000 from file offset 0x1000; data not executable.
        let segs = [
            (0x400000, 0x1000, 0, false),
            (0x401000, 0x5000, 0x1000, true),
            (0x407000, 0x1000, 0x6000, false),
        ];
        assert_eq!(vaddr_to_offset(&segs, 0x401234), Some(0x1234));
        assert_eq!(vaddr_to_offset(&segs, 0x407010), None);
        assert_eq!(vaddr_to_offset(&segs, 0x300000), None);
        // Shared object whose text segment's offset differs from its vaddr.
        let segs = [(0x20000, 0x100000, 0x1f000, true)];
        assert_eq!(vaddr_to_offset(&segs, 0x20010), Some(0x1f010));
    }

    #[test]
    fn debug_package_names() {
        assert_eq!(debug_package_for("python3.14-minimal"), "python3.14-dbg");
        assert_eq!(debug_package_for("libpython3.14"), "python3.14-dbg");
        assert_eq!(debug_package_for("libpython3.13-minimal"), "python3.13-dbg");
        assert_eq!(debug_package_for("foo"), "foo-dbgsym");
    }

    #[test]
    fn probes_go_past_endbr64_before_a_push_only() {
        let f = |code: &[u8]| {
            let mut d = vec![0x90u8; 8];
            d.extend_from_slice(code);
            d.extend_from_slice(&[0x90; 8]);
            past_endbr64(&d, 8)
        };
        assert_eq!(
            f(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48]),
            12,
            "endbr64; push %rbp"
        );
        assert_eq!(
            f(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x57]),
            12,
            "endbr64; push %r15"
        );
        assert_eq!(
            f(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x89]),
            8,
            "endbr64; mov: stays"
        );
        assert_eq!(
            f(&[0x41, 0x57, 0x41, 0x56, 0x41, 0x55]),
            8,
            "no endbr64: stays"
        );
        let steps = |code: &[u8]| kernel_steps(code, 0);
        assert!(!steps(&[0x55, 0x48]), "push %rbp is emulated");
        assert!(!steps(&[0x41, 0x57]), "push %r15 is emulated");
        assert!(!steps(&[0xe8, 0x00]), "call rel32 is emulated");
        assert!(steps(&[0x48, 0x8b]), "a mov is stepped");
        assert!(steps(&[0xf3, 0x0f]), "endbr64 is stepped");
        assert!(steps(&[0x55]), "cut short: assume stepped");
        // At the end of the file: nothing to look at, stays.
        assert_eq!(past_endbr64(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55], 0), 0);
        assert_eq!(past_endbr64(&[], u64::MAX), u64::MAX);
    }

    #[test]
    fn crc() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn dwarf_registers() {
        assert_eq!(PerfReg::from_dwarf(5), Some(PerfReg::RDI));
        assert_eq!(PerfReg::from_dwarf(4), Some(PerfReg::RSI));
        assert_eq!(PerfReg::from_dwarf(1), Some(PerfReg::RDX));
        assert_eq!(PerfReg::from_dwarf(3).map(PerfReg::name), Some("rbx"));
        assert_eq!(PerfReg::from_dwarf(12).map(PerfReg::name), Some("r12"));
        assert_eq!(PerfReg::from_dwarf(7), None);
    }
}
