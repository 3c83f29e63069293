// A pybind11 extension with known GIL behaviour, for `gilscope check`'s tests on real
// toolchains. Built per interpreter by scripts/build-realext.
//
//   chrono_spin(ms)   holds the GIL, looping on std::chrono::steady_clock::now() — each call
//                     goes through the vDSO's clock_gettime, as real extensions' timing does
//   crunch(ms)        holds the GIL in a plain arithmetic loop (no library calls)
//   release_spin(ms)  the same chrono loop inside py::gil_scoped_release
//
// `pbext` declares per-interpreter-GIL support and that it needs no GIL (pybind11 >= 3.0);
// `pbext_legacy` declares neither: an own-GIL sub-interpreter refuses it, and importing it
// re-enables a free-threaded build's GIL.
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>

namespace py = pybind11;

namespace heavy {

// noinline: the frame stays on the stack with its own symbol, as real code's would.
__attribute__((noinline)) std::uint64_t chrono_loop(long ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    std::uint64_t turns = 0;
    while (std::chrono::steady_clock::now() < end) {
        ++turns;
    }
    return turns;
}

__attribute__((noinline)) std::uint64_t crunch(long ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    volatile std::uint64_t acc = 1;
    std::uint64_t turns = 0;
    while (true) {
        for (int i = 0; i < 200000; ++i) {
            acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        }
        ++turns;
        if (std::chrono::steady_clock::now() >= end) {
            break;
        }
    }
    return turns + (acc & 1);
}

}  // namespace heavy

static void define(py::module_ &m) {
    m.def("chrono_spin", [](long ms) { return heavy::chrono_loop(ms); });
    m.def("crunch", [](long ms) { return heavy::crunch(ms); });
    m.def("release_spin", [](long ms) {
        py::gil_scoped_release release;
        return heavy::chrono_loop(ms);
    });
}

// One shared object, two modules: installed as pbext$SUFFIX and as pbext_legacy$SUFFIX, the
// import finds PyInit_pbext or PyInit_pbext_legacy by the file's name.
PYBIND11_MODULE(pbext, m, py::mod_gil_not_used(), py::multiple_interpreters::per_interpreter_gil()) {
    define(m);
}

PYBIND11_MODULE(pbext_legacy, m) {
    define(m);
}
