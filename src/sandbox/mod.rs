//! The sandbox, built by paddock itself with clone(2), mount(2) and the
//! new mount API: user, mount, pid, uts, ipc, cgroup and network
//! namespaces; a pivot_root'ed root; dropped capabilities; seccomp;
//! rlimits and cgroup limits; and a small init as PID 1.

pub mod cgroup;
mod channel;
mod clone;
pub mod config;
pub mod enter;
mod exec;
pub mod init;
mod keeper;
pub mod netns;
pub mod process;
mod rootfs;
mod running;
pub mod seccomp;
mod source;
mod spawn;
mod sys;
pub mod zygote;

pub use crate::model::Exit;
pub use channel::ChannelError;
pub use config::{InitCommand, InitReport};
pub use running::{AdoptError, Sandbox, adopt, end_of};
pub use source::SourceError;
pub use spawn::{Cloned, InitMode, Leftover, Pending, SpawnError, SpawnRequest, begin, raise_nofile_limit, spawn};
pub use sys::{pidfd_open, pidfd_send_signal};
