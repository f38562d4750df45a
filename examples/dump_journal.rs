//! Prints the journal records of an unmounted image that mention an inode (debugging aid):
//! `cargo run --example dump_journal IMAGE [INO]`.

use std::time::Duration;

use pinfs::format::record::decode_transaction;
use pinfs::log::journal::Journal;
use pinfs::store::image::Image;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let image = args.first().expect("usage: dump_journal IMAGE [INO]");
    let ino: Option<u64> = args.get(1).and_then(|s| s.parse().ok());
    let (img, sb) = Image::open(image.as_ref(), Duration::from_secs(5)).expect("open");
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
