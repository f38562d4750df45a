//! What holders say they exported to remote peers (the `export` and `peers` requests of the
//! holder protocol), kept for `status`: per pin, the soft NIC's address, the key and the
//! peers holding references. The daemon is not in the data path and cannot check what a
//! holder says about its peers; it only bounds it: one entry per pin the lease manager
//! still has (entries of pins that went are dropped at the next report and never shown),
//! at most [`MAX_REMOTE_PEERS`] peers kept per entry, each a parsed address and a state.
//! A report's changes (a peer's new state, a peer gone) go to the mount's watchers as
//! `event remote` (see [`crate::holder::protocol`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::error::{FsError, FsResult};
use crate::fs::{lock, Fs};
use crate::holder::protocol::{RemotePeer, RemoteState, MAX_REMOTE_PEERS};
use crate::lease::{HolderId, LeaseError, PinId};

/// One pin's export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The holder that exported it.
    pub holder: HolderId,
    /// The region's key.
    pub rkey: u64,
    /// The soft NIC's address.
    pub addr: SocketAddr,
    /// The peers holding references, as last reported (at most [`MAX_REMOTE_PEERS`]).
    pub peers: Vec<RemotePeer>,
    /// How many peers the holder said it has.
    pub total: u64,
}

/// The exports of the mount, by pin.
#[derive(Debug, Default)]
pub struct Exports {
    by_pin: HashMap<PinId, Export>,
}

impl Fs {
    /// Is `pin` a pin of `holder`'s?
    fn own_pin(&self, holder: HolderId, pin: PinId) -> FsResult<()> {
        match self.leases().pin_holder(pin) {
            Some(h) if h == holder => Ok(()),
            _ => Err(FsError::Lease(LeaseError::NoSuchPin)),
        }
    }

    /// Records that `holder` exported its pin `pin` as region `rkey` on `addr` (replacing an
    /// earlier export of it, peers and all).
    pub fn export_pin(
        &self,
        holder: HolderId,
        pin: PinId,
        rkey: u64,
        addr: SocketAddr,
    ) -> FsResult<()> {
        self.own_pin(holder, pin)?;
        let live = self.leases().pin_ids();
        let mut ex = lock(&self.exports);
        ex.by_pin.retain(|p, _| live.contains(p));
        ex.by_pin.insert(
            pin,
            Export {
                holder,
                rkey,
                addr,
                peers: Vec::new(),
                total: 0,
            },
        );
        Ok(())
    }

    /// Records the peers `holder` reports for its exported pin `pin`; returns what changed
    /// since its last report, for watchers: each kept peer whose state is new, and each
    /// peer of the last report that is not in this one (`gone`).
    pub fn report_peers(
        &self,
        holder: HolderId,
        pin: PinId,
        total: u64,
        peers: &[RemotePeer],
    ) -> FsResult<Vec<(SocketAddr, RemoteState)>> {
        self.own_pin(holder, pin)?;
        let mut ex = lock(&self.exports);
        let e = ex
            .by_pin
            .get_mut(&pin)
            .filter(|e| e.holder == holder)
            .ok_or(FsError::Lease(LeaseError::NoSuchPin))?;
        let kept = &peers[..peers.len().min(MAX_REMOTE_PEERS)];
        let mut changes: Vec<(SocketAddr, RemoteState)> = kept
            .iter()
            .filter(|p| !e.peers.contains(p))
            .map(|p| (p.addr, RemoteState::of(p.state)))
            .collect();
        changes.extend(
            e.peers
                .iter()
                .filter(|old| !kept.iter().any(|p| p.addr == old.addr))
                .map(|old| (old.addr, RemoteState::Gone)),
        );
        e.peers = kept.to_vec();
        e.total = total.max(e.peers.len() as u64);
        Ok(changes)
    }

    /// The exports of the pins in `live`.
    pub fn exports_of(&self, live: &std::collections::HashSet<PinId>) -> HashMap<PinId, Export> {
        lock(&self.exports)
            .by_pin
            .iter()
            .filter(|(p, _)| live.contains(p))
            .map(|(p, e)| (*p, e.clone()))
            .collect()
    }
}
