//! certd's ACME server (RFC 8555) judged by ACME clients nobody here
//! wrote: lego, certbot and Caddy obtain, renew and revoke certificates for
//! an entry's name through External Account Binding, answering http-01,
//! tls-alpn-01 and dns-01 (through a real BIND) as they would on a real
//! network, and OpenSSL checks what they got as a relying party would. The
//! ACME guide's commands run here too, as written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::acme_clients::{
    self, AcmeCa, AcmeSettings, Background, CONTACT, Client, NAME, eab_args, lego, lego_chain,
    succeeds, wait_until,
};
use common::docs::{expected_output, fenced_blocks, shows};
use common::{http, nginx_available, openssl, stderr, stdout};

/// lego registers with an EAB key of the `web` entry, proves the name with
/// http-01 on the port certd's testing settings point at, and gets a
/// certificate that verifies against certd's bundle, is the entry's
/// identity for a day, and is listed; `lego renew` then gets a new one.
#[test]
fn lego_obtains_and_renews_with_http_01() {
    if !Client::Lego.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let path = ca.dir("lego");
    let responder = format!("127.0.0.1:{}", ca.http_port);
    let challenge = ["--http", "--http.port", responder.as_str()];

    succeeds(
        lego(&ca, &path)
            .args(eab_args(&eab))
            .args(challenge)
            .arg("run"),
        "lego run (http-01)",
    );
    let first = ca.check_issued(&lego_chain(&path), &entry);
    let listed = ca.listed(&first);
    let lifetime = listed["not_after"].as_i64().unwrap() - listed["not_before"].as_i64().unwrap();
    assert!(
        lifetime <= 25 * 3600,
        "the entry's lifetime (24 h, with a backdated notBefore): {listed}"
    );

    // lego renews for the names it reads from the certificate: its CN and
    // its SANs.
    acme_clients::assert_common_name_is_a_dns_name(&lego_chain(&path));
    // lego renews when fewer than --days are left: a day-long certificate
    // always qualifies. lego 4.9 wants the EAB flags whenever the directory
    // requires EAB, though the account exists and it sends no EAB again.
    succeeds(
        lego(&ca, &path).args(eab_args(&eab)).args(challenge).args([
            "renew",
            "--days",
            "30",
            "--no-random-sleep",
        ]),
        "lego renew (http-01)",
    );
    let second = ca.check_issued(&lego_chain(&path), &entry);
    assert_ne!(first, second, "a new certificate");
    assert_eq!(
        ca.listed(&first)["status"],
        "good",
        "the first is not revoked"
    );
}

/// The same with tls-alpn-01 (RFC 8737): lego answers with its
/// `acme-tls/1` certificate on the port certd connects to.
#[test]
fn lego_obtains_and_renews_with_tls_alpn_01() {
    if !Client::Lego.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let path = ca.dir("lego");
    let responder = format!("127.0.0.1:{}", ca.tls_alpn_port);
    let challenge = ["--tls", "--tls.port", responder.as_str()];

    succeeds(
        lego(&ca, &path)
            .args(eab_args(&eab))
            .args(challenge)
            .arg("run"),
        "lego run (tls-alpn-01)",
    );
    let first = ca.check_issued(&lego_chain(&path), &entry);
    acme_clients::assert_common_name_is_a_dns_name(&lego_chain(&path));
    succeeds(
        lego(&ca, &path).args(eab_args(&eab)).args(challenge).args([
            "renew",
            "--days",
            "30",
            "--no-random-sleep",
        ]),
        "lego renew (tls-alpn-01)",
    );
    let second = ca.check_issued(&lego_chain(&path), &entry);
    assert_ne!(first, second, "a new certificate");
}

/// dns-01 through a real DNS server: lego publishes its TXT record in a
/// BIND zone with TSIG-signed RFC 2136 updates (its `rfc2136` provider),
/// and certd asks that BIND (`[acme.testing] dns_server`). The entry's
/// policy allows dns-01 only, so certd offers nothing else.
#[test]
fn lego_obtains_with_dns_01_through_bind() {
    if !Client::Lego.available() {
        return;
    }
    let Some(bind) = common::bind::bind("acme.test") else {
        return;
    };
    let ca = AcmeCa::start(AcmeSettings {
        dns_server: Some(bind.addr()),
    });
    let entry = ca.web_entry();
    let output = ca
        .daemon
        .cli(&["acme", "policy", "set", &entry, "--challenges", "dns-01"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let eab = ca.eab(&entry);
    let path = ca.dir("lego");
    let resolver = bind.addr().to_string();

    // lego's propagation check asks the zone's NS on port 53, where no
    // test can listen: it is off, and lego asks BIND itself.
    let obtained = lego(&ca, &path)
        .args(eab_args(&eab))
        .args(["--dns", "rfc2136", "--dns.resolvers", &resolver])
        .arg("--dns.disable-cp")
        .envs(bind.lego_rfc2136_env())
        .arg("run")
        .output()
        .expect("lego");
    assert!(
        obtained.status.success(),
        "lego run (dns-01) failed:\n{}{}\nBIND:\n{}\ncertd:\n{}",
        stdout(&obtained),
        stderr(&obtained),
        bind.log(),
        ca.daemon.log_text()
    );
    ca.check_issued(&lego_chain(&path), &entry);
}

/// certbot (standalone http-01) obtains a certificate and revokes it with
/// its account key; certd then says revoked everywhere a relying party
/// looks: `certd list` and `certd show`, its OCSP responder (through the
/// URL in the certificate), and its CRLs (`openssl verify -crl_check`).
#[test]
fn certbot_obtains_with_http_01_and_revokes() {
    if !Client::Certbot.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let dir = ca.dir("certbot");
    let live = certbot_certonly(&ca, &dir, &eab);
    let serial = ca.check_issued(&live.join("fullchain.pem"), &entry);

    succeeds(
        acme_clients::certbot(&ca, &dir, "revoke")
            .arg("--cert-path")
            .arg(live.join("cert.pem"))
            .args(["--reason", "keycompromise", "--no-delete-after-revoke"]),
        "certbot revoke",
    );
    assert_eq!(ca.listed(&serial)["status"], "revoked");
    let shown = ca.daemon.cli(&["show", &serial]);
    assert!(
        shown.status.success() && stdout(&shown).contains("revoked"),
        "{}{}",
        stdout(&shown),
        stderr(&shown)
    );

    let path = |name: &str| live.join(name).to_str().unwrap().to_owned();
    let bundle = ca.bundle().to_str().unwrap().to_owned();
    let (ok, url) = openssl(&["x509", "-noout", "-ocsp_uri", "-in", &path("cert.pem")]);
    assert!(ok, "{url}");
    let (ok, text) =
        common::openssl_ocsp(&path("chain.pem"), &path("cert.pem"), url.trim(), &bundle);
    assert!(
        ok && text.contains("Response verify OK") && text.contains(": revoked"),
        "OCSP: {text}"
    );
    assert!(
        text.contains("keyCompromise"),
        "the reason certbot gave: {text}"
    );

    let crls = http("GET", &format!("{}/crls.pem", ca.daemon.http), &[], b"");
    assert_eq!(crls.status, 200);
    let crls = common::write_file(&dir.join("crls.pem"), &crls.body);
    let (ok, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        &bundle,
        "-untrusted",
        &path("chain.pem"),
        "-CRLfile",
        &crls,
        &path("cert.pem"),
    ]);
    assert!(!ok && text.contains("error 23 at 0 depth"), "CRL: {text}");
}

/// nginx as the relying party of an ACME certificate: it takes lego's
/// certificate as a client certificate, checked against certd's bundle and
/// CRLs (`ssl_crl`, whole chain), until `certd revoke`; then, with the CRLs
/// fetched again, it refuses it.
#[test]
fn nginx_refuses_an_acme_certificate_after_certd_revoke() {
    if !Client::Lego.available() || !nginx_available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let path = ca.dir("lego");
    let responder = format!("127.0.0.1:{}", ca.http_port);
    succeeds(
        lego(&ca, &path)
            .args(eab_args(&eab))
            .args(["--http", "--http.port", responder.as_str()])
            .arg("run"),
        "lego run (http-01)",
    );
    let chain = lego_chain(&path);
    let serial = ca.check_issued(&chain, &entry);
    let key = path.join("certificates").join(format!("{NAME}.key"));
    let dir = ca.dir("nginx");
    let crls = dir.join("crls.pem");
    let fetch_crls = || {
        let fetched = http("GET", &format!("{}/crls.pem", ca.daemon.http), &[], b"");
        assert_eq!(fetched.status, 200);
        std::fs::write(&crls, &fetched.body).expect("write crls.pem");
    };
    fetch_crls();
    let port = common::free_port_below_ephemeral_range();
    // The same certificate serves (it has serverAuth) and is asked for.
    // One process (no master and workers), so that stopping it is one kill.
    let conf = format!(
        "master_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n\
         events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {NAME};\n\
         ssl_certificate {chain};\n    ssl_certificate_key {key};\n\
         ssl_client_certificate {bundle};\n    ssl_verify_client on;\n    ssl_verify_depth 2;\n\
         ssl_crl {crls};\n    location / {{ return 200 \"verified $ssl_client_s_dn\\n\"; }}\n  }}\n}}\n",
        dir = dir.display(),
        chain = chain.display(),
        key = key.display(),
        bundle = ca.bundle().display(),
        crls = crls.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let start = || {
        Background::spawn(
            Command::new("nginx")
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf_path)
                .args(["-g", "daemon off;"]),
            dir.join("nginx.out"),
        )
    };
    let curl = || {
        let output = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
            .arg("--cacert")
            .arg(ca.bundle())
            .arg("--cert")
            .arg(&chain)
            .arg("--key")
            .arg(&key)
            .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
            .arg(format!("https://{NAME}:{port}/"))
            .output()
            .expect("run curl");
        stdout(&output)
    };
    let answering = |nginx: &mut Background| {
        wait_until(
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || format!("nginx did not listen: {}", nginx.log_text()),
        );
    };

    let mut nginx = start();
    answering(&mut nginx);
    let before = curl();
    assert!(
        before.ends_with("\n200") && before.contains(&format!("CN={NAME}")),
        "before the revocation nginx takes the certificate: {before}"
    );
    drop(nginx);

    let revoked = ca
        .daemon
        .cli(&["revoke", &serial, "--reason", "key-compromise"]);
    assert!(
        revoked.status.success(),
        "certd revoke: {}",
        stderr(&revoked)
    );
    fetch_crls();
    let mut nginx = start();
    answering(&mut nginx);
    let after = curl();
    assert!(
        after.ends_with("\n400") && after.contains("certificate"),
        "after certd revoke nginx refuses it (CRL): {after}"
    );
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(log.contains("certificate revoked"), "nginx's log: {log}");
}

/// certbot gets a certificate for `web.acme.test` with `eab`, answering
/// http-01 standalone on the CA's http-01 port; returns its `live`
/// directory.
fn certbot_certonly(ca: &AcmeCa, dir: &Path, eab: &acme_clients::Eab) -> PathBuf {
    let port = ca.http_port.to_string();
    succeeds(
        acme_clients::certbot(ca, dir, "certonly")
            .args(["--standalone", "--http-01-port", &port])
            .args(["--http-01-address", "127.0.0.1"])
            .args(["--eab-kid", &eab.key_id, "--eab-hmac-key", &eab.hmac_key])
            .args(["--agree-tos", "--email", CONTACT, "--domains", NAME]),
        "certbot certonly",
    );
    dir.join("config/live").join(NAME)
}

/// Renewal information (RFC 9773) as certbot reads it: `certbot renew`
/// asks certd's ARI and, for a fresh day-long certificate, is told to wait
/// (its window opens around half-life); once an operator revokes the
/// certificate with `certd revoke`, ARI's window moves to now and the next
/// `certbot renew` gets a new certificate, on ARI's word rather than by
/// finding the revocation through OCSP.
#[test]
fn certbot_renews_at_once_when_renewal_information_says_so() {
    if !Client::Certbot.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let dir = ca.dir("certbot");
    let live = certbot_certonly(&ca, &dir, &eab);
    let first = ca.check_issued(&live.join("fullchain.pem"), &entry);
    let log = dir.join("logs/letsencrypt.log");
    let ari_failed = "An error occurred requesting ACME Renewal Information";

    // certbot renews for the names it reads from the certificate.
    acme_clients::assert_common_name_is_a_dns_name(&live.join("cert.pem"));
    // Run by a timer, certbot renew sleeps up to 8 minutes first: not here.
    let renew = || {
        let mut command = acme_clients::certbot(&ca, &dir, "renew");
        command.arg("--no-random-sleep-on-renew");
        command
    };
    let output = succeeds(&mut renew(), "certbot renew");
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(said.contains("not yet due for renewal"), "{said}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains(ari_failed), "certbot asked ARI: {logged}");

    let output = ca.daemon.cli(&["revoke", &first]);
    assert!(output.status.success(), "{}", stderr(&output));
    // certbot waits for the Retry-After of certd's last answer (6 hours)
    // before asking ARI again: as if they had passed.
    let renewal = dir.join("config/renewal").join(format!("{NAME}.conf"));
    let conf = std::fs::read_to_string(&renewal).expect("certbot's renewal configuration");
    assert!(conf.contains("ari_retry_after"), "{conf}");
    let conf: String = conf
        .lines()
        .filter(|line| !line.trim_start().starts_with("ari_retry_after"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&renewal, conf).expect("rewrite certbot's renewal configuration");
    let logged_before = std::fs::read_to_string(&log).unwrap_or_default().len();

    let output = succeeds(&mut renew(), "certbot renew after the revocation");
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(said.contains("all renewals succeeded"), "{said}");
    let second = ca.check_issued(&live.join("fullchain.pem"), &entry);
    assert_ne!(first, second, "a new certificate");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let this_run = logged.get(logged_before.min(logged.len())..).unwrap_or("");
    assert!(!this_run.contains(ari_failed), "{this_run}");
    assert!(
        !this_run.contains("Should renew, certificate is revoked"),
        "ARI, not OCSP, said to renew: {this_run}"
    );
}

/// Caddy, configured by the guide's Caddyfile (certd as its `acme_ca`, its
/// bundle as `acme_ca_root`, an EAB key), gets a certificate by itself and
/// serves `web.acme.test` over HTTPS with it: `openssl s_client` verifies
/// the chain against certd's bundle, and curl gets the page.
#[test]
fn caddy_serves_https_with_a_certd_certificate() {
    if !Client::Caddy.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let dir = ca.dir("caddy");
    let admin = common::free_port_below_ephemeral_range();
    let storage = dir.join("storage");
    // Caddy listens where certd's testing settings send the challenges:
    // its HTTP port is certd's http-01 port, its HTTPS port the
    // tls-alpn-01 one (it may answer either).
    let local = format!(
        "\tadmin 127.0.0.1:{admin}\n\thttp_port {}\n\thttps_port {}\n\tstorage file_system {}\n",
        ca.http_port,
        ca.tls_alpn_port,
        storage.display()
    );
    let caddyfile = guide_caddyfile()
        .replace("https://certd.example.internal:8443", &ca.daemon.grpc)
        .replace("/etc/caddy/certd-bundle.pem", ca.bundle().to_str().unwrap())
        .replacen("{\n", &format!("{{\n{local}"), 1);
    let caddyfile_path = common::write_file(&dir.join("Caddyfile"), &caddyfile);
    let mut caddy = Background::spawn(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config", &caddyfile_path])
            .env("CERTD_EAB_KEY_ID", &eab.key_id)
            .env("CERTD_EAB_HMAC_KEY", &eab.hmac_key)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config")),
        dir.join("caddy.log"),
    );

    let https = format!("127.0.0.1:{}", ca.tls_alpn_port);
    let bundle = ca.bundle().to_str().unwrap().to_owned();
    let s_client = || {
        openssl(&[
            "s_client",
            "-connect",
            &https,
            "-servername",
            NAME,
            "-CAfile",
            &bundle,
            "-verify_return_error",
        ])
    };
    // Caddy obtains its certificate in the background: ready when a
    // handshake verifies.
    let mut exited = false;
    let caddy_log = caddy.log.clone();
    wait_until(
        Duration::from_secs(90),
        || {
            exited = caddy.exited();
            exited || s_client().0
        },
        || {
            let caddy_said = std::fs::read_to_string(&caddy_log).unwrap_or_default();
            format!("{caddy_said}\ncertd:\n{}", ca.daemon.log_text())
        },
    );
    assert!(!exited, "Caddy exited:\n{}", caddy.log_text());
    let (_, text) = s_client();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    let page = Command::new("curl")
        .args(["-fsS", "--cacert", &bundle, "--resolve"])
        .arg(format!("{NAME}:{}:127.0.0.1", ca.tls_alpn_port))
        .arg(format!("https://{NAME}:{}/", ca.tls_alpn_port))
        .output()
        .expect("curl");
    assert!(
        page.status.success() && stdout(&page).contains("hello from web.acme.test"),
        "{}{}",
        stdout(&page),
        stderr(&page)
    );
    let stored = find_file(&storage, &format!("{NAME}.crt"))
        .unwrap_or_else(|| panic!("Caddy stored no certificate under {}", storage.display()));
    ca.check_issued(&stored, &entry);
}

/// No EAB, no account: lego without `--eab` is refused
/// (`externalAccountRequired`, which lego reads from the directory's meta
/// or from certd's answer to newAccount), and gets no certificate.
#[test]
fn an_account_without_eab_is_refused() {
    if !Client::Lego.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    ca.web_entry();
    let path = ca.dir("lego");
    let responder = format!("127.0.0.1:{}", ca.http_port);
    let output = lego(&ca, &path)
        .args(["--http", "--http.port", &responder, "run"])
        .output()
        .expect("lego");
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("externalAccountRequired") || said.contains("External Account Binding"),
        "{said}"
    );
    assert!(!lego_chain(&path).exists());
}

/// An EAB key binds one account: the second account (another key, another
/// lego) presenting it is refused with an ACME problem, and gets nothing.
#[test]
fn a_replayed_eab_key_is_refused() {
    if !Client::Lego.available() {
        return;
    }
    let ca = AcmeCa::start(AcmeSettings::default());
    let entry = ca.web_entry();
    let eab = ca.eab(&entry);
    let responder = format!("127.0.0.1:{}", ca.http_port);
    let challenge = ["--http", "--http.port", responder.as_str()];
    let first = ca.dir("first");
    succeeds(
        lego(&ca, &first)
            .args(eab_args(&eab))
            .args(challenge)
            .arg("run"),
        "lego run with a fresh EAB key",
    );
    ca.check_issued(&lego_chain(&first), &entry);

    let second = ca.dir("second");
    let output = lego(&ca, &second)
        .args(eab_args(&eab))
        .args(challenge)
        .arg("run")
        .output()
        .expect("lego");
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("urn:ietf:params:acme:error:unauthorized")
            || said.contains("urn:ietf:params:acme:error:malformed"),
        "an ACME problem for the used key: {said}"
    );
    assert!(!lego_chain(&second).exists());
}

/// The ACME guide's `sh` blocks run as written, in order and in one shell
/// (`set -e`: every command must succeed), with `certd` on the PATH,
/// against a certd started from that directory with the guide's own
/// `[acme.testing]` file; the ports are the test's in place of the guide's
/// (8443, 8080, 5002, 5001). Every comment right after a command is output
/// the commands must print (`…` stands for anything).
#[test]
fn the_acme_guide_runs_as_written() {
    if !Client::Lego.available() || !Client::Certbot.available() {
        return;
    }
    let blocks = guide_blocks("sh");
    assert!(blocks.len() >= 6, "{GUIDE}'s sh blocks: {blocks:?}");
    let testing: Vec<String> = guide_blocks("toml")
        .into_iter()
        .filter(|block| block.contains("[acme.testing]"))
        .collect();
    assert_eq!(
        testing.len(),
        1,
        "{GUIDE} shows one [acme.testing]: {testing:?}"
    );
    let ports = [
        (
            "5002",
            common::free_port_below_ephemeral_range().to_string(),
        ),
        (
            "5001",
            common::free_port_below_ephemeral_range().to_string(),
        ),
    ];
    let with_ports = |text: &str| {
        ports.iter().fold(text.to_owned(), |text, (guide, test)| {
            text.replace(guide, test)
        })
    };

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_owned();
    let config = common::write_file(&dir.join("certd.toml"), with_ports(&testing[0]));
    let daemon = common::Daemon::start_in(work, dir.join("ca-data"), &["--config", &config]);
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::CERTD, bin.join("certd")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
    let script = with_ports(&format!(
        "set -eu -o pipefail\nexec 2>&1\n{}",
        blocks.join("\n")
    ))
    .replace(
        "127.0.0.1:8443",
        &format!("127.0.0.1:{}", port(&daemon.grpc)),
    )
    .replace(
        "127.0.0.1:8080",
        &format!("127.0.0.1:{}", port(&daemon.http)),
    );
    let output = Command::new("timeout")
        .args(["300", "bash", "-c", &script])
        .current_dir(&dir)
        .env("PATH", &path)
        .env_remove("CERTD_DATA_DIR")
        .env_remove("CERTD_DATABASE_URL")
        .env_remove("CERTD_ADMIN_SERVER")
        .env_remove("LEGO_CA_CERTIFICATES")
        .env_remove("REQUESTS_CA_BUNDLE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash");
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "a command of {GUIDE} failed ({}):\n{text}\ncertd:\n{}",
        output.status,
        daemon.log_text()
    );
    let expected: Vec<String> = blocks.iter().flat_map(|b| expected_output(b)).collect();
    assert!(expected.len() >= 5, "expected outputs found: {expected:?}");
    for line in &expected {
        assert!(
            shows(&text, line),
            "{GUIDE} promises {line:?}, which the commands did not print:\n{text}"
        );
    }
}

const GUIDE: &str = "docs/guides/acme.md";

/// The ACME guide.
fn guide() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GUIDE);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of the guide in `language`, in order.
fn guide_blocks(language: &str) -> Vec<String> {
    fenced_blocks(&guide(), language)
}

/// The guide's Caddyfile (its one `caddyfile` block).
fn guide_caddyfile() -> String {
    let blocks = guide_blocks("caddyfile");
    assert_eq!(blocks.len(), 1, "{GUIDE} has one Caddyfile: {blocks:?}");
    blocks[0].clone()
}

/// A file named `name` anywhere under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|file| file == name) {
            return Some(path);
        }
    }
    None
}
