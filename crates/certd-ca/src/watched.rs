//! A file the daemon serves from but never writes (`root.crl`,
//! `root-next.crl`, `bundle.pem`): read again when its content changes, so
//! that a new one takes effect at the next use, without a restart. A file
//! that does not parse is logged once and the last good value kept.
//!
//! A change is found by content, never by modification time alone: a file
//! renamed over another written in the same clock tick keeps its mtime
//! (`certd ca retire-root` renames `root-next.crl`, signed together with
//! `root.crl`, over it). Each use costs one `metadata` call: when the
//! file's fingerprint (device, inode, size, mtime, ctime) differs from the
//! last read's, the file is read at once; and it is read at least every
//! second anyway, so that even a replacement reusing the inode number
//! within one tick (the same fingerprint) is served within a second. Bytes
//! equal to the last read are not parsed again; a parsed value equal to the
//! one held is kept as it is (its `Arc` unchanged).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certd_core::fsutil::FileFingerprint;

/// How long the file may go unread while its fingerprint stays the same.
const REREAD_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct WatchedFile<T> {
    path: PathBuf,
    /// What the file holds, for the log.
    what: &'static str,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// The file's fingerprint at the last read; `None` before the first.
    fingerprint: Option<FileFingerprint>,
    /// When the file was last read.
    read_at: Option<Instant>,
    /// The bytes last read, good or not, so that unchanged bytes are
    /// neither parsed nor logged again.
    bytes: Option<Vec<u8>>,
    /// The last good value.
    value: Option<Arc<T>>,
}

impl<T: PartialEq> WatchedFile<T> {
    /// `initial`: the value already read and checked at load, if any.
    pub fn new(path: PathBuf, what: &'static str, initial: Option<T>) -> Self {
        WatchedFile {
            path,
            what,
            state: Mutex::new(State {
                fingerprint: None,
                read_at: None,
                bytes: None,
                value: initial.map(Arc::new),
            }),
        }
    }

    /// The value now: read again with `parse` if the file may have changed
    /// since the last read; `None` if there has never been a good one.
    pub fn current(&self, parse: impl FnOnce(&[u8]) -> Result<T, String>) -> Option<Arc<T>> {
        self.current_at(Instant::now(), parse)
    }

    fn current_at(
        &self,
        now: Instant,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Option<Arc<T>> {
        // A file that is gone (or unreadable) keeps the last good value.
        let fingerprint = FileFingerprint::of_path(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(fingerprint) = fingerprint else {
            return state.value.clone();
        };
        let due = state
            .read_at
            .is_none_or(|read_at| now.saturating_duration_since(read_at) >= REREAD_AT_LEAST_EVERY);
        if state.fingerprint == Some(fingerprint) && !due {
            return state.value.clone();
        }
        state.fingerprint = Some(fingerprint);
        state.read_at = Some(now);
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Gone between the two calls: the next use looks again.
                state.fingerprint = None;
                tracing::debug!(path = %self.path.display(), error = %certd_core::error_kind::with_causes(&error), "cannot read {}", self.what);
                return state.value.clone();
            }
        };
        if state.bytes.as_deref() == Some(&bytes[..]) {
            return state.value.clone();
        }
        let parsed = parse(&bytes);
        state.bytes = Some(bytes);
        match parsed {
            Ok(value) if state.value.as_deref() != Some(&value) => {
                if state.value.is_some() {
                    tracing::info!(path = %self.path.display(), "{} changed; serving the new one", self.what);
                }
                state.value = Some(Arc::new(value));
            }
            Ok(_) => {}
            Err(reason) => tracing::error!(
                path = %self.path.display(),
                %reason,
                "{} file is not acceptable; serving the last good one, if any",
                self.what
            ),
        }
        state.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn text(bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }

    /// Writes `contents` to a new file beside `path` and renames it over
    /// `path`, as `fsutil::replace_file` does, with the modification time
    /// of the file it replaces: the same tick, as for two files written
    /// together.
    fn rename_over_with_the_same_mtime(path: &Path, contents: &str) {
        let modified = std::fs::metadata(path).unwrap().modified().unwrap();
        let staged = path.with_extension("staged");
        std::fs::write(&staged, contents).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&staged, path).unwrap();
        assert_eq!(
            std::fs::metadata(path).unwrap().modified().unwrap(),
            modified
        );
    }

    #[test]
    fn a_file_renamed_over_with_the_same_mtime_and_size_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.crl");
        std::fs::write(&path, "old root's").unwrap();
        let file = WatchedFile::new(path.clone(), "the root CRL", None);
        assert_eq!(file.current(text).as_deref().unwrap(), "old root's");

        rename_over_with_the_same_mtime(&path, "new root's");
        assert_eq!(file.current(text).as_deref().unwrap(), "new root's");
        // Unchanged: the same value, not parsed again.
        let served = file.current(text).unwrap();
        assert!(Arc::ptr_eq(
            &served,
            &file.current(|_| panic!("parsed again")).unwrap()
        ));
    }

    /// A change that leaves the fingerprint as it was (an inode number
    /// reused within one tick) is served within a second, not later.
    #[test]
    fn a_change_the_fingerprint_misses_is_served_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, "first").unwrap();
        let file = WatchedFile::new(path.clone(), "the trust bundle", None);
        let start = Instant::now();
        assert_eq!(file.current_at(start, text).as_deref().unwrap(), "first");

        std::fs::write(&path, "again").unwrap();
        // As if the write had left the fingerprint as it was.
        file.state.lock().unwrap().fingerprint = FileFingerprint::of_path(&path);
        let soon = start + Duration::from_millis(500);
        assert_eq!(file.current_at(soon, text).as_deref().unwrap(), "first");
        let later = start + REREAD_AT_LEAST_EVERY;
        assert_eq!(file.current_at(later, text).as_deref().unwrap(), "again");
    }

    #[test]
    fn a_bad_or_missing_file_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.crl");
        let file = WatchedFile::new(path.clone(), "the root CRL", Some("loaded".to_owned()));
        assert_eq!(file.current(text).as_deref().unwrap(), "loaded");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert_eq!(file.current(text).as_deref().unwrap(), "loaded");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.current(text).as_deref().unwrap(), "loaded");
        std::fs::write(&path, "written").unwrap();
        assert_eq!(file.current(text).as_deref().unwrap(), "written");
    }
}
