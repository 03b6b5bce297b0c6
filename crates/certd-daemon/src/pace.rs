//! Pacing of full passes over the store that an operator starts while
//! certd serves (backups): a byte rate, parsed once from the
//! configuration, and a writer that holds a pass to it.
//!
//! A backup reads every record, hashes it and streams it out; unpaced, it
//! takes a whole core for as long as it lasts, and issuance on a small
//! machine loses that core. Paced, it takes longer and issuance keeps its
//! rate (docs/PERFORMANCE.md, "Issuance beside full passes"). The pacing
//! sleeps the thread it runs on, so a paced pass must run on the blocking
//! pool, never on an async worker (ARCHITECTURE.md invariants). This
//! module owns no store access and no configuration file parsing beyond
//! the rate's own syntax.

use std::io::Write;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Bytes per second a paced pass may write; `None` in settings: unpaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRate(NonZeroU64);

/// The default backup rate: 16 MiB/s, a backup of a million certificates
/// (about 1.1 GB) in about 70 s, while issuance at full load keeps 80% of
/// its rate; unpaced (about 60 MB/s here) it kept 64-67%
/// (docs/PERFORMANCE.md, "Issuance beside full passes").
pub const DEFAULT_BACKUP_RATE: ByteRate = ByteRate(NonZeroU64::new(16 * 1024 * 1024).unwrap());

impl ByteRate {
    /// Parses `"<n>MiB/s"`, `"<n>KiB/s"`, `"<n>GiB/s"` or `"<n>B/s"`; `"off"`
    /// (or `"0"`) is `Ok(None)`: unpaced.
    pub fn parse(text: &str) -> Result<Option<ByteRate>, String> {
        let trimmed = text.trim();
        if matches!(trimmed, "off" | "0") {
            return Ok(None);
        }
        let explain =
            || format!("{text:?} is not a rate like \"64MiB/s\", \"512KiB/s\" or \"off\"");
        let per_second = trimmed.strip_suffix("/s").ok_or_else(explain)?;
        let (number, unit) = per_second
            .find(|c: char| !c.is_ascii_digit())
            .map_or((per_second, ""), |at| per_second.split_at(at));
        let multiplier: u64 = match unit.trim() {
            "B" => 1,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            "GiB" => 1024 * 1024 * 1024,
            _ => return Err(explain()),
        };
        let count: u64 = number.parse().map_err(|_| explain())?;
        let bytes = count
            .checked_mul(multiplier)
            .and_then(NonZeroU64::new)
            .ok_or_else(explain)?;
        if bytes.get() < 64 * 1024 {
            return Err(format!(
                "{text:?} is below 64KiB/s: a backup would take days; say \"off\" for no pacing"
            ));
        }
        Ok(Some(ByteRate(bytes)))
    }

    pub fn bytes_per_second(self) -> u64 {
        self.0.get()
    }
}

impl std::fmt::Display for ByteRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0.get();
        if bytes.is_multiple_of(1024 * 1024) {
            write!(f, "{}MiB/s", bytes / (1024 * 1024))
        } else if bytes.is_multiple_of(1024) {
            write!(f, "{}KiB/s", bytes / 1024)
        } else {
            write!(f, "{bytes}B/s")
        }
    }
}

/// Why a paced pass must stop now (a storage fault whose recovery waits
/// for the pass to let the database go), or `None` to go on.
type StopCheck = Box<dyn Fn() -> Option<String> + Send>;

/// A writer that, after each write, sleeps until the bytes written so far
/// are within the rate. For the blocking pool only (it sleeps its thread).
pub struct PacedWriter<W> {
    inner: W,
    rate: Option<ByteRate>,
    started: Instant,
    written: u64,
    stop: Option<StopCheck>,
}

impl<W: Write> PacedWriter<W> {
    pub fn new(inner: W, rate: Option<ByteRate>) -> Self {
        PacedWriter {
            inner,
            rate,
            started: Instant::now(),
            written: 0,
            stop: None,
        }
    }

    /// Fails the next write once `check` says why: a paced pass takes long,
    /// and must not hold on to a database that has to be reopened.
    pub fn stopping_when(mut self, check: impl Fn() -> Option<String> + Send + 'static) -> Self {
        self.stop = Some(Box::new(check));
        self
    }

    /// How long the bytes written so far may take at the rate.
    fn allowed(&self) -> Option<Duration> {
        let rate = self.rate?;
        Some(Duration::from_secs_f64(
            self.written as f64 / rate.bytes_per_second() as f64,
        ))
    }
}

impl<W: Write> Write for PacedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(reason) = self.stop.as_ref().and_then(|check| check()) {
            return Err(std::io::Error::other(format!("stopped: {reason}")));
        }
        let written = self.inner.write(buf)?;
        self.written += written as u64;
        if let Some(allowed) = self.allowed() {
            let elapsed = self.started.elapsed();
            if allowed > elapsed {
                std::thread::sleep(allowed - elapsed);
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_unit_or_are_off() {
        let rate = |text: &str| ByteRate::parse(text).map(|r| r.map(ByteRate::bytes_per_second));
        assert_eq!(rate("64MiB/s"), Ok(Some(64 * 1024 * 1024)));
        assert_eq!(rate(" 512KiB/s "), Ok(Some(512 * 1024)));
        assert_eq!(rate("1GiB/s"), Ok(Some(1024 * 1024 * 1024)));
        assert_eq!(rate("100000B/s"), Ok(Some(100_000)));
        assert_eq!(rate("off"), Ok(None));
        assert_eq!(rate("0"), Ok(None));
        for refused in [
            "64MB/s", "64MiB", "MiB/s", "-1MiB/s", "1.5MiB/s", "", "0MiB/s",
        ] {
            let error = rate(refused).unwrap_err();
            assert!(error.contains("is not a rate"), "{refused}: {error}");
        }
        assert!(rate("1KiB/s").unwrap_err().contains("below 64KiB/s"));
        assert!(rate("99999999999999GiB/s").is_err());
        assert_eq!(DEFAULT_BACKUP_RATE.to_string(), "16MiB/s");
        assert_eq!(
            ByteRate::parse("512KiB/s").unwrap().unwrap().to_string(),
            "512KiB/s"
        );
    }

    #[test]
    fn a_paced_writer_holds_its_rate_and_an_unpaced_one_does_not_wait() {
        // 256 KiB at 1 MiB/s must take at least a quarter of a second: a
        // lower bound only (a slow machine may take longer), so not timing-
        // flaky.
        let rate = ByteRate::parse("1MiB/s").unwrap();
        let mut paced = PacedWriter::new(Vec::new(), rate);
        let started = Instant::now();
        for _ in 0..64 {
            paced.write_all(&[0u8; 4096]).unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(paced.inner.len(), 256 * 1024);

        let mut unpaced = PacedWriter::new(Vec::new(), None);
        unpaced.write_all(&[0u8; 4096]).unwrap();
        assert_eq!(unpaced.allowed(), None);
    }

    #[test]
    fn a_paced_writer_stops_when_told_why() {
        let fault = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = fault.clone();
        let mut writer =
            PacedWriter::new(Vec::new(), None).stopping_when(move || seen.lock().unwrap().clone());
        writer.write_all(b"first").unwrap();
        *fault.lock().unwrap() = Some("the disk is full".into());
        let error = writer.write_all(b"second").unwrap_err();
        assert_eq!(error.to_string(), "stopped: the disk is full");
        assert_eq!(writer.inner, b"first");
    }
}
