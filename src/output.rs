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
