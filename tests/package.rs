//! The Debian package as an administrator meets it: `dpkg -i` of the .deb
//! that `cargo deb --locked` built (named by `CERTD_DEB`; `.ci/run` builds
//! it) installs the binary, the units, the sysusers and tmpfiles files and
//! the configuration with the owners and modes certd.service needs, without
//! a running systemd; certd then serves exactly as the installed unit starts
//! it (its ExecStart, User, Group, Environment and UMask; only the ports
//! are moved to ephemeral ones, with the flags that override the
//! configuration) and issues a certificate that OpenSSL verifies; `dpkg -r`
//! and `dpkg -P` remove the package but keep the CA's keys. Installed again
//! with systemd-sysusers and systemd-tmpfiles out of PATH (a slim container
//! image), its postinst makes the same user and directories without them.
//!
//! The test changes the machine (a package, a system user, /var/lib/certd),
//! so it runs only as root and only where no certd is installed and no
//! /var/lib/certd exists; it skips with a `SKIPPED:` line otherwise, and
//! fails instead when `CERTD_REQUIRE_PACKAGE` is set (as `.ci/run` does).
//! Whatever happens, it purges the package and deletes what it made.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const PACKAGE: &str = "certd";
const UNIT: &str = "/usr/lib/systemd/system/certd.service";
const DATA_DIR: &str = "/var/lib/certd";

/// dpkg installs certd, certd serves as its unit says and issues a
/// certificate OpenSSL verifies, removing and purging the package keep the
/// CA's keys, and the package installs the same where systemd's tools are
/// missing.
#[test]
fn the_debian_package_installs_serves_as_its_unit_says_and_keeps_the_ca_when_removed() {
    let Some(deb) = package_to_test() else {
        return;
    };
    let mut machine = Machine::new();
    let tmp = tempfile::tempdir().unwrap();

    let install = dpkg(&["-i", deb.to_str().unwrap()]);
    machine.installed = true;
    assert!(install.status.success(), "dpkg -i: {}", text(&install));
    assert_eq!(package_status(), Some("ii ".into()));

    check_installed_files();

    let unit = ServiceSection::read(Path::new(UNIT));
    let start = StartCommand::of(&unit);
    // The package makes the data directory the unit names, so that
    // `certd init` can run before the first start.
    assert_eq!(start.data_dir, Path::new(DATA_DIR), "{:?}", start.argv);
    assert_eq!(
        start.config,
        Path::new("/etc/certd/certd.toml"),
        "{:?}",
        start.argv
    );

    // An administrator enables certd (systemctl links it without a running
    // systemd); purging the package removes the link, removing does not.
    let enabled = Path::new("/etc/systemd/system/multi-user.target.wants/certd.service");
    let enable = Command::new("systemctl")
        .args(["enable", "certd.service"])
        .output()
        .expect("systemctl (package systemd)");
    assert!(
        enable.status.success(),
        "systemctl enable: {}",
        text(&enable)
    );
    assert!(enabled.symlink_metadata().is_ok(), "{}", text(&enable));

    let mut served = Served::start(&unit, &start, tmp.path());
    machine.daemon = served.child.take();
    let readyz = Command::new("curl")
        .args(["-fsS", &format!("{}/readyz", served.http)])
        .output()
        .expect("curl");
    assert!(readyz.status.success(), "/readyz: {}", text(&readyz));

    // The CA the first start made belongs to certd, private to it.
    for file in ["bundle.pem", "root.key", "intermediate.key"] {
        let path = Path::new(DATA_DIR).join(file);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(meta.uid(), user_id("certd"), "{path:?}");
        if file.ends_with(".key") {
            assert_eq!(meta.mode() & 0o777, 0o600, "{path:?}");
        }
    }

    // One certificate, issued by the installed CLI through the admin
    // socket, as docs/operations/install-debian.md shows.
    let out = tmp.path().join("issued");
    let issue = Command::new(&start.argv[0])
        .args(["issue", "--unregistered", "--service", "package-test"])
        .arg("--out")
        .arg(&out)
        .arg("--data-dir")
        .arg(&start.data_dir)
        .output()
        .expect("run the installed certd");
    assert!(issue.status.success(), "certd issue: {}", text(&issue));
    let cert = out.join("cert.pem");
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(start.data_dir.join("bundle.pem"))
        .arg("-untrusted")
        .arg(&cert)
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(verify.status.success(), "openssl verify: {}", text(&verify));

    // The unit's KillSignal=SIGTERM: certd stops cleanly.
    let mut daemon = machine.daemon.take().expect("certd runs");
    let term = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let status = daemon.wait().expect("wait for certd");
    assert!(
        status.success(),
        "certd exited with {status} after SIGTERM:\n{}",
        served.log()
    );
    let ca_before = ca_files();

    let remove = dpkg(&["-r", PACKAGE]);
    assert!(remove.status.success(), "dpkg -r: {}", text(&remove));
    assert_eq!(package_status(), Some("rc ".into()), "{}", text(&remove));
    for gone in [
        "/usr/bin/certd",
        UNIT,
        "/usr/lib/systemd/system/certd-agent.service",
        "/usr/lib/systemd/system/certd-renew@.service",
        "/usr/lib/sysusers.d/certd.conf",
        "/usr/lib/tmpfiles.d/certd.conf",
    ] {
        assert!(!Path::new(gone).exists(), "dpkg -r left {gone}");
    }
    // A removed package keeps its configuration, the administrator's
    // choice to run it, and the CA, unchanged.
    assert!(Path::new("/etc/certd/certd.toml").exists());
    assert!(enabled.symlink_metadata().is_ok(), "dpkg -r disabled certd");
    assert_eq!(ca_files(), ca_before, "dpkg -r changed the CA");

    let purge = dpkg(&["-P", PACKAGE]);
    machine.installed = false;
    assert!(purge.status.success(), "dpkg -P: {}", text(&purge));
    assert_eq!(package_status(), None, "{}", text(&purge));
    assert!(
        !Path::new("/etc/certd/certd.toml").exists(),
        "dpkg -P kept the conffile"
    );
    assert!(
        enabled.symlink_metadata().is_err(),
        "dpkg -P left certd enabled"
    );
    assert_eq!(ca_files(), ca_before, "dpkg -P changed the CA");
    assert!(
        text(&purge).contains("/var/lib/certd (the CA's keys and records) is kept"),
        "purge does not say it keeps the CA: {}",
        text(&purge)
    );
    // The user stays with the files it owns.
    assert!(user_exists("certd"));

    // The same package where systemd's tools are missing (a slim container
    // image): the postinst makes the user with useradd and the directories
    // with mkdir, chown and chmod, the same as systemd's tools would.
    machine.forget_ca();
    let path = path_without(&["systemd-sysusers", "systemd-tmpfiles"], tmp.path());
    let install = dpkg_with_path(&["-i", deb.to_str().unwrap()], &path);
    machine.installed = true;
    assert!(
        install.status.success(),
        "dpkg -i without systemd's tools: {}",
        text(&install)
    );
    check_installed_files();
    let purge = dpkg(&["-P", PACKAGE]);
    machine.installed = false;
    assert!(purge.status.success(), "dpkg -P: {}", text(&purge));
}

/// The .deb to install, or `None` (after one loud line) where the test
/// cannot run here and nothing requires it.
fn package_to_test() -> Option<PathBuf> {
    let reason = match std::env::var_os("CERTD_DEB").map(PathBuf::from) {
        None => "CERTD_DEB names no .deb (cargo deb --locked builds one; .ci/run does)".to_owned(),
        Some(deb) if !deb.is_file() => format!("CERTD_DEB={} is not a file", deb.display()),
        Some(_) if common::current_uid() != 0 => "dpkg -i needs root".to_owned(),
        Some(_) if package_status().is_some() => {
            // Never remove a certd someone installed.
            "a certd package is already installed on this machine".to_owned()
        }
        Some(_) if Path::new(DATA_DIR).exists() => {
            format!("{DATA_DIR} exists: it may hold a CA, which this test must not touch")
        }
        Some(deb) => return Some(deb),
    };
    if std::env::var_os("CERTD_REQUIRE_PACKAGE").is_some() {
        panic!("CERTD_REQUIRE_PACKAGE is set, but {reason}");
    }
    eprintln!("SKIPPED: the Debian package test: {reason}");
    None
}

/// What the test changed on this machine, undone when it ends, passed or
/// failed: certd stopped, the package purged, and the data directory and
/// the user (kept by a purge, by design) deleted, since the test made them.
struct Machine {
    daemon: Option<Child>,
    installed: bool,
    made_user: bool,
}

impl Machine {
    /// Before dpkg runs: whether the certd user is the package's to make.
    fn new() -> Machine {
        Machine {
            daemon: None,
            installed: false,
            made_user: !user_exists("certd"),
        }
    }

    /// Deletes the data directory and the user (if the package made it),
    /// which a purge keeps: what this test made, not a CA of anyone's.
    fn forget_ca(&mut self) {
        let _ = std::fs::remove_dir_all(DATA_DIR);
        if self.made_user && user_exists("certd") {
            // userdel removes the user's own group too; groupdel is for a
            // group it left (one with other members cannot be here).
            let _ = Command::new("userdel").arg("certd").status();
            if getent("group", "certd").is_some() {
                let _ = Command::new("groupdel").arg("certd").status();
            }
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if self.installed || package_status().is_some() {
            let purge = dpkg(&["-P", PACKAGE]);
            if !purge.status.success() {
                eprintln!("cleanup: dpkg -P certd: {}", text(&purge));
            }
        }
        self.forget_ca();
    }
}

/// Every file the package installs, with its owner and mode; nothing
/// started or enabled.
fn check_installed_files() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let certd = user_id("certd");
    let group = group_id("certd");
    // path, mode, uid, gid, the repository file it must equal
    let expected: [(&str, u32, u32, u32, Option<&str>); 11] = [
        ("/usr/bin/certd", 0o755, 0, 0, None),
        (UNIT, 0o644, 0, 0, Some("deploy/certd.service")),
        (
            "/usr/lib/systemd/system/certd-agent.service",
            0o644,
            0,
            0,
            Some("deploy/certd-agent.service"),
        ),
        (
            "/usr/lib/systemd/system/certd-renew@.service",
            0o644,
            0,
            0,
            Some("deploy/certd-renew@.service"),
        ),
        (
            "/usr/lib/sysusers.d/certd.conf",
            0o644,
            0,
            0,
            Some("deploy/certd.sysusers.conf"),
        ),
        (
            "/usr/lib/tmpfiles.d/certd.conf",
            0o644,
            0,
            0,
            Some("deploy/certd.tmpfiles.conf"),
        ),
        ("/etc/certd", 0o750, 0, group, None),
        (
            "/etc/certd/certd.toml",
            0o640,
            0,
            group,
            Some("deploy/certd.toml"),
        ),
        (DATA_DIR, 0o700, certd, group, None),
        (
            "/usr/share/doc/certd/README.md",
            0o644,
            0,
            0,
            Some("README.md"),
        ),
        ("/usr/share/doc/certd/copyright", 0o644, 0, 0, None),
    ];
    for (path, mode, uid, gid, source) in expected {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            format!("{:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid()),
            format!("{mode:o} {uid}:{gid}"),
            "{path}: mode uid:gid"
        );
        if let Some(source) = source {
            assert!(
                std::fs::read(path).unwrap() == std::fs::read(repo.join(source)).unwrap(),
                "{path} is not the repository's {source}"
            );
        }
    }
    let license = std::fs::read_to_string("/usr/share/doc/certd/copyright").unwrap();
    assert!(license.contains("Apache License"), "{license}");
    assert_eq!(
        std::fs::read_dir(DATA_DIR).unwrap().count(),
        0,
        "the package put something in the data directory"
    );

    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f", "${Conffiles}", PACKAGE])
        .output()
        .expect("dpkg-query");
    assert!(
        text(&conffiles).contains("/etc/certd/certd.toml "),
        "not a conffile: {}",
        text(&conffiles)
    );

    let passwd = getent("passwd", "certd").expect("the certd user");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.get(5), Some(&DATA_DIR), "{passwd}");
    assert!(
        fields
            .get(6)
            .is_some_and(|shell| shell.ends_with("nologin")),
        "certd can log in: {passwd}"
    );
    assert!(certd < 1000, "not a system user: {passwd}");

    // The package starts and enables nothing: the administrator chooses the
    // trust domain (certd init) first.
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/certd.service")
            .symlink_metadata()
            .is_err(),
        "the package enabled certd.service"
    );

    // The installed unit, its binary and its user fit together as systemd
    // reads them.
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze (package systemd)");
    let problems: Vec<&str> = std::str::from_utf8(&verify.stderr)
        .unwrap_or("")
        .lines()
        .filter(|line| line.contains(UNIT) || line.contains("certd"))
        .filter(|line| {
            [
                "Unknown",
                "Invalid",
                "Failed to",
                "not executable",
                "No such",
            ]
            .iter()
            .any(|problem| line.contains(problem))
        })
        .collect();
    assert!(
        verify.status.success() && problems.is_empty(),
        "systemd-analyze verify {UNIT}: {}",
        text(&verify)
    );
}

/// The `[Service]` section of a unit file: each key's values in order
/// (Environment= may be given several times).
struct ServiceSection(BTreeMap<String, Vec<String>>);

impl ServiceSection {
    fn read(path: &Path) -> ServiceSection {
        let unit = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let mut section = String::new();
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in unit.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            assert!(!line.ends_with('\\'), "{path:?}: continued lines: {line}");
            if section == "[Service]" {
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{path:?}: {line}"));
                keys.entry(key.trim().to_owned())
                    .or_default()
                    .push(value.trim().to_owned());
            }
        }
        ServiceSection(keys)
    }

    /// The one value of `key`.
    fn value(&self, key: &str) -> &str {
        match self.0.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("[Service] {key}: {other:?}"),
        }
    }

    /// `Environment=` assignments, in order.
    fn environment(&self) -> Vec<(String, String)> {
        self.0
            .get("Environment")
            .into_iter()
            .flatten()
            .flat_map(|line| line.split_whitespace())
            .map(|assignment| {
                assert!(
                    !assignment.contains('"'),
                    "quoted Environment=: {assignment}"
                );
                let (name, value) = assignment
                    .split_once('=')
                    .unwrap_or_else(|| panic!("Environment={assignment}"));
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }
}

/// The unit's ExecStart, and what it names.
struct StartCommand {
    argv: Vec<String>,
    config: PathBuf,
    data_dir: PathBuf,
}

impl StartCommand {
    fn of(unit: &ServiceSection) -> StartCommand {
        let line = unit.value("ExecStart");
        // systemd's quoting, specifiers and prefixes (-, @, +) are not what
        // certd's unit uses; were they, this reading would be wrong.
        assert!(
            !line.contains(['"', '\'', '%', '$']) && !line.starts_with(['-', '@', '+', '!', ':']),
            "ExecStart={line}"
        );
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        assert_eq!(argv.get(1).map(String::as_str), Some("serve"), "{argv:?}");
        let flag = |name: &str| {
            let at = argv
                .iter()
                .position(|arg| arg == name)
                .unwrap_or_else(|| panic!("ExecStart has no {name}: {argv:?}"));
            PathBuf::from(argv.get(at + 1).expect("a value"))
        };
        StartCommand {
            config: flag("--config"),
            data_dir: flag("--data-dir"),
            argv,
        }
    }
}

/// certd started as the unit starts it.
struct Served {
    child: Option<Child>,
    http: String,
    log: PathBuf,
}

impl Served {
    /// Runs the unit's ExecStart as its User and Group (setpriv), with its
    /// Environment and UMask and nothing else, the ports moved to ephemeral
    /// ones; returns once certd has written its ready line.
    fn start(unit: &ServiceSection, start: &StartCommand, tmp: &Path) -> Served {
        let (user, group) = (unit.value("User"), unit.value("Group"));
        let umask = unit.value("UMask");
        assert!(umask.chars().all(|c| c.is_ascii_digit()), "UMask={umask}");
        let log = tmp.join("certd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", user, "--regid", group, "--init-groups", "--"])
            // setpriv sets no umask; the shell does, then becomes certd.
            .args(["sh", "-c", &format!("umask {umask} && exec \"$@\""), "sh"])
            .args(&start.argv)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env_clear()
            // systemd's default for services.
            .env("PATH", SYSTEM_PATH)
            .envs(unit.environment())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = command.spawn().expect("run setpriv (util-linux)");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = ready
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let http = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix("http="))
            .map(str::to_owned);
        let Some(http) = http else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "certd did not become ready: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Served {
            child: Some(child),
            http,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A PATH with every program of the system's but `hidden`: a directory of
/// links in `tmp`.
fn path_without(hidden: &[&str], tmp: &Path) -> std::ffi::OsString {
    let bin = tmp.join("bin-without");
    std::fs::create_dir(&bin).unwrap();
    for dir in SYSTEM_PATH.split(':') {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let link = bin.join(&name);
            if hidden.iter().any(|h| name == *h) || link.symlink_metadata().is_ok() {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), link).unwrap();
        }
    }
    bin.into_os_string()
}

/// The CA's files in the data directory, with their contents.
fn ca_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(DATA_DIR).expect("the data directory") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") || name.ends_with(".pem") {
            files.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    assert!(files.contains_key("root.key"), "{:?}", files.keys());
    files
}

fn dpkg(args: &[&str]) -> Output {
    dpkg_with_path(args, std::ffi::OsStr::new(SYSTEM_PATH))
}

/// The PATH dpkg and the maintainer scripts run with (and systemd's
/// default for services).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn dpkg_with_path(args: &[&str], path: &std::ffi::OsStr) -> Output {
    Command::new("dpkg")
        .args(args)
        .env("PATH", path)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .expect("dpkg")
}

/// dpkg's abbreviated status of the package ("ii ", "rc "), or `None`
/// where dpkg does not know it.
fn package_status() -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}", PACKAGE])
        .output()
        .expect("dpkg-query");
    let status = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success() && !status.is_empty() && !status.starts_with("un")).then_some(status)
}

fn getent(database: &str, key: &str) -> Option<String> {
    let output = Command::new("getent")
        .args([database, key])
        .output()
        .expect("getent");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn user_exists(name: &str) -> bool {
    getent("passwd", name).is_some()
}

fn user_id(name: &str) -> u32 {
    id_field(&getent("passwd", name).expect("user"), 2)
}

fn group_id(name: &str) -> u32 {
    id_field(&getent("group", name).expect("group"), 2)
}

fn id_field(entry: &str, field: usize) -> u32 {
    entry
        .trim()
        .split(':')
        .nth(field)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in {entry}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
