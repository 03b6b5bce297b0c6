//! A file the daemon serves from but never writes (`root.crl`,
//! `bundle.pem`): read again whenever its modification time changes, so
//! that a new one takes effect at the next use, without a restart. A file
//! that does not parse is logged once and the last good value kept.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug)]
pub struct WatchedFile<T> {
    path: PathBuf,
    /// What the file holds, for the log.
    what: &'static str,
    /// The modification time last read, and the last good value.
    state: Mutex<(Option<SystemTime>, Option<Arc<T>>)>,
}

impl<T: PartialEq> WatchedFile<T> {
    /// `initial`: the value already read and checked at load, if any.
    pub fn new(path: PathBuf, what: &'static str, initial: Option<T>) -> Self {
        let modified = initial.as_ref().and_then(|_| modified(&path));
        WatchedFile {
            path,
            what,
            state: Mutex::new((modified, initial.map(Arc::new))),
        }
    }

    /// The value now: read again with `parse` if the file changed since
    /// the last read; `None` if there has never been a good one.
    pub fn current(&self, parse: impl FnOnce(&[u8]) -> Result<T, String>) -> Option<Arc<T>> {
        let modified = modified(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if modified.is_some() && state.0 != modified {
            state.0 = modified;
            let read = std::fs::read(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| parse(&bytes));
            match read {
                Ok(value) if state.1.as_deref() != Some(&value) => {
                    if state.1.is_some() {
                        tracing::info!(path = %self.path.display(), "{} changed; serving the new one", self.what);
                    }
                    state.1 = Some(Arc::new(value));
                }
                Ok(_) => {}
                Err(reason) => tracing::error!(
                    path = %self.path.display(),
                    %reason,
                    "{} file is not acceptable; serving the last good one, if any",
                    self.what
                ),
            }
        }
        state.1.clone()
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
