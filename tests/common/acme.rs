//! An ACME client built by hand for the tests of certd's ACME server: JWS
//! requests signed with a P-256 account key (and EAB bindings with HS256),
//! sent with curl, so every byte on the wire is the test's own. Shared by
//! tests/acme_protocol.rs and tests/replicas.rs.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::{Served, stderr, stdout};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An ACME answer: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a header that may repeat (`Link`).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The problem type's last part (`badNonce`), checking the document.
    pub fn problem(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let kind = self.json()["type"].as_str().unwrap_or_default().to_owned();
        kind.strip_prefix("urn:ietf:params:acme:error:")
            .unwrap_or_else(|| panic!("not an ACME problem: {self:?}"))
            .to_owned()
    }
}

/// An ACME client with a P-256 account key, speaking through curl.
pub struct Client {
    pub directory: Value,
    pub bundle: String,
    key: EcdsaKeyPair,
    pub jwk: Value,
    /// The account URL, once there is one.
    pub kid: Option<String>,
    pub nonce: Option<String>,
    /// `host:port` of the daemon that really answers, when it is not the
    /// one the URLs name: what a load balancer in front of replicas does
    /// (curl's `--connect-to`; the Host and the URLs stay the same).
    pub route: Option<(String, String)>,
    /// The local address to send from (curl's `--interface`), for a
    /// client at another address of the loopback network (127.0.0.2).
    pub source: Option<String>,
}

impl Client {
    pub fn new(daemon: &Served) -> Client {
        let bundle = daemon.data_dir.join("bundle.pem").display().to_string();
        let directory = curl(
            &bundle,
            &[],
            "GET",
            &format!("{}/acme/directory", daemon.grpc),
            None,
        );
        assert_eq!(directory.status, 200, "{directory:?}");
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = key.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
        });
        Client {
            directory: directory.json(),
            bundle,
            key,
            jwk,
            kid: None,
            nonce: None,
            route: None,
            source: None,
        }
    }

    /// The account key's JWK thumbprint (RFC 7638): the second half of
    /// every key authorization.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk["x"].as_str().unwrap(),
            self.jwk["y"].as_str().unwrap()
        );
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Sends the next requests to `replica` (the URLs still name the
    /// daemon the directory came from), or back to that one with `None`.
    pub fn through(&mut self, replica: Option<&Served>) {
        self.route =
            replica.map(|replica| (authority(&self.url("newNonce")), authority(&replica.grpc)));
    }

    pub fn url(&self, resource: &str) -> String {
        self.directory[resource]
            .as_str()
            .unwrap_or_else(|| panic!("no {resource} in {}", self.directory))
            .to_owned()
    }

    /// A new nonce from the daemon requests go to.
    pub fn new_nonce(&self) -> String {
        let reply = self.curl("HEAD", &self.url("newNonce"), None);
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.header("replay-nonce").expect("a nonce").to_owned()
    }

    pub fn fresh_nonce(&mut self) -> String {
        match self.nonce.take() {
            Some(nonce) => nonce,
            None => self.new_nonce(),
        }
    }

    /// A JWS of `payload` (`None`: POST-as-GET) for `url` with `header`'s
    /// members added to the protected header.
    pub fn sign(&self, mut header: Value, payload: Option<&str>) -> String {
        header["alg"] = "ES256".into();
        let protected = b64(header.to_string().as_bytes());
        let payload = payload.map(|p| b64(p.as_bytes())).unwrap_or_default();
        let rng = ring::rand::SystemRandom::new();
        let signature = self
            .key
            .sign(&rng, format!("{protected}.{payload}").as_bytes())
            .unwrap();
        json!({"protected": protected, "payload": payload, "signature": b64(signature.as_ref())})
            .to_string()
    }

    /// The header for a request to `url`: the account's kid once there
    /// is one, else the key.
    pub fn header(&mut self, url: &str) -> Value {
        let nonce = self.fresh_nonce();
        self.header_with(url, &nonce)
    }

    /// The header for a request to `url` with `nonce`.
    pub fn header_with(&self, url: &str, nonce: &str) -> Value {
        let mut header = json!({"nonce": nonce, "url": url});
        match &self.kid {
            Some(kid) => header["kid"] = kid.clone().into(),
            None => header["jwk"] = self.jwk.clone(),
        }
        header
    }

    /// POSTs a signed request; keeps the answer's nonce for the next.
    pub fn post(&mut self, url: &str, payload: Option<&str>) -> Reply {
        let header = self.header(url);
        let body = self.sign(header, payload);
        self.send(url, &body)
    }

    pub fn send(&mut self, url: &str, body: &str) -> Reply {
        let reply = self.curl("POST", url, Some(body));
        self.nonce = reply.header("replay-nonce").map(str::to_owned);
        assert!(
            reply
                .all("link")
                .iter()
                .any(|link| link.contains("/acme/directory>;rel=\"index\"")),
            "every answer links the directory: {reply:?}"
        );
        reply
    }

    /// An unsigned request (GET, HEAD) to the daemon requests go to.
    pub fn curl(&self, method: &str, url: &str, body: Option<&str>) -> Reply {
        let mut options = Vec::new();
        if let Some((named, actual)) = &self.route {
            options.extend(["--connect-to".to_owned(), format!("{named}:{actual}")]);
        }
        if let Some(source) = &self.source {
            options.extend(["--interface".to_owned(), source.clone()]);
        }
        curl(&self.bundle, &options, method, url, body)
    }

    /// The external account binding of this client's key with EAB key
    /// `kid` / `hmac` (base64url).
    pub fn binding(&self, kid: &str, hmac: &str) -> Value {
        let protected = b64(
            json!({"alg": "HS256", "kid": kid, "url": self.url("newAccount")})
                .to_string()
                .as_bytes(),
        );
        let payload = b64(self.jwk.to_string().as_bytes());
        let key = URL_SAFE_NO_PAD.decode(hmac).unwrap();
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            format!("{protected}.{payload}").as_bytes(),
        );
        json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())})
    }

    pub fn new_account(&mut self, binding: Option<Value>) -> Reply {
        let mut payload =
            json!({"termsOfServiceAgreed": true, "contact": ["mailto:ops@example.test"]});
        if let Some(binding) = binding {
            payload["externalAccountBinding"] = binding;
        }
        let url = self.url("newAccount");
        let reply = self.post(&url, Some(&payload.to_string()));
        if reply.status == 201 {
            self.kid = reply.header("location").map(str::to_owned);
        }
        reply
    }

    pub fn new_order(&mut self, names: &[&str]) -> Reply {
        let identifiers: Vec<Value> = names
            .iter()
            .map(|name| json!({"type": "dns", "value": name}))
            .collect();
        let url = self.url("newOrder");
        self.post(
            &url,
            Some(&json!({ "identifiers": identifiers }).to_string()),
        )
    }

    /// Orders `names` (ready at once: the entry needs no challenges),
    /// finalizes with a CSR for them and downloads the chain (PEM).
    pub fn certificate_for(&mut self, names: &[&str]) -> String {
        self.certificate_and_key_for(names).0
    }

    /// `certificate_for`, with the certificate's key.
    pub fn certificate_and_key_for(&mut self, names: &[&str]) -> (String, rcgen::KeyPair) {
        let order = self.new_order(names);
        assert_eq!(order.status, 201, "{order:?}");
        assert_eq!(order.json()["status"], "ready", "{order:?}");
        let order_url = order.header("location").unwrap().to_owned();
        let finalize = order.json()["finalize"].as_str().unwrap().to_owned();
        let (key, request) = csr(names);
        let finalized = self.post(&finalize, Some(&json!({ "csr": request }).to_string()));
        assert_eq!(finalized.status, 200, "{finalized:?}");
        let certificate_url = self.post(&order_url, None).json()["certificate"]
            .as_str()
            .unwrap()
            .to_owned();
        let download = self.post(&certificate_url, None);
        assert_eq!(download.status, 200, "{download:?}");
        (download.body, key)
    }
}

/// The `host:port` of an https URL.
fn authority(url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// One request with curl, with `options` of its own: status, headers
/// and body.
pub fn curl(
    bundle: &str,
    options: &[String],
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Reply {
    let mut command = Command::new("curl");
    command.args(["-sS", "-i", "--cacert", bundle, "-H", "Expect:"]);
    command.args(options);
    match method {
        "HEAD" => {
            command.arg("-I");
        }
        "POST" => {
            command.args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/jose+json",
                "--data-binary",
                "@-",
            ]);
        }
        _ => {}
    }
    let mut child = command
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(body.unwrap_or_default().as_bytes())
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = stdout(&output);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| {
        panic!("no answer from {url}: {text}{}", stderr(&output));
    });
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A new EAB key for `entry`: (key id, HMAC key).
pub fn eab(daemon: &Served, entry: &str) -> (String, String) {
    let output = daemon.cli(&["acme", "eab", "create", "--entry", entry, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let created: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(created["entry"], entry);
    (
        created["key_id"].as_str().unwrap().to_owned(),
        created["hmac_key"].as_str().unwrap().to_owned(),
    )
}

/// An account bound to `entry`.
pub fn account(daemon: &Served, entry: &str) -> Client {
    let mut client = Client::new(daemon);
    let (kid, hmac) = eab(daemon, entry);
    let binding = client.binding(&kid, &hmac);
    let made = client.new_account(Some(binding));
    assert_eq!(made.status, 201, "{made:?}");
    client
}

/// A fresh key and a CSR (DER, base64url) for `names`.
pub fn csr(names: &[&str]) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let sans = names
        .iter()
        .map(|name| rcgen::SanType::DnsName((*name).try_into().unwrap()))
        .collect();
    let der = super::csr_for(&key, None, sans);
    (key, b64(&der))
}
