//! A small ACME client (RFC 8555) for `certd bench acme`: one account key
//! shared by many connections, each a kept-alive HTTP/1.1 connection with
//! its own nonce; an account made with EAB; an order taken through its
//! http-01 challenges (answered by the caller's responder), finalized and
//! downloaded. ACME clients of services use their own (certbot, lego…).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::Digest;

use super::{ClientError, TlsClientSettings};
use crate::ErrorKind;
use crate::acme::jws::b64;

/// Largest answer read: a certificate chain, an order.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// How often an authorization or an order is polled while certd works on
/// it; a measured latency includes up to this much waiting.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long an order may take to become valid.
const ORDER_DEADLINE: Duration = Duration::from_secs(60);

/// An account key (ECDSA P-256, ES256).
pub struct AcmeAccountKey {
    pair: EcdsaKeyPair,
    jwk: Value,
    thumbprint: String,
}

impl AcmeAccountKey {
    pub fn generate() -> Result<Self, ClientError> {
        let failed = |what: &str| ClientError::Setup(format!("cannot make an account key: {what}"));
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| failed("generate"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| failed("read back"))?;
        // An uncompressed point: 0x04, x, y.
        let point = pair.public_key().as_ref();
        let (x, y) = (b64(&point[1..33]), b64(&point[33..]));
        // RFC 7638: the required members in lexicographic order.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = b64(&sha2::Sha256::digest(canonical.as_bytes()));
        Ok(AcmeAccountKey {
            pair,
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
            thumbprint,
        })
    }

    /// The RFC 7638 thumbprint: what an http-01 key authorization ends
    /// with (`token.thumbprint`).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    fn sign(&self, mut header: Value, payload: &str) -> Result<Vec<u8>, ClientError> {
        header["alg"] = "ES256".into();
        let protected = b64(header.to_string().as_bytes());
        let payload = b64(payload.as_bytes());
        let signature = self
            .pair
            .sign(
                &ring::rand::SystemRandom::new(),
                format!("{protected}.{payload}").as_bytes(),
            )
            .map_err(|_| ClientError::Setup("cannot sign an ACME request".into()))?;
        Ok(
            json!({"protected": protected, "payload": payload, "signature": b64(signature.as_ref())})
                .to_string()
                .into_bytes(),
        )
    }
}

/// One connection to certd's ACME server, acting for one account key.
pub struct AcmeClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
    directory: Value,
    key: Arc<AcmeAccountKey>,
    /// The account URL, once known.
    kid: Option<String>,
    nonce: Option<String>,
}

/// A successful answer: its `Location` and body (its `Replay-Nonce` is
/// kept by the client).
struct Answer {
    location: Option<String>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Refused {
            kind: ErrorKind::Internal,
            message: format!("the ACME answer is not JSON: {e}"),
        })
    }
}

impl AcmeClient {
    /// Connects to the ACME server whose directory is `directory_url`
    /// (`https://host:port/acme/directory`), and reads the directory.
    pub async fn connect(
        directory_url: &str,
        ca_bundle_pem: &str,
        key: Arc<AcmeAccountKey>,
    ) -> Result<Self, ClientError> {
        let tls = TlsClientSettings {
            ca_bundle_pem: ca_bundle_pem.to_owned(),
            identity: None,
        };
        let (sender, uri) = super::https::connect(directory_url, "ACME directory", &tls).await?;
        let mut client = AcmeClient {
            sender,
            authority: uri
                .authority()
                .map(|authority| authority.as_str().to_owned())
                .unwrap_or_default(),
            directory: Value::Null,
            key,
            kid: None,
            nonce: None,
        };
        let answer = client.send("GET", directory_url, None).await?;
        client.directory = answer.json()?;
        Ok(client)
    }

    /// Acts for the account at `kid` (made by another connection).
    pub fn with_account(mut self, kid: String) -> Self {
        self.kid = Some(kid);
        self
    }

    /// Makes the account, bound by EAB key `key_id` (its HMAC key
    /// base64url); returns its URL.
    pub async fn new_account(
        &mut self,
        key_id: &str,
        hmac_key: &str,
    ) -> Result<String, ClientError> {
        let url = self.url("newAccount")?;
        let protected = b64(json!({"alg": "HS256", "kid": key_id, "url": url})
            .to_string()
            .as_bytes());
        let payload = b64(self.key.jwk.to_string().as_bytes());
        let hmac = crate::acme::jws::unb64("the EAB HMAC key", hmac_key)
            .map_err(|problem| ClientError::invalid("the EAB HMAC key", problem))?;
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &hmac),
            format!("{protected}.{payload}").as_bytes(),
        );
        let binding =
            json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())});
        let answer = self
            .post(
                &url,
                Some(json!({"termsOfServiceAgreed": true, "externalAccountBinding": binding})),
            )
            .await?;
        let kid = answer
            .location
            .ok_or_else(|| refused(500, "newAccount gave no account URL"))?;
        self.kid = Some(kid.clone());
        Ok(kid)
    }

    /// Orders a certificate for `names`, answers its pending
    /// authorizations' http-01 challenges (someone must serve the key
    /// authorizations), finalizes with `csr_der` and downloads the chain
    /// (PEM).
    pub async fn order_certificate(
        &mut self,
        names: &[String],
        csr_der: &[u8],
    ) -> Result<String, ClientError> {
        let deadline = Instant::now() + ORDER_DEADLINE;
        let identifiers: Vec<Value> = names
            .iter()
            .map(|name| json!({"type": "dns", "value": name}))
            .collect();
        let new_order = self.url("newOrder")?;
        let answer = self
            .post(&new_order, Some(json!({ "identifiers": identifiers })))
            .await?;
        let order_url = answer
            .location
            .clone()
            .ok_or_else(|| refused(500, "newOrder gave no order URL"))?;
        let mut order = answer.json()?;
        if order["status"] == "pending" {
            let authorizations: Vec<String> = order["authorizations"]
                .as_array()
                .map(|urls| {
                    urls.iter()
                        .filter_map(|url| url.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for authz_url in authorizations {
                self.authorize(&authz_url, deadline).await?;
            }
        }
        let finalize = text(&order, "finalize")?;
        order = self
            .post(&finalize, Some(json!({ "csr": b64(csr_der) })))
            .await?
            .json()?;
        while order["status"] == "processing" {
            wait(deadline, "the order to be issued").await?;
            order = self.post(&order_url, None).await?.json()?;
        }
        if order["status"] != "valid" {
            return Err(refused(
                403,
                &format!("the order ended {}: {}", order["status"], order["error"]),
            ));
        }
        let certificate = text(&order, "certificate")?;
        let chain = self.post(&certificate, None).await?;
        String::from_utf8(chain.body.to_vec())
            .map_err(|_| refused(500, "the certificate chain is not PEM"))
    }

    /// Answers the http-01 challenge of a pending authorization and polls
    /// it until it is valid.
    async fn authorize(&mut self, authz_url: &str, deadline: Instant) -> Result<(), ClientError> {
        let authz = self.post(authz_url, None).await?.json()?;
        if authz["status"] == "valid" {
            return Ok(());
        }
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|challenges| {
                challenges
                    .iter()
                    .find(|challenge| challenge["type"] == "http-01")
            })
            .ok_or_else(|| refused(403, "the authorization offers no http-01 challenge"))?;
        let challenge_url = text(challenge, "url")?;
        self.post(&challenge_url, Some(json!({}))).await?;
        loop {
            wait(deadline, "http-01 validation").await?;
            let authz = self.post(authz_url, None).await?.json()?;
            match authz["status"].as_str() {
                Some("valid") => return Ok(()),
                Some("pending") => continue,
                _ => {
                    let error = authz["challenges"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|challenge| challenge.get("error"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    return Err(refused(403, &format!("http-01 validation failed: {error}")));
                }
            }
        }
    }

    fn url(&self, resource: &str) -> Result<String, ClientError> {
        text(&self.directory, resource)
    }

    /// A signed POST (`None`: POST-as-GET), again once with a fresh nonce
    /// if certd says badNonce, as RFC 8555 §6.5 asks clients to.
    async fn post(&mut self, url: &str, payload: Option<Value>) -> Result<Answer, ClientError> {
        let payload = payload.map(|value| value.to_string()).unwrap_or_default();
        let mut retried = false;
        loop {
            let nonce = match self.nonce.take() {
                Some(nonce) => nonce,
                None => {
                    let new_nonce = self.url("newNonce")?;
                    self.send("HEAD", &new_nonce, None).await?;
                    self.nonce
                        .take()
                        .ok_or_else(|| refused(500, "newNonce gave no nonce"))?
                }
            };
            let mut header = json!({"nonce": nonce, "url": url});
            match &self.kid {
                Some(kid) => header["kid"] = kid.clone().into(),
                None => header["jwk"] = self.key.jwk.clone(),
            }
            let body = self.key.sign(header, &payload)?;
            match self.send("POST", url, Some(body)).await {
                Err(ClientError::Refused { message, .. })
                    if !retried && message.starts_with("badNonce") =>
                {
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// One request; a problem document becomes `Refused` with its type.
    async fn send(
        &mut self,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let path = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.path_and_query().map(|path| path.as_str().to_owned()))
            .ok_or_else(|| ClientError::Setup(format!("{url:?} is not a URL")))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/jose+json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let response = super::https::send(&mut self.sender, request, url).await?;
        let unreachable = |reason: String| ClientError::Unreachable {
            target: url.to_owned(),
            reason,
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let location = header("location");
        if let Some(nonce) = header("replay-nonce") {
            self.nonce = Some(nonce);
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status >= 400 {
            let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let kind = problem["type"]
                .as_str()
                .and_then(|kind| kind.strip_prefix("urn:ietf:params:acme:error:"))
                .unwrap_or("HTTP error");
            return Err(refused(
                status,
                &format!("{kind}: {}", problem["detail"].as_str().unwrap_or_default()),
            ));
        }
        Ok(Answer { location, body })
    }
}

/// A string member of an ACME object.
fn text(object: &Value, member: &str) -> Result<String, ClientError> {
    object[member]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| refused(500, &format!("the ACME answer has no {member}: {object}")))
}

async fn wait(deadline: Instant, what: &str) -> Result<(), ClientError> {
    if Instant::now() >= deadline {
        return Err(refused(
            504,
            &format!("gave up waiting for {what} after {ORDER_DEADLINE:?}"),
        ));
    }
    tokio::time::sleep(POLL_EVERY).await;
    Ok(())
}

/// A refusal by HTTP status, in certd's error kinds.
fn refused(status: u16, message: &str) -> ClientError {
    ClientError::Refused {
        kind: match status {
            429 => ErrorKind::Exhausted,
            401 | 403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            500..=599 => ErrorKind::Internal,
            _ => ErrorKind::InvalidInput,
        },
        message: message.to_owned(),
    }
}
