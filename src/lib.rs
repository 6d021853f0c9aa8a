//! paddock: runs a directory of TOML workload manifests in user-namespace
//! sandboxes, validated by JSON Schema policies.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod export;
pub mod fsutil;
pub mod idmap;
pub mod logline;
pub mod model;
pub mod network;
pub mod protocol;
pub mod reconcile;
pub mod sandbox;
pub mod text;
pub mod timefmt;
pub mod validate;
