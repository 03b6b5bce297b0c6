//! The standard process metrics every Prometheus client library exports
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape, so
//! dashboards and alerts written for any exporter work on certd.
//!
//! prometheus-client has no process collector, and the crates that add one
//! pull in a second metrics library; the figures are a few lines of
//! `/proc`, read here. Linux only: elsewhere the collector exports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat` (the kernel's `USER_HZ`,
/// fixed at 100 in its ABI on every architecture Rust targets; Go's
/// Prometheus client assumes the same).
const USER_HZ: f64 = 100.0;

/// The process metrics, without a prefix.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of the process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Unix seconds.
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// The figures of `/proc/self/stat` certd exports.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StatFields {
    cpu_ticks: u64,
    start_ticks: u64,
    virtual_memory_bytes: u64,
}

impl ProcessSample {
    /// Reads this process's figures; `None` where there is no `/proc`.
    pub fn read() -> Option<ProcessSample> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        // VmRSS is in kB whatever the page size, which spares asking the
        // kernel for that (stat's RSS counts pages).
        let resident_kb = parse_resident_kb(&std::fs::read_to_string("/proc/self/status").ok()?)?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        Some(ProcessSample {
            cpu_seconds: stat.cpu_ticks as f64 / USER_HZ,
            resident_memory_bytes: resident_kb.saturating_mul(1024),
            virtual_memory_bytes: stat.virtual_memory_bytes,
            start_time_seconds: boot_time as f64 + stat.start_ticks as f64 / USER_HZ,
            open_fds,
            max_fds,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauges = vec![
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_memory_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                sample.virtual_memory_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                sample.start_time_seconds,
            ),
        ];
        if let Some(open) = sample.open_fds {
            gauges.push((
                "process_open_fds",
                "Number of open file descriptors",
                open as f64,
            ));
        }
        if let Some(max) = sample.max_fds {
            gauges.push((
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            ));
        }
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The fields of `/proc/<pid>/stat` (proc(5)) certd exports. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses
/// itself, so the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<StatFields> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number.checked_sub(3)?)?.parse().ok() };
    Some(StatFields {
        // utime (14) + stime (15), in clock ticks.
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        virtual_memory_bytes: field(23)?,
    })
}

/// `btime` of `/proc/stat`: when the system booted, in Unix seconds.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, in kB.
fn parse_resident_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with spaces and parentheses, as a process may set.
        let stat = "4242 (certd (a) b) S 1 4242 4242 0 -1 4194560 2153 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17130 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(StatFields {
                cpu_ticks: 325,
                start_ticks: 123_456,
                virtual_memory_bytes: 987_654_321,
            })
        );
        assert_eq!(parse_stat("4242 (certd) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn boot_time_and_resident_memory_are_found_by_name() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        assert_eq!(
            parse_resident_kb("Name:\tcertd\nVmRSS:\t   12345 kB\nThreads:\t9\n"),
            Some(12_345)
        );
        assert_eq!(parse_resident_kb("Name:\tcertd\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_alive_with_memory_and_descriptors() {
        let sample = ProcessSample::read().expect("/proc on Linux");
        assert!(sample.resident_memory_bytes > 0, "{sample:?}");
        assert!(sample.virtual_memory_bytes >= sample.resident_memory_bytes);
        assert!(sample.open_fds.is_some_and(|open| open >= 3), "{sample:?}");
        // Started after 2020 and not in the future.
        assert!(sample.start_time_seconds > 1.6e9, "{sample:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(sample.start_time_seconds <= now + 1.0, "{sample:?}");
    }
}
