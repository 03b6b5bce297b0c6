//! The outside clients tests run: Python (py-spiffe, grpcio, PyJWT) and
//! Node (`jose`) programs under `tests/python` and `tests/node`, each found
//! here or reported missing. Missing, a test prints a skip line, unless `CI`
//! or the client's `CERTD_REQUIRE_*` is set (as `.ci/run` does): then it
//! fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{stderr, stdout};

/// The absolute path of the Python interpreter (`python3` on PATH) if it can
/// import `modules` with an empty environment, as the scripts run. Missing:
/// `None` after a skip line, or a panic under `CI` or
/// `CERTD_REQUIRE_PYTHON_CLIENTS`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let imports = format!("import {}", modules.join(", "));
    let found = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(stdout(&output).trim()));
    let problem = match &found {
        None => "python3 is not on PATH or does not run".to_owned(),
        Some(python) => match Command::new(python)
            .args(["-B", "-c", &imports])
            .env_clear()
            .output()
        {
            Ok(output) if output.status.success() => return found,
            Ok(output) => format!(
                "{} cannot `{imports}`: {}",
                python.display(),
                stderr(&output).trim().lines().last().unwrap_or("")
            ),
            Err(error) => format!("cannot run {}: {error}", python.display()),
        },
    };
    let required = ["CI", "CERTD_REQUIRE_PYTHON_CLIENTS"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    assert!(
        !required,
        "the Python clients are required here (CI or CERTD_REQUIRE_PYTHON_CLIENTS is set) but \
         {problem}; install them as .ci/run does (python3 -m pip install …)"
    );
    eprintln!("skipping: {problem}");
    None
}

/// `python -B tests/python/NAME` with an empty environment and stdin closed.
pub fn script(python: &Path, name: &str) -> Command {
    let mut command = Command::new(python);
    command
        .arg("-B")
        .arg(script_path(name))
        .env_clear()
        .stdin(Stdio::null());
    command
}

pub fn script_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Whether `required_by` (`CI` or the variable named) asks that a missing
/// client fail the test instead of skipping it.
fn required(variable: &str) -> bool {
    ["CI", variable]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// `node` (on PATH) if it runs and `tests/node` has its packages installed
/// (`npm ci --prefix tests/node`); missing: `None` after a skip line, or a
/// panic under `CI` or `CERTD_REQUIRE_NODE_CLIENTS`.
pub fn node_with(package: &str) -> Option<PathBuf> {
    let installed = node_dir().join("node_modules").join(package);
    let problem = match Command::new("node").arg("--version").output() {
        Err(error) => format!("node does not run: {error}"),
        Ok(output) if !output.status.success() => "node does not run".to_owned(),
        Ok(_) if !installed.is_dir() => format!(
            "{} is missing (run `npm ci --prefix tests/node`)",
            installed.display()
        ),
        Ok(_) => return Some(PathBuf::from("node")),
    };
    assert!(
        !required("CERTD_REQUIRE_NODE_CLIENTS"),
        "the Node clients are required here (CI or CERTD_REQUIRE_NODE_CLIENTS is set) but {problem}"
    );
    eprintln!("skipping: {problem}");
    None
}

/// `node tests/node/NAME`, stdin closed.
pub fn node_script(node: &Path, name: &str) -> Command {
    let mut command = Command::new(node);
    command
        .arg(node_dir().join(name))
        .current_dir(node_dir())
        .stdin(Stdio::null());
    command
}

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// What an outside client script printed after `ok `, as JSON: it must
/// have succeeded and said `ok <json>` (else the test fails with what it said).
pub fn said_ok(output: &std::process::Output) -> serde_json::Value {
    let said = stdout(output);
    assert!(
        output.status.success() && said.starts_with("ok "),
        "{said}{}",
        stderr(output)
    );
    serde_json::from_str(said[3..].trim()).unwrap()
}
