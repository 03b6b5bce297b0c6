//! Careful file system operations: secret files that are never readable by
//! others, atomic replacement of files, durable directory entries, a file's
//! fingerprint, and the operating system's randomness.
//!
//! Everything that writes key material or must survive a crash goes through
//! here, so the rules live in one place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of private keys and other secrets.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of public files (certificates, bundles).
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of directories that hold secrets.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// What one `metadata` call says about a file: a replacement or a write
/// changes one of these, unless it reuses the inode number, with the same
/// size, within one clock tick. For telling that a file may have changed
/// without reading it (`ca::watched`, the agent's executable hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileFingerprint {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileFingerprint {
    pub fn of(metadata: &fs::Metadata) -> Self {
        FileFingerprint {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// The fingerprint of the file at `path`, if it can be read.
    pub fn of_path(path: &Path) -> Option<Self> {
        fs::metadata(path).ok().as_ref().map(Self::of)
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Fills `bytes` from the operating system's CSPRNG.
pub fn fill_random(bytes: &mut [u8]) {
    // getrandom only fails when the kernel has no entropy source at all, which
    // leaves a CA nothing safe to do: stopping is the only correct answer.
    getrandom::fill(bytes).expect("the operating system's random number generator failed");
}

/// Creates `dir` (and its parents) if missing, with mode 0700 when created.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Makes an existing directory private (0700) if others may read, write or
/// enter it, as a `git clone` or `mkdir` leaves one (0755); returns whether
/// it did.
pub fn narrow_to_private(dir: &Path) -> io::Result<bool> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    Ok(true)
}

/// Creates `path` with `contents`, failing if it exists. The mode is given at
/// creation, so the file is never briefly readable by anyone else.
pub fn create_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed the mode; an explicit chmod makes public
    // files readable as intended without ever widening a secret one.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Replaces `path` with `contents` atomically: a reader sees the old file or
/// the new one, never a mix, and the new one is on disk when this returns.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix);
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let written = create_new_file(&temporary, contents, mode).and_then(|()| {
        fs::rename(&temporary, path)?;
        sync_dir(dir)
    });
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Makes the entries of `dir` (files created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path`; `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_created_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        create_new_file(&path, b"secret", SECRET_FILE_MODE).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = create_new_file(&path, b"other", SECRET_FILE_MODE);
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
    }

    #[test]
    fn replace_file_swaps_contents_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        replace_file(&path, b"one", PUBLIC_FILE_MODE).unwrap();
        replace_file(&path, b"two", SECRET_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
