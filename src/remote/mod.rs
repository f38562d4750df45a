//! Exported pins: a holder's soft NIC ([`nic`]) that serves remote peers one-sided reads,
//! writes and compare-and-swaps straight into a pinned range's mapping, the wire protocol
//! they speak ([`protocol`]), and the peer's side ([`peer`]). Client-side like
//! [`crate::holder`]: it builds without the `daemon` feature.
//!
//! The daemon is not in the data path. The holder tells it what it exported and which
//! peers hold references (`export` and `peers` of [`crate::holder::protocol`]), so that
//! `pinfs status` shows them per pin; when a lease breaks, the holder recalls the key from
//! every peer, waits for their acks and only then unpins (see [`nic`]).
pub mod nic;
pub mod peer;
pub mod protocol;

pub use nic::{Nic, NicError, NicOptions, PeerRef, PeerState, RecallOutcome};
pub use peer::{Peer, RemoteError};
