//! The holder side of pinfs: the protocol spoken over a mount's socket and the client that
//! pin holders use. Nothing here needs fuser or the image mapping.
#[cfg(feature = "capi")]
pub mod capi;
pub mod client;
pub mod mounts;
pub mod protocol;
