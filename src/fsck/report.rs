//! What a check found: the report, its `fsck --json` form, and the document for an image
//! that could not be checked at all.

use super::*;

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems found.
    pub errors: Vec<String>,
    /// Problems fixed (with `--repair`).
    pub repaired: Vec<String>,
    /// Inodes in the filesystem.
    pub inodes: usize,
    /// Blocks owned by files.
    pub file_blocks: u64,
    /// Journal transactions replayed.
    pub replayed: usize,
    /// Inodes without links that were still open or referenced when the daemon stopped
    /// (normal after a crash: mount frees them, as does `--repair`; not an error).
    pub orphans: Vec<u64>,
    /// The errors (among `errors`) that mount fixes by itself: a stored free list that
    /// differs from ownership, which mount never uses (it rebuilds the allocator from what
    /// owns blocks). Mount refuses an image for any other error.
    pub fixed_by_mount: Vec<String>,
}

impl Report {
    /// Errors that make mount refuse the image.
    pub fn refused_by_mount(&self) -> Vec<&String> {
        self.errors
            .iter()
            .filter(|e| !self.fixed_by_mount.contains(e))
            .collect()
    }
}

impl Report {
    /// e2fsck-style exit code.
    pub fn exit_code(&self) -> i32 {
        if self.errors.len() > self.repaired.len() {
            4
        } else if !self.repaired.is_empty() {
            1
        } else {
            0
        }
    }

    /// The report as one JSON object (`fsck --json`).
    pub fn to_json(&self, image: &Path) -> String {
        crate::fs::status::to_json(&ReportJson {
            image: image.display().to_string(),
            exit_code: self.exit_code(),
            clean: self.errors.is_empty(),
            inodes: self.inodes,
            file_blocks: self.file_blocks,
            journal_replayed: self.replayed,
            orphans: self.orphans.len(),
            errors: &self.errors,
            repaired: &self.repaired,
        })
    }
}

/// `fsck --json` of an image that could not be checked at all (exit code 8).
pub fn failure_json(image: &Path, error: &str) -> String {
    #[derive(serde::Serialize)]
    struct FailureJson<'a> {
        image: String,
        exit_code: i32,
        error: &'a str,
    }
    crate::fs::status::to_json(&FailureJson {
        image: image.display().to_string(),
        exit_code: 8,
        error,
    })
}

/// `fsck --json`: the report in the form scripts read.
#[derive(serde::Serialize)]
struct ReportJson<'a> {
    image: String,
    exit_code: i32,
    clean: bool,
    inodes: usize,
    file_blocks: u64,
    journal_replayed: usize,
    /// How many (the list is in the text output).
    orphans: usize,
    errors: &'a [String],
    repaired: &'a [String],
}
