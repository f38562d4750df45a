//! The kernel log as the background daemon's log: a daemon started by `pinfs mount` has no
//! terminal, and a filesystem's failures (a host I/O error, an unmount that could not leave a
//! clean image) belong where an administrator looks for a kernel filesystem's, in `dmesg`.
//! Each event is one record (`/dev/kmsg` takes one record per `write`), tagged
//! `pinfs[PID]:` and given the syslog priority of its level.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Writes log events to `/dev/kmsg`.
#[derive(Clone)]
pub struct Kmsg {
    file: Arc<File>,
}

impl Kmsg {
    /// Opens `/dev/kmsg` for writing; `None` where it cannot be (not root, no such device).
    pub fn open() -> Option<Kmsg> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .ok()?;
        Some(Kmsg {
            file: Arc::new(file),
        })
    }
}

/// One event's bytes, written as one record when the formatter is done with it.
pub struct Record {
    file: Arc<File>,
    priority: u8,
    buf: Vec<u8>,
}

impl Write for Record {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        // The kernel keeps records of up to about 1 KiB; longer ones are cut, not lost.
        let line = format!("<{}>pinfs[{}]: {text}\n", self.priority, std::process::id());
        let _ = (&*self.file).write(line.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Kmsg {
    type Writer = Record;

    fn make_writer(&'a self) -> Record {
        self.record(4)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Record {
        // Syslog priorities: 3 error, 4 warning, 6 info, 7 debug.
        let priority = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        self.record(priority)
    }
}

impl Kmsg {
    fn record(&self, priority: u8) -> Record {
        Record {
            file: self.file.clone(),
            priority,
            buf: Vec::with_capacity(256),
        }
    }
}
