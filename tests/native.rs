//! The native unwinder (src/reader/native.rs) on a pybind11 module whose C++ function loops on
//! `std::chrono::steady_clock::now()` with the GIL held (samples/realext, built per host
//! interpreter from PyPI's pybind11): each iteration goes from `heavy::chrono_loop` through
//! its PLT stub into libstdc++/libc and the vDSO, so stacks taken at random moments land in
//! all of them. The ground truth is the program's own structure: every stack that reaches the
//! module must pass `heavy::chrono_loop(long)`, whichever of those it was stopped in, and none
//! may name a PLT stub after the symbol before it (`_init`).

mod common;

use std::time::{Duration, Instant};

use anyhow::ensure;
use common::*;
use gilscope::reader::native::NativeUnwinder;

#[test]
fn chrono_loop_is_unwound_from_every_leaf() {
    if skip_unless_possible("chrono_loop_is_unwound_from_every_leaf") {
        return;
    }
    for_each_python(
        "chrono_loop_is_unwound_from_every_leaf",
        "a host CPython that builds samples/realext (pybind11 from PyPI)",
        |py| py.chroot.is_none() && !py.free_threaded,
        |py| {
            let _g = serial();
            let dir = build_realext(py)?;
            let src = format!(
                "import json, os, sys\nsys.path.insert(0, {dir:?})\nimport pbext\nprint(json.dumps({{'pid': os.getpid()}}), flush=True)\npbext.chrono_spin(20000)\n",
                dir = dir.display().to_string()
            );
            let target = Target::start_code(py, &src, "chrono_spin")?;
            let pid = target.ready.pid;
            let mut unwinder = NativeUnwinder::new(pid)?;
            let (mut in_module, mut through_plt, mut leaves) =
                (0, 0, std::collections::BTreeMap::new());
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut taken = 0;
            while Instant::now() < deadline && taken < 400 {
                std::thread::sleep(Duration::from_millis(3));
                let frames = unwinder.stack(pid)?;
                taken += 1;
                let Some(first) = frames.iter().position(|f| f.object.contains("pbext")) else {
                    continue;
                };
                in_module += 1;
                let names: Vec<String> = frames
                    .iter()
                    .map(|f| f.symbol.clone().unwrap_or_else(|| format!("{:#x}", f.addr)))
                    .collect();
                ensure!(
                    !names.iter().any(|n| n == "_init"),
                    "a frame named _init (a PLT stub misnamed): {names:?}"
                );
                ensure!(
                    frames[first..]
                        .iter()
                        .any(|f| f.symbol.as_deref() == Some("heavy::chrono_loop(long)")),
                    "stack reaches pbext without heavy::chrono_loop(long): {names:?}"
                );
                if frames[first].symbol.as_deref() == Some("[plt]") {
                    through_plt += 1;
                }
                let leaf = frames.first().map_or(String::new(), |f| {
                    f.object.rsplit('/').next().unwrap_or_default().to_string()
                });
                *leaves.entry(leaf).or_insert(0u32) += 1;
            }
            ensure!(
                in_module >= taken / 2,
                "only {in_module} of {taken} stacks reached pbext"
            );
            println!(
                "  {}: {in_module} of {taken} stacks through heavy::chrono_loop; {through_plt} \
                 stopped in its PLT stub; leaves by object: {leaves:?}",
                py.name
            );
            drop(target);
            Ok(())
        },
    );
}
