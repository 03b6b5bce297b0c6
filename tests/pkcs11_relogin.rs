//! A token that forgets the login (an HSM restarted, a network HSM
//! reconnected) does not stop a running CA: the next signature logs in
//! again and succeeds. The CA is loaded in this test's own process, and the
//! test logs the application out of the token through its own PKCS#11
//! session, as a token reset would.
//!
//! One test in this file: it sets `SOFTHSM2_CONF` for the whole process.

mod common;

use std::process::Command;

use common::softhsm::{TOKEN, softhsm};
use common::stderr;

#[test]
fn a_lost_login_is_recovered_by_logging_in_again() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = softhsm(tmp.path()) else {
        return;
    };
    let data_dir = tmp.path().join("ca");
    let output = Command::new(common::CERTD)
        .arg("init")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--pkcs11-module")
        .arg(&hsm.module)
        .args(["--pkcs11-token", TOKEN, "--pkcs11-pin-file"])
        .arg(&hsm.pin_file)
        .env("SOFTHSM2_CONF", &hsm.config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    // SAFETY: the only test in this binary, before any thread reads the
    // environment.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &hsm.config) };

    let secrets = certd::ca::KeySecrets {
        passphrase: None,
        pkcs11_pin: Some(certd::ca::Pkcs11Pin::from_file(&hsm.pin_file).unwrap()),
    };
    let ca = certd::ca::CertificateAuthority::load_with(&data_dir, &secrets).unwrap();
    let intermediate_der = ca.intermediate_der();
    let verify = |message: &[u8], signature: &[u8]| {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, intermediate) = X509Certificate::from_der(&intermediate_der).unwrap();
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            intermediate.public_key().subject_public_key.data.to_vec(),
        );
        key.verify(message, signature).is_ok()
    };
    let before = ca.current().sign_bytes(b"before").unwrap();
    assert!(verify(b"before", &before));

    // Log the application out of the token, as a reset would.
    {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        let pkcs11 = Pkcs11::new(&hsm.module).unwrap();
        // Already initialized by the CA in this process: that is expected.
        let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = pkcs11
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|slot| pkcs11.get_token_info(*slot).unwrap().label().trim_end() == TOKEN)
            .unwrap();
        let session = pkcs11.open_ro_session(slot).unwrap();
        session.logout().unwrap();
        drop(session);
        // Finalizing would unload the library under the CA.
        std::mem::forget(pkcs11);
    }

    for round in 0..3 {
        let message = format!("after {round}");
        let signature = ca
            .current()
            .sign_bytes(message.as_bytes())
            .expect("a signature after the token forgot the login");
        assert!(verify(message.as_bytes(), &signature));
    }
}
