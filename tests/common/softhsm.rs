//! A fresh SoftHSM2 token store with one token, for the PKCS#11 tests.
//! SoftHSM2 comes from the Debian package `softhsm2` (`.ci/run` installs
//! it). Without it the tests skip with one loud line, unless
//! `CERTD_REQUIRE_SOFTHSM` is set (as in CI), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::stderr;

pub const MODULE_PATHS: [&str; 2] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
];
pub const TOKEN: &str = "certd";
pub const PIN: &str = "4711-pin";

/// A fresh SoftHSM2 token store with one token, `certd`.
pub struct SoftHsm {
    pub config: PathBuf,
    pub module: PathBuf,
    pub pin_file: PathBuf,
}

impl SoftHsm {
    pub fn env(&self) -> [(&'static str, &Path); 1] {
        [("SOFTHSM2_CONF", self.config.as_path())]
    }
}

/// `None` (after one loud line) when SoftHSM2 is missing and not required.
pub fn softhsm(dir: &Path) -> Option<SoftHsm> {
    let module = MODULE_PATHS.iter().map(PathBuf::from).find(|p| p.exists());
    let util_runs = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let (Some(module), true) = (module, util_runs) else {
        let reason = "SoftHSM2 is not installed (apt-get install softhsm2; .ci/run does)";
        if std::env::var_os("CERTD_REQUIRE_SOFTHSM").is_some() {
            panic!("CERTD_REQUIRE_SOFTHSM is set, but {reason}");
        }
        eprintln!("SKIPPED: {reason}");
        return None;
    };
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let config = dir.join("softhsm2.conf");
    std::fs::write(
        &config,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--pin", PIN, "--so-pin", "so-secret"])
        .env("SOFTHSM2_CONF", &config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    Some(SoftHsm {
        config,
        module,
        pin_file,
    })
}
