//! paddock: runs a directory of TOML workload manifests in user-namespace
//! sandboxes, validated by JSON Schema policies.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod export;
pub mod fsutil;
pub mod idmap;
pub mod journal;
pub mod logline;
pub mod model;
pub mod network;
pub mod protocol;
pub mod reconcile;
pub mod sandbox;
pub mod text;
pub mod timefmt;
pub mod validate;

// musl builds (the release binary: packaging/build-release) only: musl's
// allocator maps and unmaps memory for most allocations (Cargo.toml). Here
// rather than in main.rs, so that the tests built for musl use it too.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;
