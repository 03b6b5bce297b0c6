//! The clock of long-running commands, and in debug builds (which only
//! tests run) a clock a test moves from outside the process.
//!
//! A test that runs `certd agent` as a process (to read its log, or to
//! stop the daemon under it) cannot hand it a `ManualClock`; instead it
//! names a file in `CERTD_TEST_CLOCK_FILE` and writes there how far ahead
//! of the system's clock the agent runs (a duration, `31s`). The file is
//! read again at every use, so a renewal that falls due by the moved clock
//! runs at once instead of the test sleeping until it does. Release builds
//! have no such knob.

use certd::clock::{SharedClock, SystemClock};

/// The system's clock, or in a debug build with `CERTD_TEST_CLOCK_FILE`
/// set, the system's moved ahead by what that file says.
pub fn clock() -> SharedClock {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("CERTD_TEST_CLOCK_FILE") {
        return std::sync::Arc::new(file_clock::FileClock { path: path.into() });
    }
    SystemClock::shared()
}

#[cfg(debug_assertions)]
mod file_clock {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use certd::clock::{Clock, Wait};

    /// How often a sleeper looks at the file again: short enough that a
    /// test's step takes effect at once, long enough to cost nothing.
    const POLL: Duration = Duration::from_millis(20);

    /// The system's clock plus the duration in `path` (none while the file
    /// is missing or unreadable, as before a test first moves it).
    #[derive(Debug, Clone)]
    pub struct FileClock {
        pub path: PathBuf,
    }

    impl FileClock {
        fn ahead(&self) -> Duration {
            std::fs::read_to_string(&self.path)
                .ok()
                .and_then(|text| humantime::parse_duration(text.trim()).ok())
                .unwrap_or_default()
        }
    }

    impl Clock for FileClock {
        fn now(&self) -> SystemTime {
            SystemTime::now() + self.ahead()
        }

        // This clock runs with the real one, so `tick`'s "real time or
        // this clock, whichever passes first" is this clock: the default.
        fn sleep(&self, duration: Duration) -> Wait {
            let clock = self.clone();
            let until = clock.now() + duration;
            Box::pin(async move {
                loop {
                    let now = clock.now();
                    let Ok(left) = until.duration_since(now) else {
                        return;
                    };
                    if left.is_zero() {
                        return;
                    }
                    tokio::time::sleep(left.min(POLL)).await;
                }
            })
        }
    }
}
