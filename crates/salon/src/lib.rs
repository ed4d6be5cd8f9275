//! The `salon` binary's own pieces that its end-to-end tests drive in process: the
//! server console (its command loop over any [`console::Terminal`]) and the
//! administrative commands it shares with `salon admin`. `main.rs` is the rest of the
//! binary.

pub mod admin;
pub mod console;
