// Exposes the cfgs of the target interpreter (Py_3_12, Py_3_13, Py_GIL_DISABLED, ...) to
// src/lib.rs; the interpreter is the one in PYO3_PYTHON (scripts/build-gilext sets it).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
