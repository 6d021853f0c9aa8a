//! The daemon's effects at the edge: scanning the workloads directory,
//! telling systemd how it is, keeping workloads' logs.

pub mod event_loop;
pub mod logs;
pub mod notify;
pub mod records;
pub mod scan;
pub mod status;
pub mod supervisor;
