//! Selectors: the facts an attestor proves about a workload, such as
//! `k8s:ns:payments`, `token:billing-vm`, or (through a node agent, from
//! the kernel) `unix:uid:1000`.

use std::fmt;
use std::str::FromStr;

use crate::identity::is_dns_name;

/// Longest selector certd accepts.
const MAX_SELECTOR_LEN: usize = 300;

/// A selector in canonical form. Only kinds some attestor can prove are
/// accepted, so an entry can never wait on a selector nothing proves.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector(String);

impl fmt::Debug for Selector {
    /// As the string it is, so logs read `"k8s:ns:payments"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Selector {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// A selector certd stored after parsing it: trusted, not parsed again.
    /// Only for storage backends reading back what they wrote (`store::codec`):
    /// nothing else may skip the parse.
    #[doc(hidden)]
    pub fn from_stored(value: String) -> Self {
        Selector(value)
    }

    /// What the join-token attestor proves: `token:<label>`.
    pub fn is_token(&self) -> bool {
        self.0.starts_with("token:")
    }

    /// What only a node agent proves, from the kernel: `unix:...`.
    pub fn is_unix(&self) -> bool {
        self.0.starts_with("unix:")
    }

    pub fn unix_uid(uid: u32) -> Self {
        Selector(format!("unix:uid:{uid}"))
    }

    pub fn unix_gid(gid: u32) -> Self {
        Selector(format!("unix:gid:{gid}"))
    }

    pub fn unix_user(name: &str) -> Result<Self, String> {
        format!("unix:user:{name}").parse()
    }

    pub fn unix_group(name: &str) -> Result<Self, String> {
        format!("unix:group:{name}").parse()
    }

    pub fn unix_path(path: &str) -> Result<Self, String> {
        format!("unix:path:{path}").parse()
    }

    pub fn unix_sha256(digest: &[u8; 32]) -> Self {
        Selector(format!("unix:sha256:{}", hex::encode(digest)))
    }

    pub fn k8s_namespace(namespace: &str) -> Result<Self, String> {
        format!("k8s:ns:{namespace}").parse()
    }

    pub fn k8s_service_account(name: &str) -> Result<Self, String> {
        format!("k8s:sa:{name}").parse()
    }

    pub fn k8s_pod_name(name: &str) -> Result<Self, String> {
        format!("k8s:pod-name:{name}").parse()
    }

    pub fn k8s_pod_uid(uid: &str) -> Result<Self, String> {
        format!("k8s:pod-uid:{uid}").parse()
    }

    pub fn k8s_node_name(name: &str) -> Result<Self, String> {
        format!("k8s:node-name:{name}").parse()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() > MAX_SELECTOR_LEN {
            return Err(format!(
                "selector is longer than {MAX_SELECTOR_LEN} characters"
            ));
        }
        let (kind, rest) = value.split_once(':').ok_or_else(|| {
            format!("selector {value:?} is not kind:value, e.g. k8s:ns:payments or token:billing")
        })?;
        let valid = match kind {
            "k8s" => k8s_selector(rest)?,
            "token" => is_label(rest),
            "unix" => unix_selector(rest)?,
            _ => {
                return Err(format!(
                    "selector {value:?} has unknown kind {kind:?}; known kinds: k8s, token, unix"
                ));
            }
        };
        if !valid {
            return Err(format!("selector {value:?} has an invalid value"));
        }
        Ok(Selector(value.to_owned()))
    }
}

/// `ns:<namespace>`, `sa:<service account>`, `pod-name:<name>`,
/// `pod-uid:<uid>` or `node-name:<name>`; `Ok(false)` when the key is known but the value is not.
fn k8s_selector(rest: &str) -> Result<bool, String> {
    let (key, value) = rest.split_once(':').unwrap_or((rest, ""));
    match key {
        // Kubernetes object names are lower-case RFC 1123 subdomains.
        "ns" | "sa" | "pod-name" | "node-name" => Ok(is_dns_name(value)),
        "pod-uid" => Ok(!value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')),
        _ => Err(format!(
            "selector k8s:{rest} has unknown key {key:?}; known: k8s:ns, k8s:sa, k8s:pod-name, k8s:pod-uid, k8s:node-name"
        )),
    }
}

/// `uid:<n>`, `gid:<n>`, `user:<name>`, `group:<name>`, `path:<absolute
/// path>` or `sha256:<64 lower-case hex digits>`, as a node agent reads
/// them from the kernel.
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

/// A token label: 1-128 of letters, digits, '.', '_' and '-'.
fn is_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_parse() {
        for value in [
            "k8s:ns:payments",
            "k8s:sa:billing",
            "k8s:pod-name:billing-7d9f.x",
            "k8s:pod-uid:0b1c2d3e-aaaa-bbbb-cccc-1234567890ab",
            "k8s:node-name:node-1.example",
            "token:billing-vm",
            "token:Host_1.a",
            "unix:uid:1000",
            "unix:gid:0",
            "unix:user:www-data",
            "unix:group:nogroup",
            "unix:path:/usr/bin/billing",
            "unix:sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert_eq!(value.parse::<Selector>().unwrap().as_str(), value);
        }
    }

    #[test]
    fn malformed_or_unprovable_selectors_are_refused_with_a_reason() {
        for (value, says) in [
            ("payments", "not kind:value"),
            ("k8s:namespace:payments", "unknown key"),
            ("k8s:ns:Payments", "invalid value"),
            ("k8s:ns:", "invalid value"),
            ("k8s:sa:-x", "invalid value"),
            ("token:", "invalid value"),
            ("token:a b", "invalid value"),
            ("unix:uid:-1", "invalid value"),
            ("unix:uid:01", "invalid value"),
            ("unix:path:bin/x", "invalid value"),
            ("unix:path:/a/../b", "invalid value"),
            ("unix:sha256:ABC", "invalid value"),
            ("unix:pid:1", "unknown key"),
            ("aws:iid:1", "unknown kind"),
        ] {
            let error = value.parse::<Selector>().unwrap_err();
            assert!(error.contains(says), "{value}: {error}");
        }
        assert!(
            format!("token:{}", "a".repeat(400))
                .parse::<Selector>()
                .is_err()
        );
    }
}
