//! The inode table: inodes behind their own locks in shards, and the set of inodes one
//! operation holds for writing.

use super::*;

/// An inode and its kernel reference counts.
#[derive(Debug)]
pub struct Cell {
    pub(super) inode: RwLock<Inode>,
    pub(super) lookups: AtomicU64,
    pub(super) opens: AtomicU32,
    /// The kernel's page cache may hold pages of this inode: it read some for a mapping (file
    /// data is otherwise direct I/O), and has not forgotten the inode since. A direct write
    /// to it is stored into those pages too ([`Fs::store_then`]). Kept here, not in a set of
    /// the filesystem's, so that the data path takes no global lock for it.
    pub(super) page_cached: AtomicBool,
    /// A file made with no name ([`Fs::tmpfile`], `O_TMPFILE` without `O_EXCL`) that may
    /// still get its first name: the one inode with no links that [`Fs::link`] takes (the
    /// kernel's `I_LINKABLE`). Cleared by that link; never persisted (after a crash the file
    /// is an orphan, freed at mount).
    pub(super) linkable: AtomicBool,
}

impl Cell {
    #[track_caller]
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Inode> {
        self.inode.read().unwrap_or_else(|e| e.into_inner())
    }
    #[track_caller]
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Inode> {
        self.inode.write().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) const SHARDS: usize = 64;

/// The inode table, sharded so that lookups of different inodes do not contend.
pub(super) struct Table {
    pub(super) shards: Vec<RwLock<HashMap<u64, Arc<Cell>>>>,
}

impl Table {
    pub(super) fn new(inodes: HashMap<u64, Inode>) -> Table {
        let t = Table {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        };
        for (_, i) in inodes {
            t.insert(i);
        }
        t
    }
    pub(super) fn shard(&self, ino: u64) -> &RwLock<HashMap<u64, Arc<Cell>>> {
        &self.shards[(ino as usize) % SHARDS]
    }
    pub(super) fn get(&self, ino: u64) -> FsResult<Arc<Cell>> {
        self.shard(ino)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }
    pub(super) fn insert(&self, i: Inode) -> Arc<Cell> {
        let cell = Arc::new(Cell {
            inode: RwLock::ranked(Rank::Inode, i),
            lookups: AtomicU64::new(0),
            opens: AtomicU32::new(0),
            page_cached: AtomicBool::new(false),
            linkable: AtomicBool::new(false),
        });
        let ino = cell.read().ino;
        self.shard(ino)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino, cell.clone());
        cell
    }
    pub(super) fn remove(&self, ino: u64) {
        self.shard(ino)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
    }
    pub(super) fn all(&self) -> Vec<Arc<Cell>> {
        let mut v: Vec<(u64, Arc<Cell>)> = Vec::new();
        for s in &self.shards {
            v.extend(
                s.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(k, c)| (*k, c.clone())),
            );
        }
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, c)| c).collect()
    }
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The inodes one operation holds write locks on.
pub(super) struct Held<'a> {
    pub(super) guards: Vec<RwLockWriteGuard<'a, Inode>>,
    pub(super) added: Vec<Inode>,
    pub(super) removed: Vec<u64>,
}

impl<'a> Held<'a> {
    /// Write-locks `cells` (duplicates once) in address order. Any fixed order would do:
    /// operations that lock several inodes all hold the namespace lock.
    pub(super) fn lock(cells: &'a [Arc<Cell>]) -> Held<'a> {
        let mut order: Vec<&'a Arc<Cell>> = cells.iter().collect();
        order.sort_by_key(|c| Arc::as_ptr(c) as usize);
        order.dedup_by_key(|c| Arc::as_ptr(c) as usize);
        let mut guards: Vec<RwLockWriteGuard<'a, Inode>> =
            order.into_iter().map(|c| c.write()).collect();
        guards.sort_by_key(|g| g.ino);
        Held {
            guards,
            added: Vec::new(),
            removed: Vec::new(),
        }
    }
    pub(super) fn get(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.guards
            .iter_mut()
            .find(|g| g.ino == ino)
            .map(|g| &mut **g)
            .ok_or(FsError::NotFound)
    }
}

impl InodeSet for Held<'_> {
    fn inode(&mut self, ino: u64) -> FsResult<&mut Inode> {
        if let Some(pos) = self.added.iter().position(|i| i.ino == ino) {
            return Ok(&mut self.added[pos]);
        }
        self.get(ino)
            .map_err(|_| FsError::Corrupt(format!("inode {ino} changed without its lock")))
    }
    fn add(&mut self, inode: Inode) {
        self.added.push(inode);
    }
    fn remove(&mut self, ino: u64) -> FsResult<Inode> {
        let i = self.inode(ino)?;
        let taken = i.clone();
        i.extents = Default::default();
        self.removed.push(ino);
        Ok(taken)
    }
}
