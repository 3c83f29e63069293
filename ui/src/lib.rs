//! gilscope's terminal UI. It renders from its own view types and has no
//! dependency on the OS side; the CLI maps the analysis model into it.
//! (The TUI itself lands with `gilscope top` / `gilscope view`.)
