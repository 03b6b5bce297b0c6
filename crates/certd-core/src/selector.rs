//! Selectors: the facts an attestor proves about a workload, such as
//! `k8s:ns:payments`, `token:billing-vm`, or (through a node agent, from
//! the kernel) `unix:uid:1000`.
//!
//! Owns the form every selector has (`kind:value`, at most 300
//! characters) and the parse against a set of [`SelectorKind`]s. It names
//! no kind: each attestor registers its own (`attest::catalog` in the
//! daemon), with the check of its values.

use std::fmt;

/// Longest selector certd accepts.
const MAX_SELECTOR_LEN: usize = 300;

/// One kind of selector (`k8s`, `token`, `unix`), as the attestor that
/// proves it registers it.
#[derive(Debug)]
pub struct SelectorKind {
    /// What selectors of this kind start with, before the first ':'.
    pub name: &'static str,
    /// Checks what follows `name:`: `Ok(false)` for a value of a known
    /// shape that is not valid, `Err` (saying what is known) for an
    /// unknown key.
    pub check: fn(&str) -> Result<bool, String>,
    /// Only a node agent proves it, from the kernel: an entry that
    /// requires it names its agent as parent.
    pub proven_by_agent: bool,
}

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
    /// `value` as a selector of one of `kinds`, or why it is not one.
    pub fn parse(value: &str, kinds: &[&SelectorKind]) -> Result<Self, String> {
        if value.len() > MAX_SELECTOR_LEN {
            return Err(format!(
                "selector is longer than {MAX_SELECTOR_LEN} characters"
            ));
        }
        let (kind, rest) = value.split_once(':').ok_or_else(|| {
            format!("selector {value:?} is not kind:value, e.g. k8s:ns:payments or token:billing")
        })?;
        let Some(known) = kinds.iter().find(|known| known.name == kind) else {
            let names: Vec<&str> = kinds.iter().map(|known| known.name).collect();
            return Err(format!(
                "selector {value:?} has unknown kind {kind:?}; known kinds: {}",
                names.join(", ")
            ));
        };
        check(known, rest, value)?;
        Ok(Selector(value.to_owned()))
    }

    /// `kind:rest`, checked by `kind`: how an attestor builds the
    /// selectors it proves (`rest` is formatted once, into the selector).
    pub fn of_kind(kind: &SelectorKind, rest: impl fmt::Display) -> Result<Self, String> {
        let value = format!("{}:{rest}", kind.name);
        if value.len() > MAX_SELECTOR_LEN {
            return Err(format!(
                "selector is longer than {MAX_SELECTOR_LEN} characters"
            ));
        }
        check(kind, &value[kind.name.len() + 1..], &value)?;
        Ok(Selector(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Its kind: what comes before the first ':'.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(kind, _)| kind)
    }

    /// Whether it is of `kind`.
    pub fn is(&self, kind: &SelectorKind) -> bool {
        self.kind() == kind.name
    }

    /// A selector certd stored after parsing it: trusted, not parsed again.
    /// Only for storage backends reading back what they wrote (`store::codec`):
    /// nothing else may skip the parse.
    #[doc(hidden)]
    pub fn from_stored(value: String) -> Self {
        Selector(value)
    }
}

/// Whether `rest`, the part of `value` after `kind:`, is one of `kind`'s.
fn check(kind: &SelectorKind, rest: &str, value: &str) -> Result<(), String> {
    if (kind.check)(rest)? {
        Ok(())
    } else {
        Err(format!("selector {value:?} has an invalid value"))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind of the tests' own: `test:` and a number.
    static NUMBERS: SelectorKind = SelectorKind {
        name: "test",
        check: |value| match value.split_once(':') {
            Some(("n", number)) => Ok(number.parse::<u8>().is_ok()),
            _ => Err(format!(
                "selector test:{value} has unknown key; known: test:n"
            )),
        },
        proven_by_agent: false,
    };
    static OTHER: SelectorKind = SelectorKind {
        name: "other",
        check: |_| Ok(true),
        proven_by_agent: true,
    };

    #[test]
    fn selectors_parse_against_the_kinds_given() {
        let kinds = [&NUMBERS, &OTHER];
        let selector = Selector::parse("test:n:7", &kinds).unwrap();
        assert_eq!(selector.as_str(), "test:n:7");
        assert_eq!(selector.kind(), "test");
        assert!(selector.is(&NUMBERS) && !selector.is(&OTHER));
        assert_eq!(
            Selector::of_kind(&NUMBERS, "n:8").unwrap().as_str(),
            "test:n:8"
        );
        for (value, says) in [
            ("payments", "not kind:value"),
            ("test:m:1", "unknown key"),
            ("test:n:300", "invalid value"),
            (
                "aws:iid:1",
                "unknown kind \"aws\"; known kinds: test, other",
            ),
        ] {
            let error = Selector::parse(value, &kinds).unwrap_err();
            assert!(error.contains(says), "{value}: {error}");
        }
        let long = format!("other:{}", "a".repeat(400));
        assert!(Selector::parse(&long, &kinds).is_err());
        assert!(Selector::of_kind(&OTHER, "a".repeat(400)).is_err());
        assert!(
            Selector::parse("test:n:1", &[&OTHER]).is_err(),
            "only the kinds given"
        );
    }
}
