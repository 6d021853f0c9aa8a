//! The sandbox, built by paddock itself with clone(2), mount(2) and the
//! new mount API: user, mount, pid, uts, ipc, cgroup and network
//! namespaces; a pivot_root'ed root; dropped capabilities; seccomp;
//! rlimits and cgroup limits; and a small init as PID 1.

pub mod cgroup;
mod channel;
mod clone;
mod config;
mod exec;
pub mod init;
pub mod process;
mod rootfs;
mod seccomp;
mod source;
mod spawn;
mod sys;

pub use crate::model::Exit;
pub use source::SourceError;
pub use spawn::{Cloned, InitMode, Pending, Sandbox, SpawnError, SpawnRequest, begin, raise_nofile_limit, spawn};
