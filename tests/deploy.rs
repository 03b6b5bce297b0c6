//! The systemd files in deploy/ are valid as systemd reads them: every unit
//! passes `systemd-analyze verify` (with ExecStart pointing at the built
//! binary, since /usr/local/bin/certd is not installed here), and the
//! sysusers.d file passes `systemd-sysusers --dry-run`. The Kubernetes
//! manifests are not checked here: no cluster and no schema are at hand.

mod common;

use std::path::Path;
use std::process::Command;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

#[test]
fn every_systemd_unit_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(deploy()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/certd", common::CERTD);
        // A template is verified as one instance of it.
        let name = name.replace("@.service", "@example.service");
        std::fs::write(tmp.path().join(&name), text).unwrap();
        units.push(name);
    }
    assert!(units.len() >= 3, "{units:?}");
    for unit in &units {
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(tmp.path().join(unit))
            .output()
            .expect("systemd-analyze (package systemd)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Warnings about the host (no running systemd, missing users or
        // files the unit creates) are not the unit's; these are.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|line| {
                line.contains("Unknown key")
                    || line.contains("Unknown section")
                    || line.contains("Invalid")
                    || line.contains("Failed to parse")
                    || line.contains("is not executable")
            })
            .collect();
        assert!(
            output.status.success() && problems.is_empty(),
            "{unit}: {stderr}"
        );
    }
}

#[test]
fn the_sysusers_file_is_valid() {
    let output = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(deploy().join("certd.sysusers.conf"))
        .output()
        .expect("systemd-sysusers (package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
}
