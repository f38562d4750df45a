//! The value parsers of the command line: what each kind of flag value accepts, and the
//! message that says so when it does not. Clap puts the flag and the value in front of
//! each message (`invalid value '1K' for '--seed <SEED>': ...`) and exits 2.
//!
//! Sizes (`--size`, `--offset`, `--len`) take a unit (`64M`); every other number is plain
//! decimal digits, so that `--seed 1K` is refused instead of being read as 1024.

use std::time::Duration;

use pinfs::fs::options::MAX_SECONDS;

/// A size in bytes: digits with an optional K/M/G/T unit (binary multiples).
pub fn size(s: &str) -> Result<u64, String> {
    pinfs::store::image::parse_size(s)
}

/// A number that is not a size: decimal digits only.
pub fn whole(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        let unit = s.len() > 1
            && s[..s.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && s.ends_with(|c: char| c.is_ascii_alphabetic());
        return Err(if unit {
            "not a plain number: a unit like K or M is for sizes only; write the digits".into()
        } else {
            "not a whole number (decimal digits only)".into()
        });
    }
    s.parse()
        .map_err(|_| format!("too large (at most {})", u64::MAX))
}

/// A count of at least 1 (`--ops`, `--runs`): a run of nothing checks nothing.
pub fn more_than_zero(s: &str) -> Result<u64, String> {
    match whole(s)? {
        0 => Err("must be more than 0 (a run of nothing checks nothing)".into()),
        n => Ok(n),
    }
}

fn count_to(s: &str, max: u64) -> Result<usize, String> {
    let n = whole(s).map_err(|e| format!("{e}; a number from 1 to {max}"))?;
    if !(1..=max).contains(&n) {
        return Err(format!("a number from 1 to {max}"));
    }
    Ok(n as usize)
}

/// The fuzzer's holders: 1 to 16 (the ledger numbers pins for at most 16).
pub fn holders(s: &str) -> Result<usize, String> {
    count_to(s, pinfs::fuzzer::ledger::MAX_HOLDERS as u64)
}

/// The fuzzer's remote peers: 0 to 16 (tags number the peers of a pin up to 16).
pub fn remote_peers(s: &str) -> Result<usize, String> {
    let max = pinfs::fuzzer::MAX_REMOTE_PEERS;
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| format!("{s:?} is not a number of remote peers from 0 to {max}"))
}

/// The fuzzer's worker threads: 1 to 64.
pub fn threads(s: &str) -> Result<usize, String> {
    count_to(s, 64)
}

/// Seconds, fractions allowed, from 0 to 365 days (the longest time any option takes).
pub fn seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=MAX_SECONDS).contains(v))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds from 0 to {MAX_SECONDS} (365 days)"))
}

/// Seconds as [`seconds`], but more than 0 (`fuzz --duration`).
pub fn seconds_not_zero(s: &str) -> Result<Duration, String> {
    match seconds(s)? {
        d if d.is_zero() => Err("must be more than 0 (a run of nothing checks nothing)".into()),
        d => Ok(d),
    }
}

/// Milliseconds from 1 to 365 days (`pin --every`).
pub fn millis(s: &str) -> Result<Duration, String> {
    let max = MAX_SECONDS as u64 * 1000;
    let range = format!("a number of milliseconds from 1 to {max} (365 days)");
    match whole(s) {
        Ok(ms) if (1..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
        Ok(_) => Err(range),
        Err(e) => Err(format!("{e}; {range}")),
    }
}

/// A byte: decimal 0-255 or hex 0x00-0xff (`pin --write-byte`).
pub fn byte(s: &str) -> Result<u8, String> {
    let b = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.starts_with('+') => u8::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None => whole(s).ok().and_then(|n| u8::try_from(n).ok()),
    };
    b.ok_or_else(|| "not a byte (0-255 or 0x00-0xff)".into())
}

/// A holder's number, as `pinfs status` shows it (`fence`).
pub fn holder(s: &str) -> Result<u64, String> {
    whole(s).map_err(|e| format!("{e}: a holder's number, as pinfs status shows it"))
}

/// `fuzz-holder`'s step limit: a number, or `-` for none.
pub fn max_ops(s: &str) -> Result<MaxOps, String> {
    if s == "-" {
        return Ok(MaxOps(None));
    }
    whole(s)
        .map(|n| MaxOps(Some(n)))
        .map_err(|e| format!("{e}, or - for no limit"))
}

/// The parsed `MAX_OPS` of `fuzz-holder` (a newtype: clap takes an `Option` field to mean
/// an optional argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxOps(pub Option<u64>);

/// `ADDRESS:PORT` (`127.0.0.1:47000`, `[::1]:0`).
pub fn socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not ADDRESS:PORT (for example 127.0.0.1:47000)"))
}

/// A remote key as `pinfs pin --export` prints it.
pub fn rkey(s: &str) -> Result<u64, String> {
    pinfs::remote::protocol::parse_rkey(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_are_not_sizes_refuse_units() {
        assert_eq!(whole("1024"), Ok(1024));
        for bad in [
            "1K", "1k", "4G", "", " ", "-1", "+1", "0x10", "1.5", "1,5", "1e3",
        ] {
            assert!(whole(bad).is_err(), "{bad:?} is refused");
        }
        assert!(whole("1K").unwrap_err().contains("for sizes only"));
        assert!(whole("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(size("1K"), Ok(1024), "sizes keep their units");
    }

    #[test]
    fn ranges_are_stated() {
        assert_eq!(holders("16"), Ok(16));
        assert!(holders("17").unwrap_err().contains("from 1 to 16"));
        assert!(threads("0").unwrap_err().contains("from 1 to 64"));
        assert!(more_than_zero("0").unwrap_err().contains("more than 0"));
        assert!(millis("0").unwrap_err().contains("from 1 to 31536000000"));
        assert_eq!(millis("5"), Ok(Duration::from_millis(5)));
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["nan", "inf", "-1", "31536001", ""] {
            assert!(seconds(bad).unwrap_err().contains("from 0 to 31536000"));
        }
        assert!(seconds_not_zero("0").is_err());
        assert_eq!(byte("0x58"), Ok(0x58));
        assert_eq!(byte("88"), Ok(88));
        assert!(byte("256").is_err() && byte("0x+5").is_err());
        assert_eq!(max_ops("-"), Ok(MaxOps(None)));
        assert_eq!(max_ops("7"), Ok(MaxOps(Some(7))));
    }
}
