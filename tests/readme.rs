//! The docs never lie: the `sh` blocks of the README's quick taste, the
//! tutorial, every guide, and the operations pages that hold any (CA
//! rotation, protected CA keys) run here as written, in that order and in
//! one shell, against `certd serve` started as the quick start starts it
//! (default data directory, in a fresh working directory; ports of its own,
//! substituted for the docs' own), with `certd` on the PATH. A block that
//! cannot run here (a cluster, systemd, a stopped daemon) is fenced as
//! `console` or `text` instead; no page left out of the run may hold an `sh`
//! block.
//!
//! Every `certd` command must succeed (no `certd: error:` line, unless the
//! page shows that very error), and every comment that directly follows a
//! command, which is how the docs show expected output, must appear in the
//! output (`…` stands for anything).
//!
//! And every relative link in the README and under `docs/` reaches a file,
//! and its `#anchor` a heading of that file.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::docs::{expected_output, fenced_blocks, shows};

/// A page whose `sh` blocks run: all of them, or those of one section.
struct Page {
    /// Relative to the repository root.
    path: &'static str,
    /// `Some(heading)`: only the blocks of that section run.
    section: Option<&'static str>,
    /// Needs SoftHSM2 (package softhsm2; `.ci/run` installs it). Without it
    /// the page is skipped with one loud line, unless
    /// `CERTD_REQUIRE_SOFTHSM` is set (as in CI), where the test fails.
    needs_softhsm: bool,
}

impl Page {
    const fn whole(path: &'static str) -> Self {
        Page {
            path,
            section: None,
            needs_softhsm: false,
        }
    }
}

/// The pages that run, in order: each may use what earlier ones made (the
/// tutorial's `billing` certificate, the service-token guide's
/// `policy.toml`, …).
const PAGES: [Page; 11] = [
    Page {
        path: "README.md",
        section: Some("## Issue and revoke in a minute"),
        needs_softhsm: false,
    },
    Page::whole("docs/tutorial.md"),
    Page::whole("docs/guides/entries-and-attestation.md"),
    Page::whole("docs/guides/node-agent.md"),
    Page::whole("docs/guides/jwt-svids.md"),
    Page::whole("docs/guides/service-tokens.md"),
    Page::whole("docs/guides/token-exchange.md"),
    Page::whole("docs/guides/relying-parties.md"),
    Page::whole("docs/guides/federation.md"),
    Page::whole("docs/operations/ca-rotation.md"),
    Page {
        path: "docs/operations/keys-and-hsm.md",
        section: None,
        needs_softhsm: true,
    },
];

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn softhsm_available() -> bool {
    let found = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CERTD_REQUIRE_SOFTHSM").is_none(),
            "CERTD_REQUIRE_SOFTHSM is set, but SoftHSM2 is not installed"
        );
        for page in PAGES.iter().filter(|page| page.needs_softhsm) {
            eprintln!(
                "SKIPPED: {}: SoftHSM2 is not installed (apt-get install softhsm2)",
                page.path
            );
        }
    }
    found
}

/// The section headed `heading` (up to the next heading of its level).
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let section = &text[start + heading.len() + 2..];
    &section[..section.find("\n## ").unwrap_or(section.len())]
}

/// The blocks of `page` that run.
fn blocks_of(page: &Page) -> Vec<String> {
    let text = read(&repository().join(page.path));
    fenced_blocks(
        page.section
            .map_or(&text, |heading| section(&text, heading)),
        "sh",
    )
}

/// Every Markdown file of the docs: the README and everything under `docs/`.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    let mut found = vec![repository().join("README.md")];
    walk(&repository().join("docs"), &mut found);
    found
}

#[test]
fn the_docs_commands_run_as_written() {
    let with_softhsm = softhsm_available();
    let blocks: Vec<String> = PAGES
        .iter()
        .filter(|page| with_softhsm || !page.needs_softhsm)
        .flat_map(|page| {
            let blocks = blocks_of(page);
            assert!(!blocks.is_empty(), "{} has no sh block", page.path);
            blocks
        })
        .collect();

    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::CERTD, bin.join("certd")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // The quick start's first command, from the same directory, but on
    // ports of its own: the docs' 8443 and 8080 may well be serving the
    // reader's own certd while they run these tests. The script gets the
    // ports it was given in place of the docs' (and a free one for its
    // TLS server in place of 9443); nothing else is changed.
    let mut server = Command::new(common::CERTD)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .current_dir(work.path())
        .env_remove("CERTD_DATA_DIR")
        .env_remove("CERTD_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start certd serve");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let field = |name: &str| -> String {
        ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("certd serve did not start: {ready:?}"))
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let (grpc_port, http_port) = (field("grpc"), field("http"));
    let tls_port = common::free_port_below_ephemeral_range().to_string();

    // One shell for all blocks, as one terminal would be; background jobs
    // (s_server, renew --daemon, the agent) end with it.
    let script = format!(
        "exec 2>&1\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n{}",
        blocks.join("\n")
    )
    .replace("127.0.0.1:8443", &format!("127.0.0.1:{grpc_port}"))
    .replace("127.0.0.1:8080", &format!("127.0.0.1:{http_port}"))
    .replace("9443", &tls_port);
    let mut shell = Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .current_dir(work.path())
        .env("PATH", &path)
        .env_remove("CERTD_DATA_DIR")
        .env_remove("CERTD_SERVER")
        .env_remove("CERTD_CA_BUNDLE")
        .env_remove("CERTD_JOIN_TOKEN")
        .env_remove("CERTD_KEY_PASSPHRASE_FILE")
        .env_remove("CERTD_PKCS11_PIN_FILE")
        .env_remove("SOFTHSM2_CONF")
        // Held open, as a terminal's is: `openssl s_server` quits at the
        // end of its input.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run bash");
    let terminal = shell.stdin.take();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut shell.stdout.take().unwrap(), &mut text).unwrap();
    drop(terminal);
    let _ = shell.wait();
    let _ = server.kill();
    let _ = server.wait();

    let expected: Vec<String> = blocks.iter().flat_map(|b| expected_output(b)).collect();
    // An error is a failure unless the page shows that very error.
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("certd: error"))
        .filter(|line| {
            !expected
                .iter()
                .any(|promised| promised.starts_with("certd: error") && shows(line, promised))
        })
        .collect();
    assert!(
        errors.is_empty(),
        "a documented command failed: {errors:?}\n{text}"
    );
    assert!(expected.len() >= 35, "expected outputs found: {expected:?}");
    for line in &expected {
        assert!(
            shows(&text, line),
            "the docs promise {line:?}, which the commands did not print:\n{text}"
        );
    }
}

#[test]
fn expected_output_is_the_comments_right_after_a_command() {
    let block =
        "# explains\ncertd x \\\n    --y\n# shown one\n# shown two\n\n# explains again\nls\n";
    assert_eq!(expected_output(block), ["shown one", "shown two"]);
    assert!(shows(
        "issued spiffe://td/svc/b serial 5c until 2026 in b",
        "issued spiffe://td/svc/b serial … until … in b"
    ));
    assert!(!shows(
        "issued spiffe://td/svc/c serial 5c",
        "issued spiffe://td/svc/b serial …"
    ));
}

/// Pages whose `sh` blocks another test runs as written, with that test.
const RUN_ELSEWHERE: [(&str, &str); 2] = [
    (
        "docs/operations/monitoring-alerts.md",
        "tests/monitoring.rs (promtool against the rules and a live certd)",
    ),
    (
        "docs/guides/acme.md",
        "tests/acme.rs (lego and certbot against a certd with the guide's [acme.testing])",
    ),
];

/// Every `sh` block in the docs runs: a page left out of `PAGES` holds none
/// (unless another test runs it: `RUN_ELSEWHERE`), and the README's only
/// others are the quick start's, which CI runs itself (`.ci/run`).
#[test]
fn no_sh_block_is_left_out_of_the_run() {
    for file in markdown_files() {
        let relative = file.strip_prefix(repository()).unwrap();
        let text = read(&file);
        if RUN_ELSEWHERE
            .iter()
            .any(|(page, _)| Path::new(page) == relative)
        {
            continue;
        }
        let all = fenced_blocks(&text, "sh").len();
        let run = match PAGES.iter().find(|page| Path::new(page.path) == relative) {
            None => 0,
            Some(page) => blocks_of(page).len(),
        };
        let quick_start = if relative == Path::new("README.md") {
            fenced_blocks(section(&text, "## Quick start"), "sh").len()
        } else {
            0
        };
        assert_eq!(
            all,
            run + quick_start,
            "{} holds an sh block that tests/readme.rs does not run: add the page to PAGES, \
             or fence a block that cannot run here as console or text",
            relative.display()
        );
    }
}

/// Every relative link of the README and of the pages under `docs/` points
/// to a file (or folder) that exists, and a `#anchor` to a heading of that
/// file, as GitHub names headings.
#[test]
fn every_relative_link_reaches_a_file_and_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        for target in relative_links(&text) {
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let relative = file.strip_prefix(repository()).unwrap().display();
            if !linked.exists() {
                broken.push(format!("{relative}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor
                && !(linked.is_file() && anchors(&read(&linked)).iter().any(|a| a == anchor))
            {
                broken.push(format!("{relative}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 100, "only {checked} relative links found");
}

/// The targets of the inline links `[text](target)` outside code (fenced
/// blocks and `code spans`) that do not name a scheme.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Code spans never hold links: drop them (the odd pieces).
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                links.push(target.to_owned());
            }
            rest = &rest[end..];
        }
    }
    links
}

/// The anchors GitHub gives the headings of `text`: lower case, spaces as
/// `-`, punctuation other than `-` and `_` dropped, and `-1`, `-2`, … after
/// a repeated one.
fn anchors(text: &str) -> Vec<String> {
    let mut anchors: Vec<String> = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_fence {
            continue;
        }
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let anchor = anchor_of(heading.trim());
        let repeats = anchors
            .iter()
            .filter(|a| {
                **a == anchor
                    || a.strip_prefix(&format!("{anchor}-"))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        anchors.push(if repeats == 0 {
            anchor
        } else {
            format!("{anchor}-{repeats}")
        });
    }
    anchors
}

fn anchor_of(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn links_and_anchors_are_read_as_github_does() {
    assert_eq!(
        anchor_of("JWT-SVIDs: tokens for hops without mTLS"),
        "jwt-svids-tokens-for-hops-without-mtls"
    );
    assert_eq!(
        anchor_of("Durability: what \"on disk\" means"),
        "durability-what-on-disk-means"
    );
    assert_eq!(anchor_of("`certd.toml` and [ca]"), "certdtoml-and-ca");
    assert_eq!(
        anchors("# A\n```sh\n# not a heading\n```\n## A\n#no\n### b_c\n"),
        ["a", "a-1", "b_c"]
    );
    assert_eq!(
        relative_links(
            "see [x](a.md#b) and [y](https://e.com), `[z](code.md)`\n```\n[w](fenced.md)\n```\n[v](../c/)"
        ),
        ["a.md#b", "../c/"]
    );
}
