//! How an attestor is configured: the registration of each configurable
//! attestor (its kind, its section, the check of the section), and the
//! checked settings a `Config` carries without knowing their type.
//!
//! An attestor's section is `[attestors.<kind>]` in `certd.toml`; one that
//! had a top-level section before this existed (`[kubernetes]`) keeps it as
//! a second name. `config` hands each section, unread, to the attestor that
//! claims it (`configure`), and `Attestors::from_settings` starts what was
//! configured. Neither names an attestor.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::Attestor;

/// Every attestor that takes a configuration section. Adding one: a line
/// here, and its `Configurable` beside it.
pub(crate) static CONFIGURABLE: &[&Configurable] = &[&super::kubernetes::CONFIGURABLE];

/// A configurable attestor as certd registers it.
pub struct Configurable {
    /// Its kind, and the name of its section under `[attestors]`.
    pub kind: &'static str,
    /// A top-level section accepted as well, for configurations written
    /// before `[attestors]` (`kubernetes`).
    pub top_level_section: Option<&'static str>,
    /// What it accepts, for the refusal of a certd without its section
    /// ("Kubernetes service-account tokens").
    pub accepts: &'static str,
    /// The kind of selector its evidence proves (`k8s`).
    pub proves: &'static str,
    /// Checks the section.
    pub configure: Configure,
}

/// Checks a section; relative paths are resolved against the directory
/// given (the configuration file's).
pub type Configure =
    fn(section: toml::Table, base_dir: Option<&Path>) -> Result<Box<dyn Settings>, SectionError>;

impl Configurable {
    /// The section to write, as refusals name it: the top-level one where it
    /// exists (the one operators know), else `attestors.<kind>`.
    pub fn section(&self) -> String {
        match self.top_level_section {
            Some(name) => name.to_owned(),
            None => format!("attestors.{}", self.kind),
        }
    }
}

/// The registration of `kind`, if it is configurable.
pub(crate) fn configurable(kind: &str) -> Option<&'static Configurable> {
    CONFIGURABLE.iter().copied().find(|c| c.kind == kind)
}

/// What is wrong in an attestor's section: the field (within the section;
/// empty for the section as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionError {
    pub field: String,
    pub message: String,
}

/// An attestor's checked settings.
pub trait Settings: fmt::Debug + Send + Sync + 'static {
    /// Makes the attestor (reading its key files, say); the message says
    /// why it cannot.
    fn start(&self) -> Result<Arc<dyn Attestor>, String>;

    /// For comparing settings of one kind (`Config` is compared whole).
    fn as_any(&self) -> &dyn Any;

    /// Whether `other` is the same settings.
    fn same_as(&self, other: &dyn Settings) -> bool;
}

/// One configured attestor: its settings, and the section they were
/// written in (`kubernetes` or `attestors.kubernetes`), which errors name.
#[derive(Debug, Clone)]
struct Configured {
    section: String,
    settings: Arc<dyn Settings>,
}

/// The configured attestors' settings, by kind. Join tokens need none and
/// are always accepted.
#[derive(Debug, Clone, Default)]
pub struct ConfiguredAttestors {
    by_kind: BTreeMap<&'static str, Configured>,
}

impl ConfiguredAttestors {
    /// Adds `kind`'s settings, read from `section`.
    pub fn insert(&mut self, kind: &'static str, section: String, settings: Box<dyn Settings>) {
        let settings = Arc::from(settings);
        self.by_kind.insert(kind, Configured { section, settings });
    }

    /// The settings of `kind`, if it is configured.
    pub fn get(&self, kind: &str) -> Option<&dyn Settings> {
        self.by_kind
            .get(kind)
            .map(|configured| configured.settings.as_ref())
    }

    /// Each configured attestor: the section it was written in, and its
    /// settings.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &dyn Settings)> {
        self.by_kind
            .values()
            .map(|configured| (configured.section.as_str(), configured.settings.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }
}

impl PartialEq for ConfiguredAttestors {
    fn eq(&self, other: &Self) -> bool {
        self.by_kind.len() == other.by_kind.len()
            && self
                .by_kind
                .iter()
                .zip(&other.by_kind)
                .all(|((a_kind, a), (b_kind, b))| {
                    a_kind == b_kind && a.settings.same_as(b.settings.as_ref())
                })
    }
}
