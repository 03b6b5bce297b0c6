use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::{CertificateAuthority, InitOptions, KeySecrets, rotation};
use certd_core::clock::unix_seconds;

/// A CA as `certd init` makes it, in `dir`.
fn primary(dir: &Path) {
    crate::init(
        dir,
        &InitOptions::for_tests("http://127.0.0.1:8080", None),
        SystemTime::now(),
    )
    .unwrap();
    std::fs::write(dir.join("jwt-master.key"), [7u8; 32]).unwrap();
    std::fs::write(dir.join("store-marks.toml"), "store_id = \"primary\"\n").unwrap();
}

fn now() -> i64 {
    unix_seconds(SystemTime::now())
}

/// The package of `dir` as `certd replica export` writes and `import` reads it.
fn exported(dir: &Path) -> Package {
    let mut bytes = Vec::new();
    export(dir, false, now())
        .unwrap()
        .package
        .write_tar(&mut bytes)
        .unwrap();
    Package::read_tar(&bytes).unwrap()
}

/// A rotation where the CA lives, promoted as the daemon there does.
fn rotate(dir: &Path) {
    let secrets = KeySecrets::default();
    rotation::prepare(dir, &secrets, SystemTime::now()).unwrap();
    rotation::promote_pending(dir, &secrets, Duration::from_secs(24 * 3600), now())
        .unwrap()
        .unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn same_file(a: &Path, b: &Path, name: &str) -> bool {
    std::fs::read(a.join(name)).unwrap() == std::fs::read(b.join(name)).unwrap()
}

#[test]
fn a_new_replica_gets_what_a_serving_certd_reads_and_not_the_root_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("primary"), tmp.path().join("replica"));
    primary(&from);
    let made = export(&from, false, now()).unwrap();
    assert!(
        made.left_out
            .iter()
            .any(|line| line.starts_with("root.key"))
    );
    assert!(made.package.file("root.key").is_none());
    assert!(made.package.file("root.crl").is_some());

    let imported = import(&to, &exported(&from)).unwrap();
    assert!(imported.fresh);
    assert_eq!(imported.written.last().map(String::as_str), Some("ca.toml"));
    assert_eq!(mode(&to), 0o700);
    for name in ["intermediate.key", "jwt-master.key"] {
        assert_eq!(mode(&to.join(name)), 0o600, "{name}");
        assert!(same_file(&from, &to, name), "{name}");
    }
    for name in [
        "root.pem",
        "bundle.pem",
        "root.crl",
        "ca.toml",
        "intermediate.pem",
        "store-marks.toml",
    ] {
        assert_eq!(mode(&to.join(name)), 0o644, "{name}");
        assert!(same_file(&from, &to, name), "{name}");
    }
    assert!(!to.join("root.key").exists());
    CertificateAuthority::load_with(&to, &KeySecrets::default()).unwrap();

    // Cut short before its last file: imported again, it is finished.
    std::fs::remove_file(to.join("ca.toml")).unwrap();
    let finished = import(&to, &exported(&from)).unwrap();
    assert!(finished.fresh);
    assert_eq!(finished.written, ["ca.toml"]);

    // Imported again: nothing to do.
    let again = import(&to, &exported(&from)).unwrap();
    assert!(!again.fresh);
    assert!(again.written.is_empty(), "{:?}", again.written);
}

#[test]
fn a_rotation_reaches_an_existing_replica_and_a_new_one_with_its_previous_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("primary");
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    primary(&from);
    import(&old, &exported(&from)).unwrap();
    let first = std::fs::read(from.join("intermediate.pem")).unwrap();
    rotate(&from);

    let package = exported(&from);
    // The replica's own marks know more than the package's.
    std::fs::write(old.join("store-marks.toml"), "store_id = \"replica\"\n").unwrap();
    let updated = import(&old, &package).unwrap();
    assert!(!updated.fresh);
    assert!(!updated.written.contains(&"store-marks.toml".to_owned()));
    for name in [
        "intermediate-previous.pem",
        "intermediate-previous.key",
        "intermediate-previous.toml",
        "intermediate.key",
        "intermediate.pem",
    ] {
        assert!(updated.written.contains(&name.to_owned()), "{updated:?}");
        assert!(same_file(&from, &old, name), "{name}");
    }
    let position = |name: &str| updated.written.iter().position(|n| n == name).unwrap();
    assert!(position("intermediate.key") < position("intermediate.pem"));
    assert!(position("intermediate-previous.toml") < position("intermediate.pem"));
    assert_eq!(
        std::fs::read(old.join("intermediate-previous.pem")).unwrap(),
        first
    );

    import(&new, &package).unwrap();
    for replica in [&old, &new] {
        let ca = CertificateAuthority::load_with(replica, &KeySecrets::default()).unwrap();
        let signers = ca.signers();
        assert!(
            signers.previous.is_some(),
            "{replica:?} answers for the previous one"
        );
        assert_eq!(
            signers.current.pem().as_bytes(),
            std::fs::read(from.join("intermediate.pem")).unwrap()
        );
    }
}

#[test]
fn a_rotation_not_yet_promoted_where_the_ca_lives_is_staged_and_never_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("primary"), tmp.path().join("replica"));
    primary(&from);
    import(&to, &exported(&from)).unwrap();
    rotation::prepare(&from, &KeySecrets::default(), SystemTime::now()).unwrap();
    let package = exported(&from);

    let staged = import(&to, &package).unwrap();
    assert_eq!(
        staged.written,
        ["intermediate-next.key", "intermediate-next.pem"]
    );
    let secrets = KeySecrets::default();
    rotation::promote_pending(&to, &secrets, Duration::from_secs(24 * 3600), now())
        .unwrap()
        .unwrap();
    assert!(!same_file(&from, &to, "intermediate.key"));
    assert_eq!(
        std::fs::read(to.join("intermediate.pem")).unwrap(),
        std::fs::read(from.join("intermediate-next.pem")).unwrap()
    );
    // The same package again: the replica promoted its next one already.
    let again = import(&to, &package).unwrap();
    assert!(
        again.written.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    assert!(to.join("intermediate-previous.pem").exists());
}

#[test]
fn another_ca_and_an_older_package_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, other, to) = (
        tmp.path().join("primary"),
        tmp.path().join("other"),
        tmp.path().join("replica"),
    );
    primary(&from);
    primary(&other);
    let before = exported(&from);
    let refused = import(&other, &before).unwrap_err();
    assert!(
        matches!(refused, ReplicaError::AnotherCa { .. }),
        "{refused}"
    );
    assert_eq!(refused.kind(), certd_core::ErrorKind::AlreadyExists);
    assert!(
        refused.to_string().contains("refusing to overwrite it"),
        "{refused}"
    );

    import(&to, &before).unwrap();
    rotate(&from);
    import(&to, &exported(&from)).unwrap();
    let intermediate = std::fs::read(to.join("intermediate.pem")).unwrap();
    let older = import(&to, &before).unwrap_err();
    assert!(matches!(older, ReplicaError::Older { .. }), "{older}");
    assert_eq!(older.kind(), certd_core::ErrorKind::FailedPrecondition);
    assert_eq!(
        std::fs::read(to.join("intermediate.pem")).unwrap(),
        intermediate
    );
}

#[test]
fn a_ca_without_its_jwt_master_secret_or_its_marks_is_not_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("primary");
    primary(&dir);
    std::fs::remove_file(dir.join("jwt-master.key")).unwrap();
    let refused = export(&dir, false, now()).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("has no jwt-master.key: certd serve creates it"),
        "{refused}"
    );
    primary(&tmp.path().join("unmarked"));
    std::fs::remove_file(tmp.path().join("unmarked/store-marks.toml")).unwrap();
    let refused = export(&tmp.path().join("unmarked"), false, now()).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("has no store-marks.toml, which tells replicas which database is this CA's"),
        "{refused}"
    );
    let missing = export(&tmp.path().join("nothing"), false, now()).unwrap_err();
    assert!(missing.to_string().contains("no CA in"), "{missing}");
}

#[test]
fn the_root_key_is_included_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("primary"), tmp.path().join("second"));
    primary(&from);
    let made = export(&from, true, now()).unwrap();
    assert!(
        made.left_out
            .iter()
            .all(|line| !line.starts_with("root.key"))
    );
    let mut bytes = Vec::new();
    made.package.write_tar(&mut bytes).unwrap();
    import(&to, &Package::read_tar(&bytes).unwrap()).unwrap();
    assert!(same_file(&from, &to, "root.key"));
    assert_eq!(mode(&to.join("root.key")), 0o600);
}
