//! One TCP port for everything a node exchanges with its peers: the
//! connections of any number of concurrent sessions, and control requests.
//!
//! # Routing
//!
//! A dialer writes a short cleartext **preamble** right after the TCP
//! connection is established and before the TLS handshake (see
//! [`Preamble`] and `docs/WIRE_PROTOCOL.md`, "Peer port routing"):
//!
//! | bytes | content                                                     |
//! |------:|-------------------------------------------------------------|
//! | 8     | magic `b"CONCORD\x01"` ([`PREAMBLE_MAGIC`])                 |
//! | 1     | kind: `1` session data, `2` control                         |
//! | 16    | kind 1 only: the session id                                 |
//!
//! A [`PeerPort`] owns the listener and an accept task. For each connection
//! it reads the preamble (within [`PeerPortConfig::preamble_timeout`]; a bad
//! magic or kind, or silence, drops the connection) and then hands the raw
//! [`TcpStream`], positioned at the first TLS byte, to its consumer:
//!
//! - kind 1 goes to the session registered under that id with
//!   [`PeerPort::register`], whose [`SessionInbound`] is given to
//!   [`TlsTransport::establish_routed`](crate::tls::TlsTransport::establish_routed).
//!   A peer may dial before we have created the session locally, so
//!   connections for an id nobody registered are held for
//!   [`PeerPortConfig::hold_unrouted`] and delivered if the session registers
//!   in time; then they are dropped (the transport's dialer dials again).
//! - kind 2 goes to the channel returned by [`PeerPort::take_control`]; each
//!   such connection is then served with [`control_accept`].
//!
//! The preamble is not authenticated: it only chooses who runs the TLS
//! handshake, which authenticates the peer exactly as with a listener of
//! one's own. A forged preamble can at worst make a session's acceptor
//! refuse a connection (wrong certificate or session id in the Hello).
//!
//! # Control requests
//!
//! A control connection carries one request and one reply, over TLS 1.3 with
//! both certificates pinned by SHA-256 fingerprint like session connections:
//! [`control_call`] accepts only the server fingerprint it was given, and
//! [`control_accept`] requires a client certificate that its `allowed`
//! predicate accepts, refusing others during the handshake. Each message is
//! a `u32` big-endian length followed by that many bytes, at most
//! [`MAX_CONTROL_MESSAGE`]; the server closes the connection (TLS
//! `close_notify`) after its reply.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{sleep, timeout_at, Instant};

use concord_wire::WireError;
pub use concord_wire::{
    encode_preamble, parse_preamble, Preamble, PREAMBLE_HEAD_LEN, PREAMBLE_KIND_CONTROL, PREAMBLE_KIND_SESSION,
    PREAMBLE_MAGIC, PREAMBLE_MAX_LEN,
};

use crate::tls::{
    client_config_inner, crypto_provider, fingerprint, lock, server_config_inner, server_name, Allowed,
    FingerprintPredicate, Identity, BACKOFF_START,
};
use crate::{hex, NetError};

/// Default time a connection has to send its preamble (5 s).
pub const DEFAULT_PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a connection for an unregistered session is held (15 s).
pub const DEFAULT_HOLD_UNROUTED: Duration = Duration::from_secs(15);
/// Default maximum number of connections held for unregistered sessions.
pub const DEFAULT_MAX_HELD: usize = 256;
/// Default maximum number of connections whose preamble is being read.
pub const DEFAULT_MAX_PREAMBLE_READS: usize = 256;
/// Maximum size of a control request or reply (16 MiB).
pub const MAX_CONTROL_MESSAGE: usize = 16 << 20;

/// Control connections queued until the consumer takes them.
const CONTROL_QUEUE: usize = 64;
/// How often held connections are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// How long a refused control connection is drained so that the TLS alert
/// reaches the client before the socket closes.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Limits and timeouts of a [`PeerPort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPortConfig {
    /// Time a connection has to send its preamble.
    pub preamble_timeout: Duration,
    /// Time a connection for an unregistered session is held.
    pub hold_unrouted: Duration,
    /// Maximum number of connections held for unregistered sessions; more are dropped.
    pub max_held: usize,
    /// Maximum number of connections whose preamble is being read; more are dropped.
    pub max_preamble_reads: usize,
}

impl Default for PeerPortConfig {
    fn default() -> PeerPortConfig {
        PeerPortConfig {
            preamble_timeout: DEFAULT_PREAMBLE_TIMEOUT,
            hold_unrouted: DEFAULT_HOLD_UNROUTED,
            max_held: DEFAULT_MAX_HELD,
            max_preamble_reads: DEFAULT_MAX_PREAMBLE_READS,
        }
    }
}

// ---------------------------------------------------------------------------
// Routing state.

struct Registration {
    token: u64,
    tx: mpsc::UnboundedSender<TcpStream>,
}

struct Held {
    stream: TcpStream,
    until: Instant,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<[u8; 16], Registration>,
    held: HashMap<[u8; 16], Vec<Held>>,
    held_count: usize,
    control: Option<mpsc::Sender<TcpStream>>,
    control_taken: bool,
    next_token: u64,
    closed: bool,
}

struct Shared {
    cfg: PeerPortConfig,
    registry: Mutex<Registry>,
}

impl Shared {
    fn route_session(&self, id: [u8; 16], stream: TcpStream, addr: SocketAddr) {
        let mut reg = lock(&self.registry);
        if reg.closed {
            return;
        }
        if let Some(r) = reg.sessions.get(&id) {
            if r.tx.send(stream).is_err() {
                tracing::debug!(%addr, session = %hex(&id), "session is going away, dropping connection");
            }
            return;
        }
        if reg.held_count >= self.cfg.max_held {
            tracing::debug!(%addr, session = %hex(&id), "too many connections for unknown sessions, dropping");
            return;
        }
        tracing::debug!(%addr, session = %hex(&id), "holding connection for a session not registered yet");
        let until = Instant::now() + self.cfg.hold_unrouted;
        reg.held.entry(id).or_default().push(Held { stream, until });
        reg.held_count += 1;
    }

    fn route_control(&self, stream: TcpStream, addr: SocketAddr) {
        let reg = lock(&self.registry);
        match &reg.control {
            Some(tx) => {
                if let Err(e) = tx.try_send(stream) {
                    tracing::debug!(%addr, error = %e, "control queue unavailable, dropping connection");
                }
            }
            None => tracing::debug!(%addr, "nobody takes control connections, dropping"),
        }
    }

    /// Drop held connections whose time is up.
    fn sweep(&self, now: Instant) {
        let mut reg = lock(&self.registry);
        let mut dropped = 0;
        reg.held.retain(|id, conns| {
            let before = conns.len();
            conns.retain(|h| h.until > now);
            if conns.len() < before {
                tracing::debug!(session = %hex(id), count = before - conns.len(), "dropping connections held too long");
            }
            dropped += before - conns.len();
            !conns.is_empty()
        });
        reg.held_count -= dropped;
    }

    fn close(&self) {
        let mut reg = lock(&self.registry);
        reg.closed = true;
        reg.sessions.clear();
        reg.held.clear();
        reg.held_count = 0;
        reg.control = None;
    }
}

/// Read a preamble without consuming anything after it.
async fn read_preamble<R: AsyncRead + Unpin>(r: &mut R) -> Result<Preamble, PreambleError> {
    let mut buf = [0u8; PREAMBLE_MAX_LEN];
    let mut have = PREAMBLE_HEAD_LEN;
    r.read_exact(&mut buf[..have]).await.map_err(PreambleError::Io)?;
    loop {
        match parse_preamble(&buf[..have]) {
            Ok(p) => return Ok(p),
            Err(WireError::Truncated { needed, .. }) if needed > have && needed <= buf.len() => {
                r.read_exact(&mut buf[have..needed]).await.map_err(PreambleError::Io)?;
                have = needed;
            }
            Err(e) => return Err(PreambleError::Wire(e)),
        }
    }
}

#[derive(Debug)]
enum PreambleError {
    Io(io::Error),
    Wire(WireError),
}

impl fmt::Display for PreambleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreambleError::Io(e) => write!(f, "{e}"),
            PreambleError::Wire(e) => write!(f, "{e}"),
        }
    }
}

async fn route(shared: Arc<Shared>, mut stream: TcpStream, addr: SocketAddr) {
    let deadline = Instant::now() + shared.cfg.preamble_timeout;
    let preamble = match timeout_at(deadline, read_preamble(&mut stream)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "dropping connection: bad preamble");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, after = ?shared.cfg.preamble_timeout, "dropping connection: no preamble in time");
            return;
        }
    };
    match preamble {
        Preamble::Session(id) => shared.route_session(id, stream, addr),
        Preamble::Control => shared.route_control(stream, addr),
    }
}

async fn accept_task(listener: TcpListener, shared: Arc<Shared>) {
    let mut readers = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while readers.try_join_next().is_some() {}
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    if readers.len() >= shared.cfg.max_preamble_reads {
                        tracing::debug!(%addr, "too many connections sending their preamble, dropping");
                        continue;
                    }
                    readers.spawn(route(shared.clone(), stream, addr));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer port: accept failed");
                    sleep(BACKOFF_START).await;
                }
            },
            now = sweep.tick() => shared.sweep(now),
        }
    }
}

// ---------------------------------------------------------------------------
// PeerPort.

struct PortHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept: AbortHandle,
}

impl Drop for PortHandle {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.close();
    }
}

/// A listener shared by all sessions and control requests of a node (see the
/// [module docs](self)).
///
/// Cloning gives another handle to the same port. Dropping the last handle,
/// or [`PeerPort::shutdown`], stops the accept task and closes the listener;
/// every [`SessionInbound`] then ends and held connections are dropped.
#[derive(Clone)]
pub struct PeerPort {
    inner: Arc<PortHandle>,
}

impl fmt::Debug for PeerPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerPort").field("local_addr", &self.inner.local_addr).finish_non_exhaustive()
    }
}

impl PeerPort {
    /// Start routing the connections of `listener`, with default limits.
    /// Must be called within a Tokio runtime.
    pub fn start(listener: TcpListener) -> Result<PeerPort, NetError> {
        PeerPort::start_with(listener, PeerPortConfig::default())
    }

    /// Start routing the connections of `listener` with the given limits.
    /// Must be called within a Tokio runtime.
    pub fn start_with(listener: TcpListener, cfg: PeerPortConfig) -> Result<PeerPort, NetError> {
        let local_addr =
            listener.local_addr().map_err(|e| NetError::Io { who: "peer port listener".to_owned(), source: e })?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| NetError::PeerPort(format!("cannot start outside a Tokio runtime: {e}")))?;
        let shared = Arc::new(Shared { cfg, registry: Mutex::new(Registry::default()) });
        let accept = runtime.spawn(accept_task(listener, shared.clone())).abort_handle();
        Ok(PeerPort { inner: Arc::new(PortHandle { shared, local_addr, accept }) })
    }

    /// The address the port listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Receive the connections for `session_id`, including any held for it
    /// that arrived before. Dropping the returned [`SessionInbound`]
    /// unregisters the session.
    ///
    /// Fails if the session is already registered or the port is shut down.
    pub fn register(&self, session_id: [u8; 16]) -> Result<SessionInbound, NetError> {
        let mut reg = lock(&self.inner.shared.registry);
        if reg.closed {
            return Err(NetError::PeerPort("shut down".to_owned()));
        }
        if reg.sessions.contains_key(&session_id) {
            return Err(NetError::PeerPort(format!("session {} is already registered", hex(&session_id))));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(held) = reg.held.remove(&session_id) {
            reg.held_count -= held.len();
            let now = Instant::now();
            for h in held {
                if h.until > now {
                    // The receiver is alive: it is returned below.
                    let _ = tx.send(h.stream);
                }
            }
        }
        let token = reg.next_token;
        reg.next_token += 1;
        reg.sessions.insert(session_id, Registration { token, tx });
        Ok(SessionInbound { session_id, rx, shared: Arc::downgrade(&self.inner.shared), token })
    }

    /// The channel of incoming control connections (preamble consumed, TLS
    /// not started; serve each with [`control_accept`]). Returns `Some` only
    /// the first time; until then control connections are dropped.
    pub fn take_control(&self) -> Option<mpsc::Receiver<TcpStream>> {
        let mut reg = lock(&self.inner.shared.registry);
        if reg.control_taken || reg.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        reg.control = Some(tx);
        reg.control_taken = true;
        Some(rx)
    }

    /// Stop accepting connections and close the listener; every
    /// [`SessionInbound`] and the control channel end, held connections are
    /// dropped. Later [`PeerPort::register`] calls fail.
    pub fn shutdown(&self) {
        self.inner.accept.abort();
        self.inner.shared.close();
    }
}

/// The incoming connections of one session on a [`PeerPort`]: raw TCP
/// streams whose preamble has been read, positioned at the TLS handshake.
///
/// Dropping it unregisters the session (connections that arrive later are
/// held as for an unknown session).
pub struct SessionInbound {
    session_id: [u8; 16],
    rx: mpsc::UnboundedReceiver<TcpStream>,
    shared: Weak<Shared>,
    token: u64,
}

impl SessionInbound {
    /// The session id the connections are routed for.
    pub fn session_id(&self) -> [u8; 16] {
        self.session_id
    }

    /// The next connection; `None` once the port is shut down.
    pub async fn recv(&mut self) -> Option<TcpStream> {
        self.rx.recv().await
    }
}

impl fmt::Debug for SessionInbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionInbound").field("session_id", &hex(&self.session_id)).finish_non_exhaustive()
    }
}

impl Drop for SessionInbound {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut reg = lock(&shared.registry);
            if reg.sessions.get(&self.session_id).is_some_and(|r| r.token == self.token) {
                reg.sessions.remove(&self.session_id);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Control RPC.

enum MsgError {
    Io(io::Error),
    TooLarge(usize),
}

async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> Result<(), MsgError> {
    let len = u32::try_from(msg.len()).ok().filter(|&l| l as usize <= MAX_CONTROL_MESSAGE);
    let Some(len) = len else {
        return Err(MsgError::TooLarge(msg.len()));
    };
    w.write_all(&len.to_be_bytes()).await.map_err(MsgError::Io)?;
    w.write_all(msg).await.map_err(MsgError::Io)?;
    w.flush().await.map_err(MsgError::Io)
}

async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, MsgError> {
    let mut lb = [0u8; 4];
    r.read_exact(&mut lb).await.map_err(MsgError::Io)?;
    let len = u32::from_be_bytes(lb) as usize;
    if len > MAX_CONTROL_MESSAGE {
        return Err(MsgError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(MsgError::Io)?;
    Ok(buf)
}

fn timed_out(who: &str, what: &str, after: Duration) -> NetError {
    NetError::Io { who: who.to_owned(), source: io::Error::new(io::ErrorKind::TimedOut, format!("{what} {after:?}")) }
}

/// Whether `e` is a TLS alert by which the peer refused our certificate.
fn refusal_alert(e: &io::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(
            a @ (A::AccessDenied
            | A::BadCertificate
            | A::CertificateUnknown
            | A::UnknownCA
            | A::CertificateRequired
            | A::UnsupportedCertificate),
        )) => Some(*a),
        _ => None,
    }
}

/// Send one control request to the node at `addr` (`host:port`, host names
/// are resolved) and return its reply.
///
/// Writes the control preamble, runs a TLS 1.3 handshake presenting
/// `identity` and accepting only a server certificate whose fingerprint is
/// `fingerprint`, then sends `request` and reads the reply (each a `u32`
/// big-endian length and the bytes, at most [`MAX_CONTROL_MESSAGE`]). The
/// whole call takes at most `timeout`.
///
/// Errors: [`NetError::UnpinnedCertificate`] if the server presents another
/// certificate; [`NetError::CertificateRefused`] (naming our fingerprint) if
/// the server refuses ours; [`NetError::ControlMessageTooLarge`] for an
/// oversized request or announced reply; [`NetError::Io`] with
/// [`io::ErrorKind::TimedOut`] when `timeout` passes.
pub async fn control_call(
    identity: &Identity,
    addr: &str,
    fingerprint: [u8; 32],
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, NetError> {
    let who = format!("control server at {addr}");
    if request.len() > MAX_CONTROL_MESSAGE {
        return Err(NetError::ControlMessageTooLarge { who, size: request.len(), limit: MAX_CONTROL_MESSAGE });
    }
    let deadline = Instant::now() + timeout;
    match timeout_at(deadline, call_inner(identity, addr, &who, fingerprint, request)).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(&who, "control call not answered within", timeout)),
    }
}

async fn call_inner(
    identity: &Identity,
    addr: &str,
    who: &str,
    expected: [u8; 32],
    request: &[u8],
) -> Result<Vec<u8>, NetError> {
    let io_err = |e: io::Error| NetError::Io { who: who.to_owned(), source: e };
    let key = identity.certified_key()?;
    let mine = hex(&identity.fingerprint());
    let refused =
        |reason: String| NetError::CertificateRefused { addr: addr.to_owned(), fingerprint: mine.clone(), reason };
    let mut tcp = TcpStream::connect(addr).await.map_err(io_err)?;
    tcp.set_nodelay(true).map_err(io_err)?;
    tcp.write_all(&encode_preamble(&Preamble::Control)).await.map_err(io_err)?;
    let (cfg, presented) = client_config_inner(&crypto_provider(), &key, expected)?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let mut tls = match connector.connect(server_name(), tcp).await {
        Ok(s) => s,
        Err(e) => {
            return Err(if let Some(fp) = presented.refused() {
                NetError::UnpinnedCertificate { addr: addr.to_owned(), fingerprint: hex(&fp) }
            } else if let Some(alert) = refusal_alert(&e) {
                refused(format!("TLS alert {alert:?}"))
            } else {
                NetError::Tls { who: who.to_owned(), reason: format!("handshake failed: {e}") }
            })
        }
    };
    let msg_err = |e: MsgError| match e {
        MsgError::TooLarge(size) => {
            NetError::ControlMessageTooLarge { who: who.to_owned(), size, limit: MAX_CONTROL_MESSAGE }
        }
        MsgError::Io(e) => match refusal_alert(&e) {
            Some(alert) => refused(format!("TLS alert {alert:?}")),
            None if e.kind() == io::ErrorKind::UnexpectedEof => NetError::Tls {
                who: who.to_owned(),
                reason: format!("connection closed without a reply (our certificate {mine} may not be accepted there)"),
            },
            None => io_err(e),
        },
    };
    write_message(&mut tls, request).await.map_err(msg_err)?;
    let reply = read_message(&mut tls).await.map_err(msg_err)?;
    // Best effort: the server closes the connection after its reply anyway.
    let _ = tls.shutdown().await;
    Ok(reply)
}

/// A control request read by [`control_accept`], to be answered with
/// [`ControlRequest::reply`] (dropping it closes the connection without a reply).
pub struct ControlRequest {
    /// SHA-256 fingerprint of the client's certificate (accepted by `allowed`).
    pub peer_fingerprint: [u8; 32],
    /// The client's address.
    pub peer_addr: SocketAddr,
    /// The request bytes.
    pub request: Vec<u8>,
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    timeout: Duration,
}

impl fmt::Debug for ControlRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlRequest")
            .field("peer_fingerprint", &hex(&self.peer_fingerprint))
            .field("peer_addr", &self.peer_addr)
            .field("request_len", &self.request.len())
            .finish_non_exhaustive()
    }
}

impl ControlRequest {
    /// Send the reply (at most [`MAX_CONTROL_MESSAGE`] bytes) and close the
    /// connection; takes at most the `timeout` given to [`control_accept`].
    pub async fn reply(mut self, bytes: &[u8]) -> Result<(), NetError> {
        let who = format!("control client at {}", self.peer_addr);
        let deadline = Instant::now() + self.timeout;
        let r = timeout_at(deadline, async {
            write_message(&mut self.stream, bytes).await?;
            self.stream.shutdown().await.map_err(MsgError::Io)
        })
        .await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(MsgError::TooLarge(size))) => {
                Err(NetError::ControlMessageTooLarge { who, size, limit: MAX_CONTROL_MESSAGE })
            }
            Ok(Err(MsgError::Io(e))) => Err(NetError::Io { who, source: e }),
            Err(_) => Err(timed_out(&who, "reply not sent within", self.timeout)),
        }
    }
}

/// Serve the TLS side of a control connection (from
/// [`PeerPort::take_control`], preamble already consumed) and read its
/// request, all within `timeout`.
///
/// The handshake requires a client certificate whose SHA-256 fingerprint
/// `allowed` accepts; another certificate is refused during the handshake
/// (the client sees a TLS alert) and the error is
/// [`NetError::UnpinnedCertificate`] naming its fingerprint. The predicate is
/// shared (`Arc`) because rustls keeps it for the connection.
pub async fn control_accept(
    stream: TcpStream,
    identity: &Identity,
    allowed: FingerprintPredicate,
    timeout: Duration,
) -> Result<ControlRequest, NetError> {
    let peer_addr = stream.peer_addr().map_err(|e| NetError::Io { who: "control client".to_owned(), source: e })?;
    let who = format!("control client at {peer_addr}");
    stream.set_nodelay(true).map_err(|e| NetError::Io { who: who.clone(), source: e })?;
    let key = identity.certified_key()?;
    let (cfg, presented) = server_config_inner(&crypto_provider(), &key, Allowed::Predicate(allowed))?;
    let deadline = Instant::now() + timeout;
    let accept = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).into_fallible();
    let mut tls = match timeout_at(deadline, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err((e, tcp))) => {
            let err = match presented.refused() {
                Some(fp) => NetError::UnpinnedCertificate { addr: peer_addr.to_string(), fingerprint: hex(&fp) },
                None => NetError::Tls { who, reason: format!("handshake failed: {e}") },
            };
            linger(tcp, deadline.min(Instant::now() + REFUSE_LINGER)).await;
            return Err(err);
        }
        Err(_) => return Err(timed_out(&who, "TLS handshake not completed within", timeout)),
    };
    let Some(peer_fingerprint) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint(c))
    else {
        return Err(NetError::Tls { who, reason: "no client certificate".to_owned() });
    };
    let request = match timeout_at(deadline, read_message(&mut tls)).await {
        Ok(Ok(r)) => r,
        Ok(Err(MsgError::TooLarge(size))) => {
            return Err(NetError::ControlMessageTooLarge { who, size, limit: MAX_CONTROL_MESSAGE })
        }
        Ok(Err(MsgError::Io(e))) => return Err(NetError::Io { who, source: e }),
        Err(_) => return Err(timed_out(&who, "request not received within", timeout)),
    };
    Ok(ControlRequest { peer_fingerprint, peer_addr, request, stream: tls, timeout })
}

/// Close our side and read until the peer closes (or `until`), so that a TLS
/// alert we sent is not destroyed by a reset caused by unread data.
async fn linger(mut tcp: TcpStream, until: Instant) {
    let _ = timeout_at(until, async {
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
