//! The holder side of pinfs: the protocol spoken over a mount's socket and the client that
//! pin holders use. Nothing here needs fuser or the image mapping.
pub mod client;
pub mod protocol;
