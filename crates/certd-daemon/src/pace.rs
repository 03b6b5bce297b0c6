//! Pacing of full passes over the store that an operator starts while
//! certd serves: backups (a byte rate, parsed once from the configuration,
//! and a writer that holds a pass to it) and listings paged through every
//! certificate (a record rate, and a budget every listing page draws from).
//!
//! A backup reads every record, hashes it and streams it out; unpaced, it
//! takes a whole core for as long as it lasts, and issuance on a small
//! machine loses that core. Paced, it takes longer and issuance keeps its
//! rate (docs/PERFORMANCE.md, "Issuance beside full passes"). The pacing
//! sleeps the thread it runs on, so a paced pass must run on the blocking
//! pool, never on an async worker (ARCHITECTURE.md invariants). This
//! module owns no store access and no configuration file parsing beyond
//! the rates' own syntax.

use std::io::Write;
use std::num::{NonZeroU32, NonZeroU64};
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

/// Certificate records per second that listing pages may read, all
/// callers together; `None` in settings: unpaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRate(NonZeroU32);

/// The default listing rate: a walk of every certificate (`certd list
/// --all`) reads a million records in about a minute, and issuance at full
/// load kept 92% of its rate and more beside it; unpaced (39,000-55,000
/// records/s here) 79-85% (docs/PERFORMANCE.md, "Issuance beside full
/// passes").
pub const DEFAULT_LIST_RATE: RecordRate = RecordRate(NonZeroU32::new(16_000).unwrap());

/// Records a listing may read at once before the rate holds it back: ten
/// pages of the default size, so an operator's everyday `certd list` never
/// waits; only a long walk (or a page of many thousands) is paced.
pub const LIST_BURST_RECORDS: u32 = 10_000;

impl RecordRate {
    /// Parses `"<n>/s"` (records per second, at least 1,000); `"off"` (or
    /// `"0"`) is `Ok(None)`: unpaced.
    pub fn parse(text: &str) -> Result<Option<RecordRate>, String> {
        let trimmed = text.trim();
        if matches!(trimmed, "off" | "0") {
            return Ok(None);
        }
        let explain = || format!("{text:?} is not a rate of records like \"16000/s\" or \"off\"");
        let count: u32 = trimmed
            .strip_suffix("/s")
            .filter(|number| number.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|number| number.parse().ok())
            .ok_or_else(explain)?;
        if count < 1000 {
            return Err(format!(
                "{text:?} is below 1000/s: a walk of 10,000 index entries must fit in one page's 10 s; say \"off\" for no pacing"
            ));
        }
        NonZeroU32::new(count)
            .map(|rate| Some(RecordRate(rate)))
            .ok_or_else(explain)
    }

    pub fn per_second(self) -> u32 {
        self.0.get()
    }
}

impl std::fmt::Display for RecordRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// The longest one listing page waits for the rate: well within the 30 s
/// any call may take. A page reads at most this long's worth of the rate
/// (`ListingBudget::largest_page`; the rate is at least 1,000/s, so a
/// bounded walk of 10,000 entries always fits).
pub const MAX_LISTING_WAIT: Duration = Duration::from_secs(10);

/// The records every listing page of this certd reads, held to a
/// `RecordRate` together: a walk split over many callers or connections
/// takes no more than one would. Pages take turns: one at a time reads,
/// is charged what it read, and waits (holding its turn) until the budget
/// has covered it, so no debt outlives a page and none waits more than
/// `MAX_LISTING_WAIT`; the next page waits for its turn instead of being
/// refused. Up to `LIST_BURST_RECORDS` are read without waiting. Real
/// time, not the authority's clock: what is paced is the machine's work.
#[derive(Debug)]
pub struct ListingBudget {
    rate: RecordRate,
    /// Records that may be read at once, and when that was so; locked for
    /// a page's whole turn.
    turn: tokio::sync::Mutex<(f64, Instant)>,
}

/// A listing page's turn (`ListingBudget::turn`): held while the page is
/// read and while it waits for the rate.
pub struct ListingTurn<'a> {
    rate: RecordRate,
    budget: tokio::sync::MutexGuard<'a, (f64, Instant)>,
}

impl ListingBudget {
    pub fn new(rate: RecordRate, now: Instant) -> Self {
        ListingBudget {
            rate,
            turn: tokio::sync::Mutex::new((f64::from(LIST_BURST_RECORDS), now)),
        }
    }

    /// The most records one page may read: `MAX_LISTING_WAIT` of the rate
    /// (a page asking for more is answered short, with a token, as a
    /// bounded walk is).
    pub fn largest_page(&self) -> usize {
        let seconds = MAX_LISTING_WAIT.as_secs();
        usize::try_from(u64::from(self.rate.per_second()).saturating_mul(seconds))
            .unwrap_or(usize::MAX)
    }

    /// Waits until no other page is reading or waiting (first come, first
    /// served).
    pub async fn turn(&self) -> ListingTurn<'_> {
        ListingTurn {
            rate: self.rate,
            budget: self.turn.lock().await,
        }
    }
}

impl ListingTurn<'_> {
    /// Charges `records` read at `now`: how long this page must wait,
    /// holding its turn, before answering (zero while the burst lasts).
    pub fn charge(&mut self, records: usize, now: Instant) -> Duration {
        charge(&mut self.budget, self.rate, records, now)
    }
}

/// The budget's arithmetic: refills `state` (records that may be read at
/// once, and when) at `rate` up to the burst, takes `records`, and says how
/// long until what is owed is paid.
fn charge(state: &mut (f64, Instant), rate: RecordRate, records: usize, now: Instant) -> Duration {
    let per_second = f64::from(rate.per_second());
    let (available, updated) = *state;
    let refilled = now.saturating_duration_since(updated).as_secs_f64() * per_second;
    let left = (available + refilled).min(f64::from(LIST_BURST_RECORDS)) - records as f64;
    *state = (left, now.max(updated));
    Duration::from_secs_f64((-left).max(0.0) / per_second)
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

    #[test]
    fn record_rates_parse_or_say_what_is_wrong() {
        let rate = |text: &str| RecordRate::parse(text).map(|r| r.map(RecordRate::per_second));
        assert_eq!(rate("16000/s"), Ok(Some(16_000)));
        assert_eq!(rate(" 5000/s "), Ok(Some(5000)));
        assert_eq!(rate("off"), Ok(None));
        assert_eq!(rate("0"), Ok(None));
        for refused in [
            "16000",
            "/s",
            "-5/s",
            "1.5/s",
            "16k/s",
            "",
            "99999999999/s",
            "+5000/s",
        ] {
            let error = rate(refused).unwrap_err();
            assert!(
                error.contains("is not a rate of records"),
                "{refused}: {error}"
            );
        }
        assert!(rate("999/s").unwrap_err().contains("below 1000/s"));
        assert_eq!(DEFAULT_LIST_RATE.to_string(), "16000/s");
    }

    #[test]
    fn a_listing_budget_lets_a_burst_through_and_then_holds_the_rate() {
        let start = Instant::now();
        let rate = RecordRate::parse("1000/s").unwrap().unwrap();
        let mut state = (f64::from(LIST_BURST_RECORDS), start);
        let ms = Duration::from_millis;
        // Ten thousand records at once: the burst, no wait.
        assert_eq!(
            charge(&mut state, rate, LIST_BURST_RECORDS as usize, start),
            Duration::ZERO
        );
        // The next 500 at the same instant are owed: half a second at 1000/s.
        assert_eq!(charge(&mut state, rate, 500, start), ms(500));
        // Two seconds on, that debt is paid and 1500 more are in.
        let later = start + Duration::from_secs(2);
        assert_eq!(charge(&mut state, rate, 1500, later), Duration::ZERO);
        assert_eq!(charge(&mut state, rate, 1, later), ms(1));
        // Idle for long, the budget refills to the burst and no further.
        let idle = later + Duration::from_secs(3600);
        assert_eq!(
            charge(&mut state, rate, LIST_BURST_RECORDS as usize, idle),
            Duration::ZERO
        );
        assert!(charge(&mut state, rate, 1, idle) > Duration::ZERO);
        // A clock read out of order (an earlier instant) refills nothing.
        assert!(charge(&mut state, rate, 1, start) > Duration::ZERO);
    }

    #[tokio::test]
    async fn listing_pages_take_turns_and_none_waits_past_its_bound() {
        let rate = RecordRate::parse("1000/s").unwrap().unwrap();
        let budget = ListingBudget::new(rate, Instant::now());
        // The largest page is ten seconds of the rate, and a bounded walk
        // (10,000 entries) fits in it at the lowest rate allowed.
        assert_eq!(budget.largest_page(), 10_000);
        let start = Instant::now();
        let mut first = budget.turn().await;
        // While one page holds its turn, another cannot take one.
        assert!(budget.turn.try_lock().is_err());
        assert_eq!(
            first.charge(LIST_BURST_RECORDS as usize, start),
            Duration::ZERO
        );
        // The largest page past the burst waits exactly the bound.
        assert_eq!(first.charge(budget.largest_page(), start), MAX_LISTING_WAIT);
        drop(first);
        let mut second = budget.turn().await;
        // A page after a page that waited its debt off owes only its own.
        let paid = start + MAX_LISTING_WAIT;
        assert_eq!(second.charge(budget.largest_page(), paid), MAX_LISTING_WAIT);
    }
}
