//! Metadata in memory: inodes and the extent maps from file blocks to image blocks.
pub mod extent_map;
pub mod inode;
