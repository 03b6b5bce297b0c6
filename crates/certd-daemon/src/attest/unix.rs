//! What a node agent proves about a process on its Workload API socket,
//! from the kernel (`SO_PEERCRED` and `/proc`): `unix:` selectors. Only an
//! agent proves them, so an entry that requires one names its agent as
//! parent. The agent builds them here (`agent::peer`); the daemon checks
//! entries against the same kind.

use crate::selector::{Selector, SelectorKind};

/// `unix:uid:<n>`, `unix:gid:<n>`, `unix:user:<name>`,
/// `unix:group:<name>`, `unix:path:<absolute path>` and
/// `unix:sha256:<64 lower-case hex digits>`.
pub static SELECTORS: SelectorKind = SelectorKind {
    name: "unix",
    check: unix_selector,
    proven_by_agent: true,
};

pub fn uid(uid: u32) -> Result<Selector, String> {
    Selector::of_kind(&SELECTORS, format_args!("uid:{uid}"))
}

pub fn gid(gid: u32) -> Result<Selector, String> {
    Selector::of_kind(&SELECTORS, format_args!("gid:{gid}"))
}

pub fn user(name: &str) -> Result<Selector, String> {
    Selector::of_kind(&SELECTORS, format_args!("user:{name}"))
}

pub fn group(name: &str) -> Result<Selector, String> {
    Selector::of_kind(&SELECTORS, format_args!("group:{name}"))
}

pub fn path(path: &str) -> Result<Selector, String> {
    Selector::of_kind(&SELECTORS, format_args!("path:{path}"))
}

pub fn sha256(digest: &[u8; 32]) -> Result<Selector, String> {
    Selector::of_kind(&SELECTORS, format_args!("sha256:{}", hex::encode(digest)))
}

/// The part after `unix:`; `Ok(false)` when the key is known but the value
/// is not.
fn unix_selector(rest: &str) -> Result<bool, String> {
    let (key, value) = rest.split_once(':').unwrap_or((rest, ""));
    match key {
        "uid" | "gid" => Ok(value.parse::<u32>().is_ok_and(|n| n.to_string() == value)),
        "user" | "group" => Ok(!value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'$'))),
        "path" => Ok(value.starts_with('/')
            && !value.bytes().any(|b| b.is_ascii_control())
            && !value
                .split('/')
                .any(|segment| segment == ".." || segment == ".")),
        "sha256" => Ok(value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
        _ => Err(format!(
            "selector unix:{rest} has unknown key {key:?}; known: unix:uid, unix:gid, unix:user, unix:group, unix:path, unix:sha256"
        )),
    }
}
