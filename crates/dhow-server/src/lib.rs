//! Dhow's public gRPC API: the `dhow.v1` services over a [`dhow_node::Node`], consistency
//! tokens and their resolution, cursors, the one error→status map, the API's configuration
//! (and the loader of `dhow serve`'s settings), health and reflection.
//!
//! Start with [`serve`]: it takes any `Node` (the Raft node in production, `MemNode` in
//! tests), a [`Config`], a bound listener and a shutdown future.

pub mod auth;
pub mod calllog;
pub mod checkcache;
pub mod checks;
pub mod config;
pub mod consistency;
pub mod cursor;
pub mod deadline;
pub mod delegation;
pub mod error;
pub mod malformed;
pub mod metrics;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod token;

pub use config::{Config, ConfigError, ConfigOverrides, LogFormat};
pub use error::{reason, ApiError, DOMAIN};
pub use server::{serve, ServerError};
