//! The daemon: the supervisor's shell around the pure core, and its
//! effects at the edge (sandboxes, the state directory, the watcher, the
//! control socket, systemd).

pub mod event_loop;
mod exec;
pub mod executor;
pub mod kept;
mod listener;
pub mod notify;
mod probe;
pub mod records;
pub mod scan;
pub mod server;
pub mod signals;
pub mod store;
pub mod supervisor;
pub mod upgrade;
mod view;
pub mod watch;
mod workers;

pub use supervisor::STARTS_PER_PASS;
