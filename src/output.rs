//! Command output that cannot panic: `println!` panics when standard output fails (a full
//! disk behind `> file`, `/dev/full`); these macros end the command with a clear message and
//! exit status 1 instead. (A reader that goes away ends most commands by SIGPIPE first, see
//! `main.rs`.)

/// Writes formatted text to standard output; on failure, says so and exits 1.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_or_exit(format_args!($($arg)*), false)
    };
}

/// Writes a formatted line to standard output; on failure, says so and exits 1.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_or_exit(format_args!($($arg)*), true)
    };
}

/// The body of [`out!`] and [`outln!`].
pub fn write_or_exit(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (where SIGPIPE is ignored): nothing to tell anyone.
            std::process::exit(0);
        }
        eprintln!("pinfs: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `s` as a terminal may be shown it (the status table, fsck's messages): control characters (a newline that would start a forged line,
/// terminal escapes) and backslashes escaped as Rust writes them (`\n`, `\u{1b}`, `\\`).
/// File names and commands are chosen by any user (or by whoever crafted an image), and the
/// output goes to root's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_and_backslashes_are_escaped() {
        assert_eq!(
            super::printable("a\nb\u{1b}[2J\\c d"),
            "a\\nb\\u{1b}[2J\\\\c d"
        );
        assert_eq!(super::printable("caf\u{e9}"), "caf\u{e9}");
    }
}
