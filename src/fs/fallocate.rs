//! fallocate (preallocate, punch hole, zero range: the latter two are breakers), seek for
//! data and holes, and copy_file_range.

use super::*;

impl Fs {
    /// fallocate(2) with the modes the kernel forwards. Punching and zeroing may wait for
    /// holders: not on a request thread (see [`Fs::try_fallocate`]).
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
    ) -> FsResult<()> {
        self.fallocate_as(ino, offset, len, mode, caller, handle, true)
    }

    /// [`Fs::fallocate`] that never waits for a holder: `None` when the punch or zeroing
    /// would have to (nothing was changed); the caller then runs [`Fs::fallocate`] where it
    /// may wait.
    pub fn try_fallocate(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
    ) -> Option<FsResult<()>> {
        unless_waiting(self.fallocate_as(ino, offset, len, mode, caller, handle, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn fallocate_as(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
        wait: bool,
    ) -> FsResult<()> {
        self.with_journal_room(|| {
            self.fallocate_as_once(ino, offset, len, mode, caller, handle, wait)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn fallocate_as_once(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
        wait: bool,
    ) -> FsResult<()> {
        use falloc::*;
        if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 {
            return Err(FsError::NotSupported);
        }
        if len == 0 {
            return Err(FsError::Invalid("fallocate of zero bytes"));
        }
        if mode & PUNCH_HOLE != 0 && (mode & KEEP_SIZE == 0 || mode & ZERO_RANGE != 0) {
            return Err(FsError::NotSupported);
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        self.writable()?;
        let change = if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            flags::Change::Data
        } else {
            flags::Change::Allocate
        };
        // Refused by the inode's flags before any lease is broken for it.
        flags::check(&self.table.get(ino)?.read(), change)?;
        // Punching and zeroing unmap the whole blocks inside the range: break leases first.
        let _break = if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            Some(self.break_layout(
                ino,
                offset.div_ceil(BLOCK_SIZE),
                end / BLOCK_SIZE,
                caller,
                handle,
                wait,
            )?)
        } else {
            None
        };
        if _break.is_some() {
            self.relocate_revoked(ino)?;
        }
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        match i.kind {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsDir),
            _ => return Err(FsError::NotSupported),
        }
        flags::check(i, change)?;
        let now = Time::now();
        let mut records = Vec::new();
        // Byte ranges zeroed in place once the transaction is in (a fallocate that fails
        // changes nothing), and the new times.
        let mut zero: Vec<(u64, u64)> = Vec::new();
        let mut grow_zero = (0, 0);
        let mut grown = None;
        let (mut mtime, mut ctime) = (i.mtime, i.ctime);
        if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            // Partial blocks at the edges are zeroed in place; whole blocks are unmapped.
            let whole_first = offset.div_ceil(BLOCK_SIZE);
            let whole_end = end / BLOCK_SIZE;
            if whole_first > whole_end {
                zero.push((offset, end));
            } else {
                zero.push((offset, (whole_first * BLOCK_SIZE).min(end)));
                zero.push(((whole_end * BLOCK_SIZE).max(offset), end));
                if whole_end > whole_first
                    && !i
                        .extents
                        .mappings_in(whole_first, whole_end - whole_first)
                        .is_empty()
                {
                    records.push(Record::Unmap {
                        ino,
                        file_block: whole_first,
                        len: whole_end - whole_first,
                    });
                }
            }
            (mtime, ctime) = (now, now);
        }
        if mode & PUNCH_HOLE == 0 {
            let first = offset / BLOCK_SIZE;
            let count = end.div_ceil(BLOCK_SIZE) - first;
            // The layout once the records so far (an Unmap of ZERO_RANGE) are applied.
            let mut probe = i.extents.clone();
            for r in &records {
                if let Record::Unmap {
                    file_block, len, ..
                } = r
                {
                    probe.remove(*file_block, *len);
                }
            }
            let maps = self.allocate_range(ino, &probe, first, count);
            let got: u64 = maps
                .iter()
                .filter_map(Record::as_mapping)
                .map(|m| m.len)
                .sum();
            let needed = count
                - probe
                    .mappings_in(first, count)
                    .iter()
                    .map(|m| m.len)
                    .sum::<u64>();
            if got < needed {
                self.unallocate(&maps);
                return Err(self.short_allocation());
            }
            records.extend(maps);
            if mode & KEEP_SIZE == 0 && end > i.size {
                grow_zero = (i.size, end.min(i.size.next_multiple_of(BLOCK_SIZE)));
                if self.defers_growth() {
                    grown = Some(end);
                } else {
                    records.push(Record::Grow { ino, size: end });
                }
                (mtime, ctime) = (now, now);
            }
        }
        let perm = kill_privs(i.perm, i.gid, caller);
        let privs_killed = perm != i.perm;
        records.push(Record::SetAttr {
            ino,
            perm,
            uid: i.uid,
            gid: i.gid,
            atime: i.atime,
            mtime,
            ctime,
        });
        // Past the old end of file, before the transaction and ordered before it (as a
        // truncate that grows the file does).
        self.zero_exposed(held.get(ino)?, grow_zero.0, grow_zero.1);
        self.commit_allocation(&mut held, &records)?;
        let i = held.get(ino)?;
        if let Some(size) = grown {
            i.size = size;
            self.note_growth(ino, size);
        }
        for (from, to) in zero {
            self.zero_bytes(i, from, to);
        }
        drop(held);
        drop(_gate);
        if privs_killed {
            // The kernel caches the mode: it must see the set-id bits go (xfstests 683-685).
            self.tell_kernel(Stale::Attributes(ino, None));
        }
        self.sync_if_flagged(ino)
    }

    /// `lseek` with `SEEK_DATA` (3) or `SEEK_HOLE` (4); other kinds are the kernel's.
    pub fn seek(&self, ino: u64, offset: u64, whence: i32) -> FsResult<u64> {
        self.is_up()?;
        let c = self.table.get(ino)?;
        let i = c.read();
        if offset >= i.size {
            return Err(FsError::NoSuchOffset);
        }
        let block = offset / BLOCK_SIZE;
        match whence {
            libc::SEEK_DATA => {
                let m = i.extents.next_mapping(block).ok_or(FsError::NoSuchOffset)?;
                let at = (m.file_block * BLOCK_SIZE).max(offset);
                if at >= i.size {
                    return Err(FsError::NoSuchOffset);
                }
                Ok(at)
            }
            libc::SEEK_HOLE => {
                let mut b = block;
                while let Some(m) = i.extents.lookup(b) {
                    b = m.file_block + m.len;
                }
                Ok((b * BLOCK_SIZE).max(offset).min(i.size))
            }
            _ => Err(FsError::Invalid("lseek whence")),
        }
    }

    /// copy_file_range(2): copies through the image, block-sized pieces at a time.
    pub fn copy_range(
        &self,
        src: u64,
        src_off: u64,
        dst: u64,
        dst_off: u64,
        len: u64,
        caller: Caller,
    ) -> FsResult<u64> {
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(1 << 20) as u32;
            let data = self.read(src, src_off + done, chunk)?;
            if data.is_empty() {
                break;
            }
            let n = self.write(dst, dst_off + done, &data, caller)?;
            done += n as u64;
            if (n as usize) < data.len() {
                break;
            }
        }
        Ok(done)
    }
}
