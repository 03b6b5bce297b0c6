//! `certd renew`: once, `--if-needed`, or `--daemon`, keeping a
//! directory's certificate fresh without an operator's timer script.
//!
//! When: half the validity the certificate had when it arrived (its file's
//! modification time; certd backdates notBefore by a minute, so notBefore
//! would put the point too early for short lifetimes), moved by up to ±10%
//! of that validity at random, so a fleet started together does not renew
//! together. On failure: retries with exponential backoff and jitter, logs
//! how long the current certificate has left, and never touches it; files
//! are only ever replaced whole by a renewed identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::workload::{new_key_and_csr, read, report, write_identity};
use certd::api::client::{TlsClientSettings, WorkloadClient};
use certd::clock::unix_seconds;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").args(["daemon", "if_needed"]))]
pub struct RenewArgs {
    /// certd's gRPC URL.
    #[arg(long, env = "CERTD_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// PEM file of the roots to trust for certd; default DIR/bundle.pem.
    #[arg(long, env = "CERTD_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Directory holding the current key.pem and cert.pem; they are replaced.
    #[arg(long)]
    pub(super) dir: PathBuf,
    /// Keep running: renew at half the certificate's validity (±10%), retry failures with
    /// backoff, never remove a valid certificate; stop on SIGTERM.
    #[arg(long)]
    pub(super) daemon: bool,
    /// Renew once, only if past half the certificate's validity (for cron and timers).
    #[arg(long)]
    if_needed: bool,
    /// After each renewal, run this shell command (e.g. "systemctl reload nginx").
    #[arg(long)]
    exec: Option<String>,
    /// After each renewal, send a signal to the process in a pid file, e.g. /run/nginx.pid:HUP.
    #[arg(long, value_parser = super::renew::parse_signal)]
    signal: Option<(PathBuf, String)>,
    /// With --daemon: how often to check certd's trust bundle between renewals; a changed
    /// bundle replaces DIR/bundle.pem and runs the hook.
    #[arg(long, value_parser = super::duration, default_value = "5m")]
    pub(super) bundle_refresh: std::time::Duration,
    /// Print what was renewed (or, with --if-needed, when it will be) as one JSON object; not
    /// with --daemon, which logs.
    #[command(flatten)]
    pub(super) output: super::JsonArg,
}

pub async fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let hooks = Hooks {
        exec: args.exec.clone(),
        signal: args.signal.clone(),
    };
    if args.daemon {
        if args.output.json {
            return Err(super::UsageError(
                "--json is for one renewal; with --daemon, certd logs each one (--log-format json)"
                    .into(),
            )
            .into());
        }
        return daemon(args, hooks).await;
    }
    if args.if_needed {
        return if_needed(args, &hooks).await;
    }
    renew_once(&args).await?;
    Ok(run_hooks(&hooks).await?)
}

/// Renews the identity in `args.dir` once, replacing its files.
pub(super) async fn renew_once(args: &RenewArgs) -> anyhow::Result<()> {
    if !args.dir.join("cert.pem").exists() {
        return Err(nothing_to_renew(&args.dir));
    }
    let (key, csr_der) = new_key_and_csr()?;
    let mut client = client_for_renewal(args).await?;
    let issued = client.renew(csr_der).await?;
    write_identity(&args.dir, &key, &issued)?;
    report(&issued, &args.dir, args.output)
}

/// A client presenting the identity in `args.dir`, trusting `--ca-bundle`
/// or DIR/bundle.pem.
pub(super) async fn client_for_renewal(args: &RenewArgs) -> anyhow::Result<WorkloadClient> {
    let bundle_path = args
        .ca_bundle
        .clone()
        .unwrap_or_else(|| args.dir.join("bundle.pem"));
    let ca_bundle_pem = read(&bundle_path)?;
    let chain = read(&args.dir.join("cert.pem"))?;
    let current_key = zeroize::Zeroizing::new(read(&args.dir.join("key.pem"))?);
    let tls = TlsClientSettings {
        ca_bundle_pem,
        identity: Some((chain, current_key)),
    };
    Ok(WorkloadClient::connect(&args.server, &tls).await?)
}

/// The error for a directory without an identity: what to run first.
pub(super) fn nothing_to_renew(dir: &Path) -> anyhow::Error {
    super::UsageError(format!(
        "{} holds no certificate (cert.pem) to renew; get one first with `certd request --out {}`",
        dir.display(),
        dir.display()
    ))
    .into()
}

/// First wait after a failed renewal; it doubles up to `LONGEST_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(2);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// What to do after a renewal, besides replacing the files.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// A shell command (`sh -c`), e.g. `systemctl reload nginx`.
    pub exec: Option<String>,
    /// A process to signal: its pid file and the signal's name.
    pub signal: Option<(PathBuf, String)>,
}

/// Signals a renewal hook may send: those servers reload or reopen on.
const HOOK_SIGNALS: [&str; 8] = [
    "HUP", "USR1", "USR2", "INT", "QUIT", "TERM", "WINCH", "CONT",
];

/// Parses `PIDFILE:SIGNAL`, e.g. `/run/nginx.pid:HUP`; the signal is one of
/// `HOOK_SIGNALS` (with or without `SIG`, any case), checked before
/// anything is renewed.
pub fn parse_signal(value: &str) -> Result<(PathBuf, String), String> {
    let (file, signal) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} is not PIDFILE:SIGNAL, e.g. /run/nginx.pid:HUP"))?;
    let signal = signal.to_ascii_uppercase();
    let signal = signal.trim_start_matches("SIG").to_owned();
    if file.is_empty() || signal.is_empty() {
        return Err(format!(
            "{value:?} is not PIDFILE:SIGNAL, e.g. /run/nginx.pid:HUP"
        ));
    }
    if !HOOK_SIGNALS.contains(&signal.as_str()) {
        return Err(format!(
            "{:?} is not a signal a renewal hook sends: use one of {}",
            signal.chars().take(16).collect::<String>(),
            HOOK_SIGNALS.join(", ")
        ));
    }
    Ok((PathBuf::from(file), signal))
}

/// A renewal hook that failed: the certificate was renewed, but the
/// server may still use the old one.
#[derive(Debug, thiserror::Error)]
#[error("renewed, but the renewal hook failed: {0}; the server may still use the old certificate")]
pub struct HookFailed(String);

/// When a certificate valid until `not_after`, received at `received_at`,
/// should be renewed: half-way, moved by `jitter` (−1.0..=1.0) tenths of
/// the validity it had.
pub fn renewal_time(received_at: i64, not_after: i64, jitter: f64) -> i64 {
    let validity = (not_after - received_at).max(0) as f64;
    let offset = validity / 2.0 + jitter.clamp(-1.0, 1.0) * validity / 10.0;
    received_at + offset.round() as i64
}

/// The current certificate's notAfter and when it arrived (cert.pem's
/// modification time, bounded by its validity).
fn current_validity(dir: &Path) -> anyhow::Result<(i64, i64)> {
    let path = dir.join("cert.pem");
    if !path.exists() {
        return Err(nothing_to_renew(dir));
    }
    let pem = read(&path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{} holds no PEM certificate: {e}", path.display()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{} is not a certificate: {e}", path.display()))?;
    let not_before = certificate.validity().not_before.timestamp();
    let not_after = certificate.validity().not_after.timestamp();
    let modified = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .map(unix_seconds)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((not_after, modified.clamp(not_before, not_after)))
}

fn random_jitter() -> f64 {
    let mut bytes = [0u8; 2];
    certd::fsutil::fill_random(&mut bytes);
    f64::from(u16::from_be_bytes(bytes)) / f64::from(u16::MAX) * 2.0 - 1.0
}

/// `--if-needed`: renews once if the certificate is past its renewal point
/// (without jitter), else says when it will be.
pub async fn if_needed(args: RenewArgs, hooks: &Hooks) -> anyhow::Result<()> {
    let (not_after, received_at) = current_validity(&args.dir)?;
    let due = renewal_time(received_at, not_after, 0.0);
    let now = unix_seconds(super::now());
    if now < due {
        let certificate = args.dir.join("cert.pem");
        let not_due = serde_json::json!({
            "renewed": false,
            "certificate": certificate,
            "renews_after": due,
        });
        return args.output.print(&not_due, || {
            println!(
                "not due: {} renews after {}",
                certificate.display(),
                super::format_time(due)
            );
            Ok(())
        });
    }
    renew_once(&args).await?;
    Ok(run_hooks(hooks).await?)
}

/// `--daemon`: renews whenever due, until SIGTERM or SIGINT.
pub async fn daemon(args: RenewArgs, hooks: Hooks) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut retry = FIRST_RETRY;
    // Drawn once per certificate, so that waking to check the bundle does
    // not move the renewal point.
    let mut jitter = random_jitter();
    loop {
        // A certificate that is due again as soon as it arrives (this
        // machine's clock far ahead of certd's) must not keep a stop
        // waiting: look for one between renewals, never during one (a
        // renewal cut short after certd answered would leave files that
        // certd counts as renewed already).
        tokio::select! {
            biased;
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            () = std::future::ready(()) => {}
        }
        let (not_after, received_at) = current_validity(&args.dir)?;
        let due = renewal_time(received_at, not_after, jitter);
        let now = unix_seconds(super::now());
        if now < due {
            let wait = Duration::from_secs(u64::try_from(due - now).unwrap_or(0));
            tracing::info!(
                dir = %args.dir.display(),
                renews_at = %super::format_time(due),
                "waiting to renew"
            );
            tokio::select! {
                _ = terminate.recv() => return Ok(()),
                _ = interrupt.recv() => return Ok(()),
                () = tokio::time::sleep(wait.min(args.bundle_refresh)) => {}
            }
            if unix_seconds(super::now()) < due {
                match refresh_bundle(&args).await {
                    // Logged by `run_hooks`; the next change runs it again.
                    Ok(true) => run_hooks(&hooks).await.unwrap_or(()),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        error = %format!("{error:#}"),
                        "cannot check the trust bundle; keeping bundle.pem"
                    ),
                }
                continue;
            }
        }
        jitter = random_jitter();
        loop {
            match renew_once(&args).await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    // Logged by `run_hooks`; the next renewal runs it again.
                    run_hooks(&hooks).await.unwrap_or(());
                    break;
                }
                Err(error) => {
                    let left = not_after - unix_seconds(super::now());
                    let pause = with_jitter(retry);
                    if left > 0 {
                        tracing::warn!(
                            error = %format!("{error:#}"),
                            valid_for_seconds = left,
                            retry_in_seconds = pause.as_secs(),
                            "renewal failed; the current certificate stays in place"
                        );
                    } else {
                        tracing::error!(
                            error = %format!("{error:#}"),
                            retry_in_seconds = pause.as_secs(),
                            "renewal failed and the certificate has expired"
                        );
                    }
                    retry = (retry * 2).min(LONGEST_RETRY);
                    tokio::select! {
                        _ = terminate.recv() => return Ok(()),
                        _ = interrupt.recv() => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// Replaces DIR/bundle.pem when certd's trust bundle differs from it (the
/// CA added or dropped a root); `true` if it did. Asked over mTLS with the
/// current certificate, trusting the bundle held now.
async fn refresh_bundle(args: &RenewArgs) -> anyhow::Result<bool> {
    let bundle_path = args.dir.join("bundle.pem");
    let held = read(&bundle_path)?;
    let mut client = client_for_renewal(args).await?;
    let (current, _) = client.trust_bundle().await?;
    if current == held || current.trim().is_empty() {
        return Ok(false);
    }
    certd::fsutil::replace_file(
        &bundle_path,
        current.as_bytes(),
        certd::fsutil::PUBLIC_FILE_MODE,
    )
    .with_context(|| format!("cannot write {}", bundle_path.display()))?;
    tracing::info!(path = %bundle_path.display(), "the trust bundle changed; bundle.pem replaced");
    Ok(true)
}

/// `wait` moved by up to ±20%, so clients that failed together do not
/// retry together.
fn with_jitter(wait: Duration) -> Duration {
    wait.mul_f64(1.0 + random_jitter() / 5.0)
}

/// Runs the hooks after a renewal. A failing hook is logged and returned:
/// a one-shot renewal exits non-zero with it, `--daemon` runs it again at
/// the next renewal.
pub(super) async fn run_hooks(hooks: &Hooks) -> Result<(), HookFailed> {
    let mut failed = Vec::new();
    if let Some(command) = &hooks.exec {
        match tokio::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .await
        {
            Ok(status) if status.success() => tracing::info!(command, "ran the renewal hook"),
            Ok(status) => {
                tracing::warn!(command, %status, "the renewal hook failed");
                failed.push(format!("--exec {command:?} {status}"));
            }
            Err(error) => {
                tracing::warn!(command, error = %certd::error_kind::with_causes(&error), "cannot run the renewal hook");
                failed.push(format!("cannot run --exec {command:?}: {error}"));
            }
        }
    }
    if let Some((pid_file, signal)) = &hooks.signal {
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .map(|pid| pid.trim().to_owned())
            .filter(|pid| pid.parse::<u32>().is_ok_and(|pid| pid > 0));
        match pid {
            None => {
                tracing::warn!(pid_file = %pid_file.display(), "no process id to signal");
                failed.push(format!("no process id in {}", pid_file.display()));
            }
            Some(pid) => match tokio::process::Command::new("kill")
                .args([format!("-{signal}"), pid.clone()])
                .stderr(std::process::Stdio::null())
                .status()
                .await
            {
                Ok(status) if status.success() => tracing::info!(pid, signal, "signalled"),
                Ok(status) => {
                    tracing::warn!(pid, signal, %status, "cannot signal the process");
                    failed.push(format!("cannot send SIG{signal} to process {pid}"));
                }
                Err(error) => {
                    tracing::warn!(pid, signal, error = %certd::error_kind::with_causes(&error), "cannot signal the process");
                    failed.push(format!("cannot send SIG{signal} to process {pid}: {error}"));
                }
            },
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(HookFailed(failed.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_half_way_through_the_validity_it_arrived_with() {
        assert_eq!(renewal_time(1000, 1000 + 86_400, 0.0), 1000 + 43_200);
        // ±10% of the validity at the extremes of the jitter.
        assert_eq!(
            renewal_time(1000, 1000 + 86_400, 1.0),
            1000 + 43_200 + 8_640
        );
        assert_eq!(
            renewal_time(1000, 1000 + 86_400, -1.0),
            1000 + 43_200 - 8_640
        );
        // An expired certificate is due at once.
        assert_eq!(renewal_time(2000, 1000, 0.3), 2000);
    }

    #[test]
    fn signal_hooks_are_parsed() {
        assert_eq!(
            parse_signal("/run/nginx.pid:HUP").unwrap(),
            (PathBuf::from("/run/nginx.pid"), "HUP".into())
        );
        assert_eq!(parse_signal("/run/x.pid:sigusr1").unwrap().1, "USR1");
        for bad in [
            "/run/nginx.pid",
            ":HUP",
            "/run/x.pid:",
            "/run/x.pid:HUP;rm",
            "/run/x.pid:BOGUS",
            "/run/x.pid:KILL",
        ] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
