//! `gilscope dump` output: human text grouped by interpreter, or JSON.
