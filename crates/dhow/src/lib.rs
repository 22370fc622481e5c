//! The `dhow` command line as a library (the binary in `main.rs` is its clap front): `serve`
//! runs a node and its API, `commands` are the zed-like client commands, `compact` compacts a
//! stopped node's data dir, `validate` runs zed validation files in-process or against a
//! server.

pub mod commands;
pub mod compact;
pub mod serve;
pub mod validate;
