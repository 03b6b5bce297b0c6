//! http-01 (RFC 8555 §8.3): an HTTP/1.1 GET of
//! `/.well-known/acme-challenge/<token>` with `Host: <domain>`, whose 200
//! answer must be the key authorization; at most `MAX_BODY` bytes are
//! read. Up to `MAX_REDIRECTS` redirects are followed, as Let's Encrypt
//! does (web servers redirect to a canonical name, or to https), but only
//! to `http://` on port 80 or `https://` on port 443 (or the test-only
//! `[acme.testing]` ports), to a DNS name that is resolved and checked by
//! the address policy again, so a redirect cannot send certd past it; all
//! within the validation's one deadline. An https server's certificate is
//! not checked (Let's Encrypt does not either): the key authorization in
//! the answer is the proof.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::{ChallengeError, ValidationSettings, address, excerpt};

/// A key authorization is ~87 bytes; anything far larger is not one.
const MAX_BODY: usize = 8 * 1024;

pub(super) async fn validate(
    settings: &ValidationSettings,
    domain: &str,
    token: &str,
    key_authorization: &str,
) -> Result<(), ChallengeError> {
    // The ACME server makes tokens (base64url); checked here all the same,
    // as the token becomes part of a request line.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ChallengeError::IncorrectResponse(format!(
            "the challenge token {} is not base64url",
            excerpt(token.as_bytes())
        )));
    }
    let mut target = Target {
        https: false,
        host: domain.to_owned(),
        port: settings.http_port,
        path: format!("/.well-known/acme-challenge/{token}"),
    };
    for redirects in 0..=MAX_REDIRECTS {
        let Some(redirect) = fetch(settings, &target, key_authorization).await? else {
            return Ok(());
        };
        if redirects == MAX_REDIRECTS {
            return Err(ChallengeError::IncorrectResponse(format!(
                "{} answered with a redirect again, past {MAX_REDIRECTS} redirects",
                redirect.at
            )));
        }
        target = next_target(settings, &target, &redirect.location).map_err(|why| {
            ChallengeError::IncorrectResponse(format!(
                "{} answered {} with a redirect to {}; {why}",
                redirect.at,
                redirect.status,
                excerpt(redirect.location.as_bytes())
            ))
        })?;
    }
    unreachable!("the loop returns by its last turn")
}

/// Redirects followed at most (Let's Encrypt's limit).
const MAX_REDIRECTS: usize = 10;

/// Where one request of a validation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn url(&self) -> String {
        let (scheme, default_port) = if self.https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        if self.port == default_port {
            format!("{scheme}://{}{}", self.host, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// A redirect answered by `at`.
struct Redirect {
    at: String,
    status: StatusCode,
    location: String,
}

/// Where a redirect from `current` to `location` leads, or why certd
/// does not follow it: only `http://` on port 80 or `https://` on port 443
/// (or the test ports), to a DNS name (which `address::connect` resolves
/// and checks), or a path on the same host.
fn next_target(
    settings: &ValidationSettings,
    current: &Target,
    location: &str,
) -> Result<Target, String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Ok(Target {
            path: location.to_owned(),
            ..current.clone()
        });
    }
    let not_http =
        || "certd follows redirects to an http:// or https:// URL or a path only".to_owned();
    let uri: http::Uri = location.parse().map_err(|_| not_http())?;
    let (https, default_port, test_port) = match uri.scheme_str() {
        Some("http") => (false, 80, settings.http_port),
        Some("https") => (true, 443, settings.tls_alpn_port),
        _ => return Err(not_http()),
    };
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    if host.parse::<crate::identity::DnsName>().is_err() {
        return Err(format!(
            "{host:?} is not a DNS name; certd follows redirects to DNS names only"
        ));
    }
    let port = uri.port_u16().unwrap_or(default_port);
    if port != default_port && port != test_port {
        return Err(format!(
            "certd follows redirects to port {default_port} only for {}, not {port}",
            if https { "https" } else { "http" }
        ));
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned());
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}

/// One GET of `target`: `None` if it answered the key authorization, a
/// redirect to follow, or why the validation failed.
async fn fetch(
    settings: &ValidationSettings,
    target: &Target,
    key_authorization: &str,
) -> Result<Option<Redirect>, ChallengeError> {
    let (stream, addr) = address::connect(settings, &target.host, target.port).await?;
    let at = format!("{} ({addr})", target.url());
    if target.https {
        let server_name = ServerName::try_from(target.host.clone()).map_err(|err| {
            ChallengeError::Tls(format!(
                "{} cannot be sent as a TLS server name: {err}",
                target.host
            ))
        })?;
        let config = super::tls_alpn01::client_config(b"http/1.1")?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, stream)
            .await
            .map_err(|err| {
                ChallengeError::Tls(format!("the TLS handshake with {at} failed: {err}"))
            })?;
        exchange(TokioIo::new(tls), target, &at, key_authorization).await
    } else {
        exchange(TokioIo::new(stream), target, &at, key_authorization).await
    }
}

/// The GET of `target` over `io` (a TCP or TLS stream to `at`).
async fn exchange<I>(
    io: I,
    target: &Target,
    at: &str,
    key_authorization: &str,
) -> Result<Option<Redirect>, ChallengeError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let at = at.to_owned();
    let connection_error = |what: &str, err: &dyn std::fmt::Display| {
        ChallengeError::Connection(format!("{what} {at}: {err}"))
    };

    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|err| connection_error("could not talk HTTP to", &err))?;
    // The connection runs beside the request; dropped (and closed) with the
    // guard when this attempt ends, however it ends.
    let _connection = AbortOnDrop(tokio::spawn(connection));

    let request = Request::get(target.path.as_str())
        .header(header::HOST, target.host.as_str())
        .header(header::USER_AGENT, "certd-acme-validator")
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|err| connection_error("could not make the request for", &err))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| connection_error("no HTTP answer from", &err))?;

    let status = response.status();
    if status.is_redirection() {
        let Some(location) = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
        else {
            return Err(ChallengeError::IncorrectResponse(format!(
                "{at} answered {status} without a readable Location"
            )));
        };
        return Ok(Some(Redirect {
            at,
            status,
            location: location.to_owned(),
        }));
    }
    if status != StatusCode::OK {
        return Err(ChallengeError::IncorrectResponse(format!(
            "{at} answered {status}, not 200 OK"
        )));
    }
    let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ChallengeError::IncorrectResponse(format!(
                "{at} answered with a body larger than {} KiB; a key authorization is far shorter",
                MAX_BODY / 1024
            )));
        }
        Err(err) => return Err(connection_error("could not read the answer of", &err)),
    };
    // RFC 8555 §8.3: trailing whitespace (a newline from `echo`) is ignored.
    if body.trim_ascii_end() == key_authorization.as_bytes() {
        Ok(None)
    } else {
        Err(ChallengeError::IncorrectResponse(format!(
            "{at} answered {}, not the key authorization {}",
            excerpt(&body),
            excerpt(key_authorization.as_bytes())
        )))
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use http::Response;
    use http_body_util::Full;
    use hyper::service::service_fn;

    use super::*;

    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const KEY_AUTHORIZATION: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";
    const DOMAIN: &str = "www.example.test";

    /// What the test server answers for the challenge path with the right
    /// Host; anything else gets a 404.
    #[derive(Clone)]
    struct Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: Vec<u8>,
        delay: Duration,
    }

    impl Answer {
        fn ok(body: impl Into<Vec<u8>>) -> Self {
            Self {
                status: 200,
                headers: Vec::new(),
                body: body.into(),
                delay: Duration::ZERO,
            }
        }
    }

    /// A hyper HTTP/1.1 server on 127.0.0.1 (or `ip`), as a web server with the
    /// challenge file would answer; returns its port.
    async fn serve(answer: Answer) -> u16 {
        serve_on(IpAddr::V4(Ipv4Addr::LOCALHOST), answer).await
    }

    async fn serve_on(ip: IpAddr, answer: Answer) -> u16 {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let expected = format!("/.well-known/acme-challenge/{TOKEN}");
                        let host = request.headers().get(header::HOST).map(|h| h.as_bytes());
                        let mut response = Response::builder();
                        let body = if request.uri().path() == expected
                            && host == Some(DOMAIN.as_bytes())
                        {
                            tokio::time::sleep(answer.delay).await;
                            response = response.status(answer.status);
                            for (name, value) in &answer.headers {
                                response = response.header(*name, *value);
                            }
                            answer.body.clone()
                        } else {
                            response = response.status(404);
                            b"not found".to_vec()
                        };
                        Ok::<_, Infallible>(response.body(Full::new(Bytes::from(body))).unwrap())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        port
    }

    fn settings(port: u16) -> ValidationSettings {
        ValidationSettings {
            http_port: port,
            resolve_all_to: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            timeout: Duration::from_secs(5),
            ..ValidationSettings::default()
        }
    }

    async fn check(answer: Answer) -> Result<(), ChallengeError> {
        let port = serve(answer).await;
        validate(&settings(port), DOMAIN, TOKEN, KEY_AUTHORIZATION).await
    }

    #[track_caller]
    fn assert_incorrect(result: Result<(), ChallengeError>, expected_part: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse", "{err}");
        assert!(err.to_string().contains(expected_part), "{err}");
    }

    /// The key authorization, with or without a trailing newline, passes.
    #[tokio::test]
    async fn the_right_answer_passes() {
        check(Answer::ok(KEY_AUTHORIZATION)).await.unwrap();
        check(Answer::ok(format!("{KEY_AUTHORIZATION}\r\n")))
            .await
            .unwrap();
    }

    /// Another key authorization fails, and the message shows both.
    #[tokio::test]
    async fn a_wrong_answer_fails() {
        let err = check(Answer::ok(
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.other",
        ))
        .await
        .unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        let expected = format!(
            "answered \"{TOKEN}.other\", not the key authorization \"{}…\"",
            &KEY_AUTHORIZATION[..64]
        );
        assert!(err.to_string().ends_with(&expected), "{err}");
    }

    /// A missing file (404) fails, naming the URL and the status.
    #[tokio::test]
    async fn not_found_fails() {
        let port = serve(Answer::ok(KEY_AUTHORIZATION)).await;
        let err = validate(&settings(port), DOMAIN, "otherToken", KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        assert_eq!(
            err.to_string(),
            format!(
                "http://www.example.test:{port}/.well-known/acme-challenge/otherToken \
                 (127.0.0.1:{port}) answered 404 Not Found, not 200 OK"
            )
        );
    }

    /// A server that redirects the challenge path to `location`
    /// (`{port}` replaced by its own port) and answers the key
    /// authorization at `/moved`; returns its port.
    async fn serve_redirect(location: &str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let location = location.replace("{port}", &port.to_string());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let location = location.clone();
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let location = location.clone();
                    async move {
                        let response = if request.uri().path() == "/moved" {
                            Response::builder().body(Full::new(Bytes::from(KEY_AUTHORIZATION)))
                        } else {
                            Response::builder()
                                .status(302)
                                .header("location", location)
                                .body(Full::new(Bytes::new()))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        port
    }

    async fn check_redirect(location: &'static str) -> Result<(), ChallengeError> {
        let port = serve_redirect(location).await;
        validate(&settings(port), DOMAIN, TOKEN, KEY_AUTHORIZATION).await
    }

    /// A redirect to a path, or to http:// on the validation port of a
    /// DNS name, is followed (through the address policy again).
    #[tokio::test]
    async fn redirects_to_http_are_followed() {
        check_redirect("/moved").await.unwrap();
        check_redirect("http://www.example.test:{port}/moved")
            .await
            .unwrap();
        check_redirect("http://other.example.test:{port}/moved")
            .await
            .unwrap();
    }

    /// A redirect to https (on the TLS test port, standing for 443) is
    /// followed; the server's self-signed certificate is not checked.
    #[tokio::test]
    async fn a_redirect_to_https_is_followed() {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service =
                        service_fn(|request: Request<hyper::body::Incoming>| async move {
                            let body = if request.uri().path() == "/moved" {
                                KEY_AUTHORIZATION
                            } else {
                                "wrong"
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let location: &'static str =
            Box::leak(format!("https://www.example.test:{tls_port}/moved").into_boxed_str());
        let port = serve_redirect(location).await;
        let settings = ValidationSettings {
            tls_alpn_port: tls_port,
            ..settings(port)
        };
        validate(&settings, DOMAIN, TOKEN, KEY_AUTHORIZATION)
            .await
            .unwrap();
    }

    /// A redirect anywhere else is not followed: an IP address (the
    /// metadata service), https, another port, another scheme; nor past
    /// 10 redirects.
    #[tokio::test]
    async fn other_redirects_are_not_followed() {
        for (location, why) in [
            (
                "http://169.254.169.254/latest/meta-data/",
                "\"169.254.169.254\" is not a DNS name; certd follows redirects to DNS names only",
            ),
            (
                "https://www.example.test:8443/moved",
                "certd follows redirects to port 443 only for https, not 8443",
            ),
            (
                "http://www.example.test:8080/moved",
                "certd follows redirects to port 80 only for http, not 8080",
            ),
            (
                "ftp://www.example.test/moved",
                "certd follows redirects to an http:// or https:// URL or a path only",
            ),
        ] {
            assert_incorrect(check_redirect(location).await, why);
        }
        assert_incorrect(
            check_redirect("/again").await,
            "answered with a redirect again, past 10 redirects",
        );
    }

    /// A body past 8 KiB is refused without being read to its end.
    #[tokio::test]
    async fn an_oversized_body_fails() {
        let mut body = KEY_AUTHORIZATION.as_bytes().to_vec();
        body.resize(MAX_BODY + 1, b' ');
        assert_incorrect(
            check(Answer::ok(body)).await,
            "answered with a body larger than 8 KiB",
        );
        // 8 KiB exactly (the key authorization and trailing spaces) is read.
        let mut body = KEY_AUTHORIZATION.as_bytes().to_vec();
        body.resize(MAX_BODY, b' ');
        check(Answer::ok(body)).await.unwrap();
    }

    /// A server slower than the timeout fails as a connection problem
    /// within the timeout, not when the server gets round to answering.
    #[tokio::test]
    async fn a_slow_server_times_out() {
        let port = serve(Answer {
            delay: Duration::from_secs(30),
            ..Answer::ok(KEY_AUTHORIZATION)
        })
        .await;
        let settings = ValidationSettings {
            timeout: Duration::from_millis(500),
            ..settings(port)
        };
        let started = std::time::Instant::now();
        let err = super::super::validate(
            &settings,
            super::super::ChallengeType::Http01,
            DOMAIN,
            TOKEN,
            KEY_AUTHORIZATION,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.problem_type(), "connection");
        assert_eq!(
            err.to_string(),
            "http-01 validation of www.example.test did not finish within 500ms"
        );
    }

    /// Nothing listening: a connection problem naming the address.
    #[tokio::test]
    async fn a_closed_port_is_a_connection_problem() {
        // Bound but not listening: refused, and not taken meanwhile by a
        // test running beside this one, as a port let go could be.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let err = validate(&settings(port), DOMAIN, TOKEN, KEY_AUTHORIZATION)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "connection");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    /// Without `resolve_all_to`, the name is resolved through the
    /// configured DNS server (a real BIND): its A record is where certd
    /// connects, and an A record to loopback or to the metadata address is
    /// refused before any connection.
    #[tokio::test]
    async fn names_resolve_through_the_configured_dns_server() {
        let Some(bind) = super::super::bind::bind("example.test") else {
            return;
        };
        let settings = |port| ValidationSettings {
            http_port: port,
            resolve_all_to: None,
            dns_servers: vec![bind.addr()],
            timeout: Duration::from_secs(5),
            ..ValidationSettings::default()
        };
        let port = serve(Answer::ok(KEY_AUTHORIZATION)).await;
        for (name, ip, why) in [
            ("loop.example.test", "127.0.0.1", "a loopback address"),
            (
                "metadata.example.test",
                "169.254.169.254",
                "a cloud metadata address",
            ),
        ] {
            bind.add_a(name, ip.parse().unwrap()).unwrap();
            let err = validate(&settings(port), name, TOKEN, KEY_AUTHORIZATION)
                .await
                .unwrap_err();
            assert_eq!(err.problem_type(), "rejectedIdentifier", "{err}");
            assert_eq!(
                err.to_string(),
                format!("certd does not connect to {name}: it resolves to {ip} ({why})")
            );
        }

        let err = validate(
            &settings(port),
            "nowhere.example.test",
            TOKEN,
            KEY_AUTHORIZATION,
        )
        .await
        .unwrap_err();
        assert_eq!(err.problem_type(), "dns", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "nowhere.example.test does not exist (NXDOMAIN from {})",
                bind.addr()
            )
        );

        // The machine's own non-loopback address, where the test server
        // listens too: the A record leads there, and the answer passes.
        let Some(own) = own_address() else {
            eprintln!("SKIPPED (part): this machine has no non-loopback IPv4 address");
            return;
        };
        let port = serve_on(own, Answer::ok(KEY_AUTHORIZATION)).await;
        bind.add_a(DOMAIN, own).unwrap();
        validate(&settings(port), DOMAIN, TOKEN, KEY_AUTHORIZATION)
            .await
            .unwrap_or_else(|err| panic!("{err}\n{}", bind.log()));
    }

    /// The address this machine would send from to a non-local one (a UDP
    /// "connection" sends nothing; it only picks the route).
    fn own_address() -> Option<IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect("192.0.2.1:9").ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    }
}
