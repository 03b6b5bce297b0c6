//! Who may hold a connection open, and for how long, on the TCP listeners.
//!
//! Owns: the per-listener and per-client connection caps and the idle
//! timeout of every accepted TCP connection (gRPC and HTTP). It must not
//! look inside the bytes it carries; TLS and HTTP parsing (and HTTP's
//! header-read timeout) belong to `tls` and `http`.
//!
//! Why: every open connection costs a file descriptor and some memory, so
//! without caps one client opening thousands of idle connections exhausts
//! the daemon's descriptors, and Issue, `/healthz` and the admin socket
//! stop answering for everyone. The caps are sized from the descriptor
//! limit so that the admin socket and the database always keep room.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// File descriptors kept out of the connection budget: the database, the
/// admin socket and its connections, log files, the listeners themselves.
pub(crate) const RESERVED_DESCRIPTORS: u64 = 128;
/// How often, at most, a refused connection is logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long an accept loop waits after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection on `listener`, waiting out failed accepts (usually
/// out of file descriptors: back off, do not spin). Cancel-safe, for
/// `select!` beside a stop signal.
pub(crate) async fn accept(listener: &tokio::net::TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(error = %crate::error_kind::with_causes(&error), "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The caps and timeouts of the TCP listeners (`[connections]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Open connections on one listener; `None`: sized from the descriptor
    /// limit at start (see [`default_max_per_listener`]).
    pub max_per_listener: Option<usize>,
    /// Open connections from one client address (one IPv6 /64) per listener.
    pub max_per_client: usize,
    /// A connection on which nothing is read or written for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// An HTTP request whose headers have not all arrived by then is
    /// closed.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_per_listener: None,
            max_per_client: 256,
            idle_timeout: Duration::from_secs(120),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The per-listener cap when none is configured: half of what the
/// descriptor limit leaves after [`RESERVED_DESCRIPTORS`] (there are two TCP
/// listeners), and at least 16.
pub(crate) fn default_max_per_listener(descriptor_limit: u64) -> usize {
    let budget = descriptor_limit.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(16)
}

/// Raises the soft descriptor limit to the hard one (as Go's runtime and
/// most servers do) and returns the limit now in force.
pub(crate) fn raise_descriptor_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::Resource::NOFILE.get_soft())
        .unwrap_or(1024)
}

/// The connection caps of one listener.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<AdmissionState>,
}

#[derive(Debug)]
struct AdmissionState {
    listener: &'static str,
    max_total: usize,
    max_per_client: usize,
    idle_timeout: Duration,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    last_logged: Option<Instant>,
    refused_since_logged: u64,
}

impl Admission {
    pub fn new(listener: &'static str, settings: &ConnectionSettings, max_total: usize) -> Self {
        Admission {
            inner: Arc::new(AdmissionState {
                listener,
                max_total,
                max_per_client: settings.max_per_client,
                idle_timeout: settings.idle_timeout,
                open: Mutex::new(OpenConnections::default()),
            }),
        }
    }

    /// Admits a freshly accepted connection, wrapped so that it closes when
    /// idle and frees its place when dropped; `None` (and one log line every
    /// few seconds) when a cap is reached, and the caller drops it.
    pub fn admit(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Tracked<TcpStream>> {
        let client = client_key(peer.ip());
        let state = &self.inner;
        let mut open = match state.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        let from_client = open.by_client.get(&client).copied().unwrap_or(0);
        let refusal = if open.total >= state.max_total {
            Some(("connections.max_per_listener", state.max_total))
        } else if from_client >= state.max_per_client {
            Some(("connections.max_per_client", state.max_per_client))
        } else {
            None
        };
        if let Some((field, cap)) = refusal {
            open.refused_since_logged += 1;
            let now = Instant::now();
            if open
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
            {
                tracing::warn!(
                    listener = state.listener,
                    client = %client,
                    open = open.total,
                    from_client,
                    refused = open.refused_since_logged,
                    "connection cap reached ({field} = {cap}): closing new connections until some end"
                );
                open.last_logged = Some(now);
                open.refused_since_logged = 0;
            }
            return None;
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        drop(open);
        Some(Tracked::new(
            tcp,
            state.idle_timeout,
            Place {
                admission: self.inner.clone(),
                client,
            },
        ))
    }

    /// Connections open now, for tests and metrics.
    pub fn open_connections(&self) -> usize {
        match self.inner.open.lock() {
            Ok(open) => open.total,
            Err(poisoned) => poisoned.into_inner().total,
        }
    }
}

/// IPv4 addresses count one by one; IPv6 by /64, the smallest block a
/// single client is normally given.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// A connection's place under the caps, given back when it is dropped.
#[derive(Debug)]
struct Place {
    admission: Arc<AdmissionState>,
    client: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = match self.admission.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// A connection that fails with `TimedOut` once nothing has been read or
/// written for the idle timeout, and holds its place under the caps until
/// dropped. Both directions count as activity, so a long answer being
/// written or a client's keep-alive pings keep it open.
#[derive(Debug)]
pub struct Tracked<IO> {
    inner: IO,
    idle_timeout: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    _place: Place,
}

impl<IO> Tracked<IO> {
    fn new(inner: IO, idle_timeout: Duration, place: Place) -> Self {
        let now = Instant::now();
        Tracked {
            inner,
            idle_timeout,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            _place: place,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Ready with an error once the connection has been idle too long;
    /// otherwise registers to be woken when it might have been.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_activity + self.idle_timeout;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.last_activity + self.idle_timeout <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.touch();
                }
                Poll::Ready(result)
            }
            // A client that stops reading is as idle as one that stops
            // writing.
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Tracked<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn the_default_cap_leaves_room_for_the_reserve() {
        assert_eq!(default_max_per_listener(1024), 448);
        assert_eq!(default_max_per_listener(100), 16);
        assert!(default_max_per_listener(1_048_576) > 500_000);
    }

    #[test]
    fn ipv6_clients_count_by_64_block() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream, SocketAddr) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server, peer)
    }

    #[tokio::test]
    async fn caps_refuse_past_the_limit_and_free_places_on_drop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = ConnectionSettings {
            max_per_client: 2,
            ..ConnectionSettings::default()
        };
        let admission = Admission::new("test", &settings, 3);
        let mut kept = Vec::new();
        for _ in 0..2 {
            let (client, server, peer) = pair(&listener).await;
            kept.push((
                client,
                admission.admit(server, peer).expect("under the cap"),
            ));
        }
        let (_client, server, peer) = pair(&listener).await;
        assert!(
            admission.admit(server, peer).is_none(),
            "a third from one client"
        );
        assert_eq!(admission.open_connections(), 2);
        kept.pop();
        assert_eq!(admission.open_connections(), 1);
        let (_client, server, peer) = pair(&listener).await;
        assert!(admission.admit(server, peer).is_some(), "a place was freed");
    }

    #[tokio::test]
    async fn an_idle_connection_times_out_and_activity_keeps_it_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = ConnectionSettings {
            idle_timeout: Duration::from_millis(300),
            ..ConnectionSettings::default()
        };
        let admission = Admission::new("test", &settings, 10);
        let (mut client, server, peer) = pair(&listener).await;
        let mut tracked = admission.admit(server, peer).unwrap();
        let started = Instant::now();
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 16];
            loop {
                match tracked.read(&mut buf).await {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(error) => return Err((error.kind(), total)),
                }
            }
        });
        // Activity every 100 ms for 600 ms: twice the timeout, still open.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"x").await.unwrap();
        }
        let outcome = reader.await.unwrap();
        assert_eq!(outcome, Err((io::ErrorKind::TimedOut, 6)));
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(admission.open_connections(), 0, "the place is freed");
    }
}
