//! Prints the journal records of an unmounted image that mention an inode (debugging aid):
//! `cargo run --example dump_journal IMAGE [INO]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pinfs::format::record::decode_transaction;
use pinfs::log::journal::Journal;
use pinfs::store::image::Image;

/// Prints the journal records of an unmounted image (those that mention INO, if given).
#[derive(Parser)]
struct Args {
    /// The image (not mounted).
    image: PathBuf,
    /// Only the records that mention this inode.
    ino: Option<u64>,
}

fn main() {
    let Args { image, ino } = Args::parse();
    let (img, sb) = Image::open(&image, Duration::from_secs(5)).expect("open");
    println!(
        "superblock: generation {} journal_seq {} checkpoint {} bytes",
        sb.generation, sb.journal_seq, sb.checkpoint_len
    );
    let (_, entries) = Journal::replay(&img, &sb);
    for (n, e) in entries.iter().enumerate() {
        for rec in decode_transaction(e).expect("decode") {
            let text = format!("{rec:?}");
            if ino.is_none_or(|i| {
                text.contains(&format!("ino: {i},"))
                    || text.contains(&format!("ino: {i} }}"))
                    || text.contains(&format!("parent: {i},"))
            }) {
                println!("{n}: {}", text.chars().take(300).collect::<String>());
            }
        }
    }
}
