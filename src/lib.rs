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
//! | [`remote`] | exported pins: the soft NIC in a holder, its wire protocol, remote peers |
//! | [`daemon`] | mounting, the fuser adapter, the holder server, remount, signals |
//! | [`fuzzer`] | the truncate-vs-pin fuzzer: serial core runs and live mounts |
//! | [`trace`] | the lease timeline: Chrome trace-event JSON and its SVG drawing |
//!
//! [`sync`] is the one place locks come from; [`error`] maps failures to errnos.
//!
//! Only [`holder`], [`remote`] and [`sync`] are built without the default feature `daemon`: a program that is just a pin
//! holder depends on `pinfs` with `default-features = false` and gets no fuser, no memmap2
//! and no filesystem in its dependency tree.

#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod demo;
#[cfg(feature = "daemon")]
pub mod error;
#[cfg(feature = "daemon")]
pub mod format;
#[cfg(feature = "daemon")]
pub mod fs;
#[cfg(feature = "daemon")]
pub mod fsck;
#[cfg(feature = "daemon")]
pub mod fuzzer;
pub mod holder;
#[cfg(feature = "daemon")]
pub mod holder_cmd;
#[cfg(feature = "daemon")]
pub mod lease;
#[cfg(feature = "daemon")]
pub mod log;
#[cfg(feature = "daemon")]
pub mod meta;
#[cfg(feature = "daemon")]
pub mod output;
pub mod remote;
#[cfg(feature = "daemon")]
pub mod store;
pub mod sync;
#[cfg(feature = "daemon")]
pub mod trace;
