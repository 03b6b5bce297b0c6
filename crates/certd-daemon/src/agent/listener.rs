//! The agent's Unix socket: binding it world-connectable (the kernel says
//! who calls, so no file permission needs to), and admitting connections
//! within caps, each carrying the kernel's credentials for its peer.
//!
//! Caps: connections in all, and per uid, so one local user opening
//! thousands of connections exhausts only its own share; other users'
//! workloads keep being served.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use bytes::BytesMut;

use super::authority::AuthorityRewriter;
use super::peer::PeerCredentials;

/// Caps on the agent socket's connections.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    pub max_connections: usize,
    pub max_per_uid: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_connections: 4096,
            max_per_uid: 256,
        }
    }
}

/// How much one read from a client's socket takes at most.
const READ_CHUNK: usize = 8192;

/// How often, at most, a refused connection is logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Binds `path`, replacing a socket left by an agent that died, and makes
/// it connectable by every user.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another agent is serving this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

/// One admitted connection and its peer's credentials. What the client
/// sends reaches the server through an [`AuthorityRewriter`], so that any
/// `:authority` is accepted.
pub(crate) struct AgentConnection {
    stream: UnixStream,
    credentials: PeerCredentials,
    rewriter: AuthorityRewriter,
    /// What one read from the socket lands in, before the rewriter; kept
    /// for the connection rather than zeroed on the stack at every read.
    raw: Box<[u8]>,
    /// Rewritten bytes the server has not read yet.
    rewritten: BytesMut,
    _place: Place,
}

/// Counts a connection against the caps until dropped.
struct Place {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
    last_refusal_log: Option<Instant>,
}

impl Drop for Place {
    fn drop(&mut self) {
        super::metrics::get().connections_open.dec();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_uid.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                counts.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Accepts on `listener` for as long as the stream is polled.
pub(crate) fn incoming(
    listener: UnixListener,
    limits: SocketLimits,
) -> ReceiverStream<io::Result<AgentConnection>> {
    let (sender, receiver) = mpsc::channel(16);
    let counts = Arc::new(Mutex::new(Counts::default()));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, usually: wait rather than spin.
                    tracing::warn!(error = %crate::error_kind::with_causes(&error), "agent socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(credentials) = stream.peer_cred() else {
                continue;
            };
            let credentials = PeerCredentials {
                pid: credentials.pid(),
                uid: credentials.uid(),
                gid: credentials.gid(),
                accepted_at: SystemTime::now(),
            };
            let Some(place) = admit(&counts, credentials.uid, limits) else {
                continue;
            };
            let connection = AgentConnection {
                stream,
                credentials,
                rewriter: AuthorityRewriter::new(),
                raw: vec![0; READ_CHUNK].into_boxed_slice(),
                rewritten: BytesMut::new(),
                _place: place,
            };
            if sender.send(Ok(connection)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

fn admit(counts: &Arc<Mutex<Counts>>, uid: u32, limits: SocketLimits) -> Option<Place> {
    let mut guard = counts.lock().unwrap_or_else(|p| p.into_inner());
    let of_uid = guard.per_uid.get(&uid).copied().unwrap_or(0);
    let refusal = if guard.total >= limits.max_connections {
        Some("max_connections")
    } else if of_uid >= limits.max_per_uid {
        Some("max_per_uid")
    } else {
        None
    };
    if let Some(cap) = refusal {
        super::metrics::get().refused(cap);
        let now = Instant::now();
        if guard
            .last_refusal_log
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL)
        {
            guard.last_refusal_log = Some(now);
            tracing::warn!(uid, cap, "agent socket: connection cap reached; refusing");
        }
        return None;
    }
    guard.total += 1;
    *guard.per_uid.entry(uid).or_default() += 1;
    super::metrics::get().connections_open.inc();
    Some(Place {
        counts: counts.clone(),
        uid,
    })
}

impl tonic::transport::server::Connected for AgentConnection {
    type ConnectInfo = PeerCredentials;

    fn connect_info(&self) -> PeerCredentials {
        self.credentials
    }
}

impl AsyncRead for AgentConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rewritten.is_empty() {
                let count = buf.remaining().min(this.rewritten.len());
                buf.put_slice(&this.rewritten.split_to(count));
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.raw);
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter.feed(raw.filled(), &mut this.rewritten)?;
        }
    }
}

impl AsyncWrite for AgentConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
