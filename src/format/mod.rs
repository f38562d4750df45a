//! The on-image format: the byte codec every structure is written with, and the metadata
//! records that journal entries and checkpoints are made of.
pub mod codec;
pub mod record;
