//! Crash consistency: the metadata journal and the checkpoints that let it be trimmed.
pub mod checkpoint;
pub mod journal;
