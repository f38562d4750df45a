//! A file's extent map: which image blocks back which file blocks.
//!
//! Invariant: mappings are non-empty and never overlap in file blocks; two mappings that are
//! adjacent in both file and image blocks are merged, so the map is as small as the layout.

use std::collections::BTreeMap;

use pinfs_allocator::Extent;

/// One mapping: `len` file blocks from `file_block` live at image blocks from `image_block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First file block.
    pub file_block: u64,
    /// First image block.
    pub image_block: u64,
    /// Number of blocks.
    pub len: u64,
}

/// The extent map of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentMap {
    map: BTreeMap<u64, (u64, u64)>,
    blocks: u64,
}

impl ExtentMap {
    /// Mapped blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// All mappings in file order.
    pub fn iter(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.map.iter().map(|(&f, &(i, l))| Mapping {
            file_block: f,
            image_block: i,
            len: l,
        })
    }

    /// The mapping that covers `file_block`, if any.
    pub fn lookup(&self, file_block: u64) -> Option<Mapping> {
        let (&f, &(i, l)) = self.map.range(..=file_block).next_back()?;
        (f + l > file_block).then_some(Mapping {
            file_block: f,
            image_block: i,
            len: l,
        })
    }

    /// The first mapping that ends after `file_block`.
    pub fn next_mapping(&self, file_block: u64) -> Option<Mapping> {
        self.lookup(file_block).or_else(|| {
            self.map
                .range(file_block..)
                .next()
                .map(|(&f, &(i, l))| Mapping {
                    file_block: f,
                    image_block: i,
                    len: l,
                })
        })
    }

    /// Maps `len` file blocks from `file_block` to image blocks from `image_block`. The file
    /// range must be unmapped.
    pub fn insert(&mut self, file_block: u64, image_block: u64, len: u64) {
        debug_assert!(len > 0);
        debug_assert!(
            self.mappings_in(file_block, len).is_empty(),
            "file range already mapped"
        );
        let (mut f, mut i, mut l) = (file_block, image_block, len);
        if let Some((&pf, &(pi, pl))) = self.map.range(..f).next_back() {
            if pf + pl == f && pi + pl == i {
                self.map.remove(&pf);
                f = pf;
                i = pi;
                l += pl;
            }
        }
        if let Some(&(ni, nl)) = self.map.get(&(f + l)) {
            if i + l == ni {
                self.map.remove(&(f + l));
                l += nl;
            }
        }
        self.map.insert(f, (i, l));
        self.blocks += len;
    }

    /// The mappings that overlap `file_block..file_block+len`, clipped to it.
    pub fn mappings_in(&self, file_block: u64, len: u64) -> Vec<Mapping> {
        let end = file_block.saturating_add(len);
        let mut out = Vec::new();
        let mut cur = file_block;
        while cur < end {
            let Some(m) = self.next_mapping(cur) else {
                break;
            };
            if m.file_block >= end {
                break;
            }
            let s = m.file_block.max(file_block);
            let e = (m.file_block + m.len).min(end);
            out.push(Mapping {
                file_block: s,
                image_block: m.image_block + (s - m.file_block),
                len: e - s,
            });
            cur = m.file_block + m.len;
        }
        out
    }

    /// Unmaps `file_block..file_block+len` and returns the image extents it covered.
    pub fn remove(&mut self, file_block: u64, len: u64) -> Vec<Extent> {
        let end = file_block.saturating_add(len);
        let hits = self.mappings_in(file_block, len);
        let mut freed = Vec::with_capacity(hits.len());
        for h in hits {
            let whole = self.lookup(h.file_block).expect("mapping just found");
            self.map.remove(&whole.file_block);
            if whole.file_block < h.file_block {
                self.map.insert(
                    whole.file_block,
                    (whole.image_block, h.file_block - whole.file_block),
                );
            }
            let whole_end = whole.file_block + whole.len;
            if whole_end > end {
                let skip = end - whole.file_block;
                self.map
                    .insert(end, (whole.image_block + skip, whole_end - end));
            }
            self.blocks -= h.len;
            freed.push(Extent {
                start: h.image_block,
                len: h.len,
            });
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut m = ExtentMap::default();
        m.insert(0, 100, 4);
        m.insert(4, 104, 4);
        assert_eq!(m.iter().count(), 1, "contiguous mappings merge");
        m.insert(10, 50, 2);
        assert_eq!(m.blocks(), 10);
        let freed = m.remove(2, 9);
        assert_eq!(
            freed,
            vec![Extent { start: 102, len: 6 }, Extent { start: 50, len: 1 }]
        );
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![
                Mapping {
                    file_block: 0,
                    image_block: 100,
                    len: 2
                },
                Mapping {
                    file_block: 11,
                    image_block: 51,
                    len: 1
                }
            ]
        );
        assert_eq!(m.blocks(), 3);
        assert_eq!(m.next_mapping(3).map(|x| x.file_block), Some(11));
        assert!(m.lookup(5).is_none());
    }
}
