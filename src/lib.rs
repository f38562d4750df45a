//! pinfs: a FUSE filesystem on an emulated persistent-memory image, built to make long-term
//! block pinning (RDMA, VFIO) on DAX-like storage real and testable.
//!
//! Module map: [`image`] (mapping, superblocks, persistence ordering), [`journal`] and
//! [`checkpoint`] (crash consistency), [`record`] (the metadata changes), [`inode`] and
//! [`extent_map`] (metadata), [`fs`] (POSIX operations, no FUSE), [`lease`] (layout leases), [`fuse`] (the thin fuser
//! adapter), [`options`] (mount options), [`fsck`] (checking and repair), [`daemon`] (mounting
//! and the daemon's life).

pub mod checkpoint;
pub mod client;
pub mod codec;
pub mod daemon;
pub mod dax;
pub mod demo;
pub mod error;
pub mod extent_map;
pub mod fs;
pub mod fsck;
pub mod fuse;
pub mod fuzz;
pub mod fuzz_holder;
pub mod fuzz_image;
pub mod fuzz_ledger;
pub mod fuzz_mount;
pub mod fuzz_serial;
pub mod fuzz_targets;
pub mod holder_cmd;
pub mod holders;
pub mod image;
pub mod inode;
pub mod journal;
pub mod kmsg;
pub mod lease;
pub mod options;
pub mod output;
pub mod protocol;
pub mod record;
pub mod remount;
pub mod signals;
pub mod status;
pub mod sync;
