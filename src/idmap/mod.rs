//! Identity mapping: the remap user's subordinate ranges, and the slice
//! of them that each workload's root is mapped to.

mod alloc;
mod subid;
mod users;

pub use alloc::{AllocError, Allocations, Cutting, Isolation, RunHold, RunProcess, Slice, slice_count};
pub use subid::{IdRange, SubIdEntry, SubIdParseError, free_start, parse as parse_subid, ranges_of};
pub use users::{
    AccountError, AccountFile, AccountFiles, DEFAULT_REMAP_USER, NEW_RANGE_SIZE, NamedBy, RemapRanges,
    account_overlaps, read_remap_ranges, remap_ranges,
};
