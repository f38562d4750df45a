//! The store: the image file that stands in for persistent memory (its mapping, superblocks,
//! host durability) and the DAX windows through which holders reach their pinned blocks.
pub mod image;
pub mod superblock;
pub mod windows;
