//! Workload attestation by the kernel: what a process connected to the
//! agent's socket is, as selectors.
//!
//! The kernel gives the peer's pid, uid and gid with the connection
//! (`SO_PEERCRED`, read by tokio when the connection is accepted); /proc
//! gives its executable, which is hashed up to a size bound. Workloads hold
//! no secret: nothing they send is believed.
//!
//! A pid can be reused once its process exits, so a reading of /proc is
//! believed only if (1) the process's start time is the same before and
//! after the reading, (2) its real uid and gid are the ones the kernel
//! reported for the socket, and (3) it started before the connection was
//! accepted (a process that did not exist then cannot be the peer). This
//! module reads /proc and /etc/passwd and /etc/group; it writes nothing.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::fsutil::FileFingerprint;

use crate::attest::unix;
use crate::selector::Selector;

/// Executables larger than this are not hashed (no `unix:sha256`
/// selector), so one workload cannot make the agent read gigabytes.
pub(crate) const MAX_HASHED_EXECUTABLE: u64 = 256 * 1024 * 1024;
/// Clock ticks per second of /proc/<pid>/stat's start time (USER_HZ,
/// 100 on every Linux architecture).
const CLOCK_TICKS_PER_SECOND: u64 = 100;
/// How far a process's start may seem to lie after its connection's
/// acceptance: /proc/stat's boot time has one-second resolution.
const START_TIME_SLACK: Duration = Duration::from_secs(1);

/// Most executables whose hash is remembered.
const MAX_REMEMBERED_HASHES: usize = 1024;

/// SHA-256s of executables already hashed, by file identity (device,
/// inode, size, modification and change times: any write changes the
/// change time, which no user can set back), so that a workload's every
/// call does not re-read its executable.
#[derive(Debug, Default)]
pub struct ExecutableHashes {
    known: Mutex<HashMap<FileFingerprint, [u8; 32]>>,
}

impl ExecutableHashes {
    /// SHA-256 of the file, or `None` when it is larger than the bound.
    fn hash(&self, path: &Path) -> std::io::Result<Option<[u8; 32]>> {
        let file = std::fs::File::open(path)?;
        let identity = FileFingerprint::of(&file.metadata()?);
        if identity.size() > MAX_HASHED_EXECUTABLE {
            return Ok(None);
        }
        if let Some(digest) = self.lock().get(&identity) {
            return Ok(Some(*digest));
        }
        let Some(digest) = hash_file(file)? else {
            return Ok(None);
        };
        // The file may have changed while it was read; remember the digest
        // only under the identity it still has.
        let mut known = self.lock();
        if known.len() >= MAX_REMEMBERED_HASHES {
            known.clear();
        }
        known.insert(identity, digest);
        Ok(Some(digest))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileFingerprint, [u8; 32]>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the kernel said about a connection's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// When the agent accepted the connection.
    pub accepted_at: SystemTime,
}

/// Why a peer could not be attested. The workload gets this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("the kernel gave no credentials for this connection")]
    NoCredentials,
    #[error("process {pid} exited or its pid was reused while it was being attested")]
    Vanished { pid: i32 },
}

/// The selectors the kernel proves about `peer`: `unix:uid`, `unix:gid`,
/// `unix:user` and `unix:group` (where the names exist), and, given a pid,
/// `unix:path` and, with `hashes` (only when some entry asks for one: it
/// reads the whole executable the first time), `unix:sha256` (up to
/// `MAX_HASHED_EXECUTABLE` bytes).
pub fn selectors_of(
    peer: &PeerCredentials,
    hashes: Option<&ExecutableHashes>,
) -> Result<Vec<Selector>, PeerError> {
    selectors_from(peer, hashes, Path::new("/proc"), Path::new("/etc"))
}

fn selectors_from(
    peer: &PeerCredentials,
    hashes: Option<&ExecutableHashes>,
    proc_root: &Path,
    etc: &Path,
) -> Result<Vec<Selector>, PeerError> {
    // A formatted number is always a valid uid or gid selector.
    let mut selectors: Vec<Selector> = [unix::uid(peer.uid), unix::gid(peer.gid)]
        .into_iter()
        .flatten()
        .collect();
    if let Some(name) = name_of(&etc.join("passwd"), peer.uid)
        && let Ok(selector) = unix::user(&name)
    {
        selectors.push(selector);
    }
    if let Some(name) = name_of(&etc.join("group"), peer.gid)
        && let Ok(selector) = unix::group(&name)
    {
        selectors.push(selector);
    }
    if let Some(pid) = peer.pid.filter(|pid| *pid > 0) {
        selectors.extend(executable_selectors(peer, pid, hashes, proc_root)?);
    }
    selectors.sort();
    selectors.dedup();
    Ok(selectors)
}

/// `unix:path` and `unix:sha256` of process `pid`, checked against pid
/// reuse as the module says; none where the agent may not read them.
fn executable_selectors(
    peer: &PeerCredentials,
    pid: i32,
    hashes: Option<&ExecutableHashes>,
    proc_root: &Path,
) -> Result<Vec<Selector>, PeerError> {
    let process = proc_root.join(pid.to_string());
    let started = start_ticks(&process).ok_or(PeerError::Vanished { pid })?;
    let (uid, gid) = real_ids(&process).ok_or(PeerError::Vanished { pid })?;
    if (uid, gid) != (peer.uid, peer.gid) {
        return Err(PeerError::Vanished { pid });
    }
    if let Some(boot) = boot_time(proc_root) {
        let start = boot + Duration::from_millis(started * 1000 / CLOCK_TICKS_PER_SECOND);
        if start > peer.accepted_at + START_TIME_SLACK {
            return Err(PeerError::Vanished { pid });
        }
    }
    // Another user's executable can be read only with CAP_SYS_PTRACE (or
    // as root). Without it the caller is attested by uid and gid alone, and
    // entries that require its executable do not match.
    let mut selectors = Vec::new();
    match std::fs::read_link(process.join("exe")) {
        Ok(path) => selectors.extend(path_selector(&path)),
        Err(error) => {
            tracing::debug!(pid, error = %crate::error_kind::with_causes(&error), "cannot read the executable's path");
            return Ok(selectors);
        }
    }
    // /proc/<pid>/exe opens the very file the process runs, even if its
    // path has since been replaced.
    if let Some(hashes) = hashes {
        match hashes.hash(&process.join("exe")) {
            Ok(Some(digest)) => selectors.extend(unix::sha256(&digest).ok()),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(pid, error = %crate::error_kind::with_causes(&error), "cannot hash the executable")
            }
        }
    }
    if start_ticks(&process) != Some(started) {
        return Err(PeerError::Vanished { pid });
    }
    Ok(selectors)
}

/// `unix:path:<path>`; none for a path that is not a plain absolute one
/// (the kernel appends " (deleted)" to a removed executable).
fn path_selector(path: &Path) -> Option<Selector> {
    let text = path.to_str()?;
    if text.ends_with(" (deleted)") {
        return None;
    }
    unix::path(text).ok()
}

/// SHA-256 of the file, or `None` when it is larger than the bound.
fn hash_file(file: std::fs::File) -> std::io::Result<Option<[u8; 32]>> {
    let mut hasher = Sha256::new();
    let mut reader = file.take(MAX_HASHED_EXECUTABLE + 1);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        total += read as u64;
        hasher.update(&buffer[..read]);
    }
    if total > MAX_HASHED_EXECUTABLE {
        return Ok(None);
    }
    Ok(Some(hasher.finalize().into()))
}

/// Field 22 of /proc/<pid>/stat: the start time in clock ticks after boot.
fn start_ticks(process: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(process.join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces
    // and parentheses itself; the fields after it are plain.
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The real uid and gid from /proc/<pid>/status.
fn real_ids(process: &Path) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(process.join("status")).ok()?;
    let first_number = |key: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((first_number("Uid:")?, first_number("Gid:")?))
}

/// When the machine booted, from /proc/stat's `btime`.
fn boot_time(proc_root: &Path) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let seconds: u64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// The name of id `id` in a passwd- or group-format file.
fn name_of(file: &Path, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let number: u32 = fields.next()?.parse().ok()?;
        (number == id && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerCredentials {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let id = |key: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        PeerCredentials {
            pid: Some(std::process::id() as i32),
            uid: id("Uid:"),
            gid: id("Gid:"),
            accepted_at: SystemTime::now(),
        }
    }

    #[test]
    fn this_process_is_attested_by_uid_gid_path_and_hash() {
        let peer = me();
        let hashes = ExecutableHashes::default();
        let selectors = selectors_of(&peer, Some(&hashes)).unwrap();
        let has = |value: &str| selectors.iter().any(|s| s.as_str() == value);
        assert!(has(&format!("unix:uid:{}", peer.uid)));
        assert!(has(&format!("unix:gid:{}", peer.gid)));
        let exe = std::env::current_exe().unwrap();
        assert!(
            has(&format!("unix:path:{}", exe.display())),
            "{selectors:?}"
        );
        let digest: [u8; 32] = Sha256::digest(std::fs::read(&exe).unwrap()).into();
        assert!(has(&format!("unix:sha256:{}", hex::encode(digest))));
        // Remembered, and not computed at all when no entry needs it.
        assert_eq!(hashes.lock().len(), 1);
        assert_eq!(selectors_of(&peer, Some(&hashes)).unwrap(), selectors);
        let without = selectors_of(&peer, None).unwrap();
        assert!(
            !without
                .iter()
                .any(|s| s.as_str().starts_with("unix:sha256:"))
        );
    }

    #[test]
    fn a_changed_executable_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tool");
        std::fs::write(&file, b"one").unwrap();
        let hashes = ExecutableHashes::default();
        let first = hashes.hash(&file).unwrap().unwrap();
        std::fs::write(&file, b"two").unwrap();
        let second = hashes.hash(&file).unwrap().unwrap();
        assert_ne!(first, second);
        assert_eq!(second, <[u8; 32]>::from(Sha256::digest(b"two")));
    }

    #[test]
    fn a_process_that_started_after_the_connection_is_not_the_peer() {
        let mut peer = me();
        peer.accepted_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        assert_eq!(
            selectors_of(&peer, None),
            Err(PeerError::Vanished {
                pid: peer.pid.unwrap()
            })
        );
    }

    #[test]
    fn credentials_that_do_not_match_the_process_are_refused() {
        let mut peer = me();
        peer.uid = peer.uid.wrapping_add(1);
        assert!(matches!(
            selectors_of(&peer, None),
            Err(PeerError::Vanished { .. })
        ));
    }

    #[test]
    fn an_exited_process_is_refused() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let mut peer = me();
        peer.pid = Some(pid);
        assert_eq!(selectors_of(&peer, None), Err(PeerError::Vanished { pid }));
    }

    #[test]
    fn names_come_from_passwd_and_group_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbilling:x:1000:1000::/home/b:/bin/sh\nbroken\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\npayments:x:1000:\n").unwrap();
        let peer = PeerCredentials {
            pid: None,
            uid: 1000,
            gid: 1000,
            accepted_at: SystemTime::now(),
        };
        let selectors = selectors_from(&peer, None, Path::new("/proc"), dir.path()).unwrap();
        let values: Vec<&str> = selectors.iter().map(Selector::as_str).collect();
        assert_eq!(
            values,
            [
                "unix:gid:1000",
                "unix:group:payments",
                "unix:uid:1000",
                "unix:user:billing"
            ]
        );
    }
}
