//! pinfs: a FUSE filesystem on an emulated persistent-memory image, built to make long-term
//! block pinning (RDMA, VFIO) on DAX-like storage real and testable.
//!
//! The folders are the architecture (the README's layout table says the same):
//!
//! | module | owns |
//! |---|---|
//! | [`store`] | the image mapping, superblocks, host durability, holders' DAX windows |
//! | [`mod@format`] | the byte codec and the metadata records |
//! | [`meta`] | inodes and extent maps |
//! | [`log`] | the journal and checkpoints (crash consistency) |
//! | [`fs`] | the filesystem core: every POSIX operation, pins, space, status (no FUSE) |
//! | [`lease`] | the layout-lease state machine and its events |
//! | [`fsck`] | checking and repair of an image |
//! | [`holder`] | the holder protocol and client (no fuser, no image mapping) |
//! | [`daemon`] | mounting, the fuser adapter, the holder server, remount, signals |
//! | [`fuzzer`] | the truncate-vs-pin fuzzer: serial core runs and live mounts |
//!
//! [`sync`] is the one place locks come from; [`error`] maps failures to errnos.

pub mod daemon;
pub mod demo;
pub mod error;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod fuzzer;
pub mod holder;
pub mod holder_cmd;
pub mod lease;
pub mod log;
pub mod meta;
pub mod output;
pub mod store;
pub mod sync;
