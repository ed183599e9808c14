//! TCP with mutually authenticated TLS 1.3, peers pinned by certificate
//! fingerprint, carrying the frames of [`concord_wire`].
//!
//! # Connection setup
//!
//! Every party has an [`Identity`] (a self-signed certificate and its key)
//! and knows, for every other party, its address and the SHA-256 fingerprint
//! of its certificate ([`TlsPeer`]). There is no certificate authority: a
//! certificate is trusted exactly when its fingerprint is pinned.
//!
//! Party `i` dials every party `j < i` (retrying with a short backoff until
//! [`TlsConfig::connect_timeout`], since parties start at different times)
//! and accepts a connection from every party `j > i` on the listener it was
//! given. The TLS handshake is TLS 1.3 only, with client authentication
//! required on both sides; the dialer accepts only the pinned certificate of
//! the party it dialed, the acceptor only certificates pinned for the session,
//! and both verify the handshake signatures with the `ring` provider.
//!
//! After the handshake the dialer sends a `Hello` frame (its index and the
//! number of parties). The acceptor checks the session id, that the claimed
//! index is a party that should dial it, that the client certificate is that
//! party's pinned one and that the party count matches; it answers with its
//! own `Hello`, or with an `Abort` frame giving the reason before closing.
//! The dialer checks the answer the same way.
//!
//! A failure by an authenticated peer (wrong session, bad Hello, bad frame)
//! fails [`TlsTransport::establish`] at once. A failure of an unauthenticated
//! incoming connection (TLS error, unpinned certificate) is remembered but
//! does not stop us from waiting for the right peer until the connect
//! timeout; if that peer never arrives, the remembered failure is returned.
//!
//! # Routed connections
//!
//! [`TlsTransport::establish_routed`] does the same for a party whose
//! incoming connections arrive through a shared [`PeerPort`](crate::peer::PeerPort)
//! instead of a listener of its own: its dialer first writes the session
//! preamble (magic, kind 1, session id) so that the peer's port can hand the
//! connection to the right session; the acceptor takes connections from the
//! [`SessionInbound`] the port routes them to. Both use the same dial and
//! accept code as [`TlsTransport::establish`]. See [`crate::peer`].
//!
//! # Data path
//!
//! Each connection is split into a reader and a writer half. A writer task
//! per peer takes whole messages from an unbounded queue (so `send` never
//! blocks) and writes each as one or more `Data` frames of at most
//! [`TlsConfig::max_frame_payload`] bytes, flushing once per message. A reader
//! task per peer validates every frame header (magic, version, kind, session
//! id, size), reassembles messages directly into their final buffer, and
//! queues them for [`Transport::recv`]. See `docs/WIRE_PROTOCOL.md`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use concord_wire::{
    decode_abort, decode_header, decode_hello, encode_abort, encode_header, encode_hello, encode_preamble,
    message_frames, FrameHeader, FrameKind, Hello, Preamble, Reassembler, WireError, HEADER_LEN, MAX_ABORT_REASON,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use zeroize::Zeroize;

use crate::peer::SessionInbound;
use crate::{check_peer, hex, LinkStats, NetError, PartyId, Transport};

/// Default maximum payload of one frame (1 MiB).
pub const DEFAULT_MAX_FRAME_PAYLOAD: usize = concord_wire::DEFAULT_MAX_FRAME_PAYLOAD;
/// Default maximum size of one application message (1 GiB).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;
/// Default receive timeout.
pub const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time allowed to establish all connections.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Server name used in the handshake. Certificates are pinned by fingerprint,
/// so the name is never checked; SNI is not sent.
const SERVER_NAME: &str = "concord.invalid";
/// How long `abort` waits for its Abort frames to be written.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How long a dropped transport lets its writers flush and send Close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Capacity of the per-connection write buffer (small frames coalesce in it;
/// larger payloads bypass it).
const WRITE_BUFFER: usize = 256 * 1024;
/// Limit of rustls' internal plaintext/TLS send buffers (default 64 KiB).
const TLS_BUFFER: usize = 1 << 20;
/// First and maximum delay between connection attempts.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// A party's certificate and private key.
///
/// The private key is zeroized when the identity is dropped and never shown
/// by `Debug`.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Generate a fresh self-signed ECDSA P-256 certificate for `name`.
    pub fn generate(name: &str) -> Result<Identity, NetError> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()])
            .map_err(|e| NetError::Config(format!("cannot generate a certificate for {name:?}: {e}")))?;
        let key_der = ck.signing_key.serialize_der();
        Ok(Identity { cert: ck.cert.der().clone(), key: PrivateKeyDer::Pkcs8(key_der.into()) })
    }

    /// SHA-256 of the certificate's DER encoding: what peers pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert)
    }

    /// The certificate's DER encoding.
    pub fn cert_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// The certificate in PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.cert.as_ref())
    }

    /// The private key in PEM.
    ///
    /// **This exposes the secret key.** Only write it to storage protected
    /// accordingly; the returned string is not zeroized.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_encode(label, self.key.secret_der())
    }

    /// Load an identity from PEM (as written by [`Identity::cert_pem`] and
    /// [`Identity::key_pem`]); checks that the key belongs to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, NetError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| NetError::Config(format!("cannot read certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| NetError::Config(format!("cannot read private key PEM: {e}")))?;
        let id = Identity { cert, key };
        id.certified_key()?;
        Ok(id)
    }

    /// Load the key for rustls and check that it matches the certificate.
    pub(crate) fn certified_key(&self) -> Result<Arc<CertifiedKey>, NetError> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&self.key)
            .map_err(|e| NetError::Config(format!("unusable private key: {e}")))?;
        let ck = CertifiedKey::new(vec![self.cert.clone()], signer);
        match ck.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
            Err(e) => Err(NetError::Config(format!("private key does not match the certificate: {e}"))),
        }
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity { cert: self.cert.clone(), key: self.key.clone_key() }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("fingerprint", &hex(&self.fingerprint())).field("key", &"<redacted>").finish()
    }
}

/// SHA-256 of a certificate's DER encoding.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Address and pinned certificate fingerprint of one party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsPeer {
    /// Where the party listens.
    pub addr: SocketAddr,
    /// SHA-256 of its certificate (see [`Identity::fingerprint`]).
    pub fingerprint: [u8; 32],
}

/// Configuration of a [`TlsTransport`].
#[derive(Debug)]
pub struct TlsConfig {
    /// Our party index.
    pub me: PartyId,
    /// Our certificate and key.
    pub identity: Identity,
    /// All parties, indexed by party id; `peers[me]` is ignored.
    pub peers: Vec<TlsPeer>,
    /// Session id, carried in every frame; must be the same at all parties.
    pub session_id: [u8; 16],
    /// Maximum payload of one frame, sent or accepted (default 1 MiB).
    pub max_frame_payload: usize,
    /// Maximum size of one message, sent or accepted (default 1 GiB).
    pub max_message: usize,
    /// How long `recv` waits for a message.
    pub recv_timeout: Duration,
    /// How long `establish` may take in total, including retries.
    pub connect_timeout: Duration,
}

impl TlsConfig {
    /// A configuration with default limits and timeouts.
    pub fn new(me: PartyId, identity: Identity, peers: Vec<TlsPeer>, session_id: [u8; 16]) -> TlsConfig {
        TlsConfig {
            me,
            identity,
            peers,
            session_id,
            max_frame_payload: DEFAULT_MAX_FRAME_PAYLOAD,
            max_message: DEFAULT_MAX_MESSAGE,
            recv_timeout: DEFAULT_RECV_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

// ---------------------------------------------------------------------------
// rustls configuration: TLS 1.3 only, pinned fingerprints, ring provider.

pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// The fingerprint of the last certificate a verifier was shown, and
/// whether the verifier refused it.
#[derive(Debug, Default)]
pub(crate) struct Presented(Mutex<Option<([u8; 32], bool)>>);

impl Presented {
    fn set(&self, fp: [u8; 32], refused: bool) {
        *lock(&self.0) = Some((fp, refused));
    }
    pub(crate) fn get(&self) -> Option<[u8; 32]> {
        lock(&self.0).map(|(fp, _)| fp)
    }
    /// The fingerprint of a certificate the verifier refused.
    pub(crate) fn refused(&self) -> Option<[u8; 32]> {
        lock(&self.0).and_then(|(fp, refused)| refused.then_some(fp))
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unpinned_error() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Client side: accept only the expected peer's pinned certificate.
#[derive(Debug)]
struct PinnedServerVerifier {
    expected: [u8; 32],
    presented: Arc<Presented>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        let ok = fp == self.expected;
        self.presented.set(fp, !ok);
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(unpinned_error())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is disabled".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A predicate on SHA-256 certificate fingerprints: which peers to accept
/// (see [`crate::peer::control_accept`]).
pub type FingerprintPredicate = Arc<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// Which client certificate fingerprints a server accepts.
#[derive(Clone)]
pub(crate) enum Allowed {
    /// Exactly these (the parties of a session).
    Set(Vec<[u8; 32]>),
    /// Those the predicate accepts (e.g. the paired nodes, for control requests).
    Predicate(FingerprintPredicate),
}

impl Allowed {
    pub(crate) fn contains(&self, fp: &[u8; 32]) -> bool {
        match self {
            Allowed::Set(set) => set.contains(fp),
            Allowed::Predicate(f) => f(fp),
        }
    }
}

impl fmt::Debug for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Set(set) => f.debug_tuple("Set").field(&set.len()).finish(),
            Allowed::Predicate(_) => f.write_str("Predicate"),
        }
    }
}

/// Server side: accept only client certificates that are pinned (for the
/// session, or by the predicate).
#[derive(Debug)]
struct PinnedClientVerifier {
    allowed: Allowed,
    presented: Arc<Presented>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        let ok = self.allowed.contains(&fp);
        self.presented.set(fp, !ok);
        if ok {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(unpinned_error())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is disabled".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Always presents our one certificate.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn tls_config_error(e: rustls::Error) -> NetError {
    NetError::Config(format!("TLS configuration: {e}"))
}

pub(crate) fn client_config_inner(
    provider: &Arc<CryptoProvider>,
    key: &Arc<CertifiedKey>,
    expected: [u8; 32],
) -> Result<(Arc<rustls::ClientConfig>, Arc<Presented>), NetError> {
    let presented = Arc::new(Presented::default());
    let verifier = PinnedServerVerifier {
        expected,
        presented: presented.clone(),
        algs: provider.signature_verification_algorithms,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(FixedCert(key.clone())));
    cfg.enable_sni = false;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(cfg), presented))
}

pub(crate) fn server_config_inner(
    provider: &Arc<CryptoProvider>,
    key: &Arc<CertifiedKey>,
    allowed: Allowed,
) -> Result<(Arc<rustls::ServerConfig>, Arc<Presented>), NetError> {
    let presented = Arc::new(Presented::default());
    let verifier = PinnedClientVerifier {
        allowed,
        presented: presented.clone(),
        algs: provider.signature_verification_algorithms,
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config_error)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(FixedCert(key.clone())));
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok((Arc::new(cfg), presented))
}

/// A rustls client configuration as used by [`TlsTransport`] to dial a peer:
/// TLS 1.3 only, presenting `identity`, accepting only a server certificate
/// whose SHA-256 fingerprint is `server_fingerprint`. Useful for tools and tests.
pub fn client_config(identity: &Identity, server_fingerprint: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, NetError> {
    let key = identity.certified_key()?;
    Ok(client_config_inner(&crypto_provider(), &key, server_fingerprint)?.0)
}

/// A rustls server configuration as used by [`TlsTransport`] to accept peers:
/// TLS 1.3 only, presenting `identity`, requiring a client certificate whose
/// fingerprint is in `client_fingerprints`.
pub fn server_config(
    identity: &Identity,
    client_fingerprints: &[[u8; 32]],
) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let key = identity.certified_key()?;
    Ok(server_config_inner(&crypto_provider(), &key, Allowed::Set(client_fingerprints.to_vec()))?.0)
}

/// The server name a client should use with [`client_config`] (never checked).
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME)
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into()))
}

// ---------------------------------------------------------------------------
// Byte counting.

#[derive(Debug, Default)]
struct Counters {
    payload_sent: AtomicU64,
    payload_received: AtomicU64,
    wire_sent: AtomicU64,
    wire_received: AtomicU64,
    messages_sent: AtomicU64,
    /// Payload bytes handed to `send`, per destination party.
    payload_sent_to: Vec<AtomicU64>,
}

/// A live view of a [`TlsTransport`]'s payload bytes sent per peer, which
/// stays readable after the transport was moved into a protocol (for
/// per-peer metrics).
#[derive(Clone, Debug)]
pub struct PeerTraffic(Arc<Counters>);

impl PeerTraffic {
    /// Payload bytes sent so far to each party (index = party id; 0 for ourselves).
    pub fn payload_sent(&self) -> Vec<u64> {
        self.0.payload_sent_to.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// A TCP stream that counts the bytes it carries (TLS records included).
#[derive(Debug)]
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            add(&this.counters.wire_received, buf.filled().len().saturating_sub(before));
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            add(&this.counters.wire_sent, n);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            add(&this.counters.wire_sent, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

type Stream = tokio_rustls::TlsStream<Counted>;

// ---------------------------------------------------------------------------
// Frame I/O used during setup.

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, header: &FrameHeader, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&encode_header(header));
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

enum ReadErr {
    Io(io::Error),
    Wire(WireError),
    TimedOut,
}

/// Read one Hello or Abort frame (the only kinds allowed during setup).
async fn read_setup_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_payload: usize,
    deadline: Instant,
) -> Result<(FrameHeader, Vec<u8>), ReadErr> {
    let fut = async {
        let mut hb = [0u8; HEADER_LEN];
        r.read_exact(&mut hb).await.map_err(ReadErr::Io)?;
        let h = decode_header(&hb, max_frame_payload).map_err(ReadErr::Wire)?;
        if h.kind != FrameKind::Hello && h.kind != FrameKind::Abort {
            return Err(ReadErr::Wire(WireError::UnexpectedKind { got: h.kind, expected: FrameKind::Hello }));
        }
        // Hello is exactly 4 bytes and Abort at most 1024 (checked by decode_header).
        let mut payload = vec![0u8; h.payload_len().min(MAX_ABORT_REASON)];
        r.read_exact(&mut payload).await.map_err(ReadErr::Io)?;
        Ok((h, payload))
    };
    match timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(ReadErr::TimedOut),
    }
}

// ---------------------------------------------------------------------------
// Establishment.

struct SetupCtx {
    me: PartyId,
    n: usize,
    session_id: [u8; 16],
    peers: Vec<TlsPeer>,
    my_fingerprint: [u8; 32],
    max_frame_payload: usize,
    provider: Arc<CryptoProvider>,
    key: Arc<CertifiedKey>,
    counters: Arc<Counters>,
    deadline: Instant,
    connect_timeout: Duration,
    /// Dialers write a session preamble (the peers listen on peer ports).
    routed: bool,
}

impl SetupCtx {
    fn hello(&self) -> [u8; concord_wire::HELLO_LEN] {
        // n <= u16::MAX is checked by `validate`.
        encode_hello(&Hello {
            party: u16::try_from(self.me).unwrap_or(u16::MAX),
            parties: u16::try_from(self.n).unwrap_or(u16::MAX),
        })
    }

    fn header(&self, kind: FrameKind, len: usize) -> FrameHeader {
        FrameHeader::new(kind, self.session_id, u32::try_from(len).unwrap_or(u32::MAX))
    }

    fn wrong_session(&self, peer: PartyId, got: &[u8; 16]) -> NetError {
        NetError::WrongSession { peer, got: hex(got), expected: hex(&self.session_id) }
    }
}

enum SetupEvent {
    Connected(PartyId, Box<Stream>),
    /// An authenticated peer misbehaved, or we could not reach a peer: give up.
    Fatal(NetError),
    /// An unauthenticated incoming connection failed: remember, keep waiting.
    Rejected(NetError),
}

fn validate(cfg: &TlsConfig) -> Result<(), NetError> {
    let n = cfg.peers.len();
    if n < 2 || n > usize::from(u16::MAX) {
        return Err(NetError::Config(format!("need between 2 and 65535 parties, got {n}")));
    }
    if cfg.me >= n {
        return Err(NetError::Config(format!("party index {} out of range for {n} parties", cfg.me)));
    }
    if cfg.max_frame_payload == 0 || cfg.max_frame_payload > u32::MAX as usize {
        return Err(NetError::Config(format!(
            "max_frame_payload must be in 1..={}, got {}",
            u32::MAX,
            cfg.max_frame_payload
        )));
    }
    let mine = cfg.identity.fingerprint();
    for (j, p) in cfg.peers.iter().enumerate() {
        if j == cfg.me {
            continue;
        }
        if p.fingerprint == mine {
            return Err(NetError::Config(format!("party {j} has our own certificate fingerprint")));
        }
        if let Some(k) =
            cfg.peers.iter().enumerate().position(|(k, q)| k != cfg.me && k < j && q.fingerprint == p.fingerprint)
        {
            return Err(NetError::Config(format!("parties {k} and {j} have the same certificate fingerprint")));
        }
    }
    Ok(())
}

async fn dial(ctx: Arc<SetupCtx>, peer: PartyId, tx: mpsc::UnboundedSender<SetupEvent>) {
    let ev = match dial_inner(&ctx, peer).await {
        Ok(s) => SetupEvent::Connected(peer, Box::new(s)),
        Err(e) => SetupEvent::Fatal(e),
    };
    let _ = tx.send(ev);
}

/// TCP-connect to `addr`, retrying with backoff until the setup deadline.
async fn connect_with_retry(
    ctx: &SetupCtx,
    addr: SocketAddr,
    who: &str,
    backoff: &mut Duration,
) -> Result<TcpStream, NetError> {
    loop {
        match timeout_at(ctx.deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                if Instant::now() + *backoff >= ctx.deadline {
                    return Err(NetError::Io {
                        who: format!("{who} (no connection within {:?})", ctx.connect_timeout),
                        source: e,
                    });
                }
                sleep(*backoff).await;
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
            }
            Err(_) => {
                return Err(NetError::Io {
                    who: who.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {:?}", ctx.connect_timeout),
                    ),
                })
            }
        }
    }
}

async fn dial_inner(ctx: &SetupCtx, peer: PartyId) -> Result<Stream, NetError> {
    let target = ctx.peers.get(peer).copied().ok_or(NetError::NoSuchPeer { party: peer, me: ctx.me, n: ctx.n })?;
    let addr = target.addr;
    let who = format!("party {peer} at {addr}");
    let mut backoff = BACKOFF_START;
    let mut stream: Stream = loop {
        let mut tcp = connect_with_retry(ctx, addr, &who, &mut backoff).await?;
        tcp.set_nodelay(true).map_err(|e| NetError::Io { who: who.clone(), source: e })?;
        if ctx.routed {
            let preamble = encode_preamble(&Preamble::Session(ctx.session_id));
            match timeout_at(ctx.deadline, tcp.write_all(&preamble)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(NetError::Io { who, source: e }),
                Err(_) => return Err(NetError::Tls { who, reason: "sending the preamble timed out".to_owned() }),
            }
        }
        let (cfg, presented) = client_config_inner(&ctx.provider, &ctx.key, target.fingerprint)?;
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let io = Counted { inner: tcp, counters: ctx.counters.clone() };
        match timeout_at(ctx.deadline, connector.connect(server_name(), io)).await {
            Ok(Ok(s)) => break s.into(),
            Ok(Err(e)) => {
                // A peer port that holds our connection for a session it does
                // not know yet closes it after a while without a word: the
                // session may appear later, so dial again.
                let silent_close = matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset);
                if ctx.routed && presented.get().is_none() && silent_close && Instant::now() + backoff < ctx.deadline {
                    tracing::debug!(peer, error = %e, "routed connection closed before the handshake, dialing again");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                return Err(match presented.get() {
                    Some(fp) if fp != target.fingerprint => {
                        NetError::UnpinnedCertificate { addr: addr.to_string(), fingerprint: hex(&fp) }
                    }
                    _ => NetError::Tls { who, reason: format!("handshake failed: {e}") },
                });
            }
            Err(_) => {
                return Err(NetError::Tls {
                    who,
                    reason: format!("handshake not completed within {:?}", ctx.connect_timeout),
                })
            }
        }
    };
    let hello = ctx.hello();
    match timeout_at(ctx.deadline, write_frame(&mut stream, &ctx.header(FrameKind::Hello, hello.len()), &hello)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(NetError::Tls {
                who,
                reason: format!(
                    "sending Hello failed (our certificate {} may have been refused): {e}",
                    hex(&ctx.my_fingerprint)
                ),
            })
        }
        Err(_) => return Err(NetError::Tls { who, reason: "sending Hello timed out".to_owned() }),
    }
    let (h, payload) = match read_setup_frame(&mut stream, ctx.max_frame_payload, ctx.deadline).await {
        Ok(f) => f,
        Err(ReadErr::Io(e)) => {
            return Err(NetError::Tls {
                who,
                reason: format!(
                    "peer refused the connection after the handshake (our certificate {} may not be pinned there): {e}",
                    hex(&ctx.my_fingerprint)
                ),
            })
        }
        Err(ReadErr::Wire(e)) => return Err(NetError::BadFrame { peer, source: e }),
        Err(ReadErr::TimedOut) => return Err(NetError::Timeout { peer, after: ctx.connect_timeout }),
    };
    if h.session_id != ctx.session_id {
        return Err(ctx.wrong_session(peer, &h.session_id));
    }
    match h.kind {
        FrameKind::Abort => Err(NetError::PeerAborted {
            peer,
            reason: decode_abort(&payload).map_err(|e| NetError::BadFrame { peer, source: e })?,
        }),
        _ => {
            let hello = decode_hello(&payload).map_err(|e| NetError::BadFrame { peer, source: e })?;
            if usize::from(hello.party) != peer || usize::from(hello.parties) != ctx.n {
                return Err(NetError::Config(format!(
                    "{who} answered as party {} of {}, expected party {peer} of {}",
                    hello.party, hello.parties, ctx.n
                )));
            }
            Ok(stream)
        }
    }
}

/// Where incoming connections of a session come from.
enum Inbound {
    /// A listener of our own.
    Listener(TcpListener),
    /// A [`crate::peer::PeerPort`], which has consumed the preamble.
    Routed(SessionInbound),
}

impl Inbound {
    /// The next incoming connection; `None` once no more can arrive.
    async fn accept(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match self {
            Inbound::Listener(l) => Some(l.accept().await),
            Inbound::Routed(r) => {
                let tcp = r.recv().await?;
                let addr = tcp.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                Some(Ok((tcp, addr)))
            }
        }
    }
}

async fn accept_loop(ctx: Arc<SetupCtx>, mut inbound: Inbound, tx: mpsc::UnboundedSender<SetupEvent>) {
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        tokio::select! {
            r = inbound.accept() => match r {
                Some(Ok((tcp, addr))) => {
                    handshakes.spawn(accept_one(ctx.clone(), tcp, addr, tx.clone()));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed");
                    sleep(BACKOFF_START).await;
                }
                None => {
                    let _ = tx.send(SetupEvent::Fatal(NetError::PeerPort(
                        "the peer port was shut down while the session was waiting for connections".to_owned(),
                    )));
                    break;
                }
            },
            _ = tokio::time::sleep_until(ctx.deadline) => break,
        }
    }
    // Let in-flight handshakes finish (each is bounded by the deadline).
    while handshakes.join_next().await.is_some() {}
}

async fn accept_one(ctx: Arc<SetupCtx>, tcp: TcpStream, addr: SocketAddr, tx: mpsc::UnboundedSender<SetupEvent>) {
    let ev = match accept_inner(&ctx, tcp, addr).await {
        Ok((peer, s)) => SetupEvent::Connected(peer, Box::new(s)),
        Err(AcceptErr::Unauthenticated(e)) => {
            tracing::warn!(%addr, error = %e, "refused incoming connection");
            SetupEvent::Rejected(e)
        }
        Err(AcceptErr::Authenticated(e)) => SetupEvent::Fatal(e),
    };
    let _ = tx.send(ev);
}

enum AcceptErr {
    Unauthenticated(NetError),
    Authenticated(NetError),
}

async fn refuse(ctx: &SetupCtx, stream: &mut Stream, reason: &str) {
    let payload = encode_abort(reason);
    let _ = timeout(ABORT_GRACE, async {
        let _ = write_frame(stream, &ctx.header(FrameKind::Abort, payload.len()), &payload).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn accept_inner(ctx: &SetupCtx, tcp: TcpStream, addr: SocketAddr) -> Result<(PartyId, Stream), AcceptErr> {
    use AcceptErr::{Authenticated, Unauthenticated};
    tcp.set_nodelay(true).map_err(|e| Unauthenticated(NetError::Io { who: addr.to_string(), source: e }))?;
    let allowed =
        Allowed::Set(ctx.peers.iter().enumerate().filter(|(j, _)| *j != ctx.me).map(|(_, p)| p.fingerprint).collect());
    let (cfg, presented) = server_config_inner(&ctx.provider, &ctx.key, allowed).map_err(Authenticated)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let io = Counted { inner: tcp, counters: ctx.counters.clone() };
    let mut stream: Stream = match timeout_at(ctx.deadline, acceptor.accept(io)).await {
        Ok(Ok(s)) => s.into(),
        Ok(Err(e)) => {
            return Err(Unauthenticated(match presented.refused() {
                Some(fp) => NetError::UnpinnedCertificate { addr: addr.to_string(), fingerprint: hex(&fp) },
                None => NetError::Tls { who: addr.to_string(), reason: format!("handshake failed: {e}") },
            }))
        }
        Err(_) => {
            return Err(Unauthenticated(NetError::Tls {
                who: addr.to_string(),
                reason: "handshake not completed in time".to_owned(),
            }))
        }
    };
    let fp = {
        let (_, conn) = stream.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()) {
            Some(c) => fingerprint(c),
            None => {
                return Err(Unauthenticated(NetError::Tls {
                    who: addr.to_string(),
                    reason: "no client certificate".to_owned(),
                }))
            }
        }
    };
    // The verifier accepted it, so it is pinned for some party.
    let Some(cert_party) = ctx.peers.iter().enumerate().position(|(j, p)| j != ctx.me && p.fingerprint == fp) else {
        return Err(Unauthenticated(NetError::UnpinnedCertificate { addr: addr.to_string(), fingerprint: hex(&fp) }));
    };
    let who = format!("party {cert_party} at {addr}");
    let (h, payload) = match read_setup_frame(&mut stream, ctx.max_frame_payload, ctx.deadline).await {
        Ok(f) => f,
        Err(ReadErr::Io(e)) => {
            return Err(Authenticated(NetError::Disconnected {
                peer: cert_party,
                reason: format!("connection from {addr} failed before its Hello: {e}"),
            }))
        }
        Err(ReadErr::Wire(e)) => {
            refuse(ctx, &mut stream, &format!("bad frame instead of Hello: {e}")).await;
            return Err(Authenticated(NetError::BadFrame { peer: cert_party, source: e }));
        }
        Err(ReadErr::TimedOut) => {
            return Err(Authenticated(NetError::Timeout { peer: cert_party, after: ctx.connect_timeout }))
        }
    };
    if h.session_id != ctx.session_id {
        refuse(ctx, &mut stream, "wrong session id").await;
        return Err(Authenticated(ctx.wrong_session(cert_party, &h.session_id)));
    }
    if h.kind != FrameKind::Hello {
        let e = WireError::UnexpectedKind { got: h.kind, expected: FrameKind::Hello };
        refuse(ctx, &mut stream, &e.to_string()).await;
        return Err(Authenticated(NetError::BadFrame { peer: cert_party, source: e }));
    }
    let hello = match decode_hello(&payload) {
        Ok(h) => h,
        Err(e) => {
            refuse(ctx, &mut stream, &e.to_string()).await;
            return Err(Authenticated(NetError::BadFrame { peer: cert_party, source: e }));
        }
    };
    let claimed = usize::from(hello.party);
    let problem = if claimed <= ctx.me || claimed >= ctx.n {
        Some(NetError::Tls {
            who: who.clone(),
            reason: format!(
                "Hello claims party {claimed}, which must not dial party {} (only parties {}..{} do)",
                ctx.me,
                ctx.me + 1,
                ctx.n
            ),
        })
    } else if ctx.peers.get(claimed).map(|p| p.fingerprint) != Some(fp) {
        Some(NetError::Tls {
            who: who.clone(),
            reason: format!(
                "Hello claims party {claimed}, but certificate {} is pinned for party {cert_party}",
                hex(&fp)
            ),
        })
    } else if usize::from(hello.parties) != ctx.n {
        Some(NetError::Config(format!("{who} says the session has {} parties, we have {}", hello.parties, ctx.n)))
    } else {
        None
    };
    if let Some(e) = problem {
        refuse(ctx, &mut stream, &e.to_string()).await;
        return Err(Authenticated(e));
    }
    let reply = ctx.hello();
    match timeout_at(ctx.deadline, write_frame(&mut stream, &ctx.header(FrameKind::Hello, reply.len()), &reply)).await {
        Ok(Ok(())) => Ok((claimed, stream)),
        Ok(Err(e)) => Err(Authenticated(NetError::Disconnected {
            peer: claimed,
            reason: format!("sending Hello to {addr} failed: {e}"),
        })),
        Err(_) => Err(Authenticated(NetError::Timeout { peer: claimed, after: ctx.connect_timeout })),
    }
}

// ---------------------------------------------------------------------------
// Data path.

enum WriterCmd {
    Message(Vec<u8>),
    Abort(String, oneshot::Sender<()>),
    Close,
}

/// Why a link stopped delivering messages; repeated by every later `recv`.
#[derive(Clone, Debug)]
enum Terminal {
    Aborted(String),
    Disconnected(String),
    BadFrame(WireError),
    TooLarge { size: usize, limit: usize },
    WrongSession { got: String, expected: String },
}

impl Terminal {
    fn to_error(&self, peer: PartyId) -> NetError {
        match self.clone() {
            Terminal::Aborted(reason) => NetError::PeerAborted { peer, reason },
            Terminal::Disconnected(reason) => NetError::Disconnected { peer, reason },
            Terminal::BadFrame(source) => NetError::BadFrame { peer, source },
            Terminal::TooLarge { size, limit } => NetError::MessageTooLarge { peer, size, limit },
            Terminal::WrongSession { got, expected } => NetError::WrongSession { peer, got, expected },
        }
    }
}

enum Incoming {
    Message(Vec<u8>),
    End(Terminal),
}

type Aborted = Option<(PartyId, String)>;

struct PeerLink {
    writer: mpsc::UnboundedSender<WriterCmd>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
    terminal: Mutex<Option<Terminal>>,
    write_failure: Arc<Mutex<Option<String>>>,
}

async fn write_control<W: AsyncWrite + Unpin>(w: &mut W, header: FrameHeader, payload: &[u8]) {
    let r = timeout(ABORT_GRACE, async {
        w.write_all(&encode_header(&header)).await?;
        w.write_all(payload).await?;
        w.flush().await?;
        w.shutdown().await
    })
    .await;
    if let Ok(Err(e)) = r {
        tracing::debug!(error = %e, "writing a final frame failed");
    }
}

async fn writer_task(
    w: WriteHalf<Stream>,
    mut rx: mpsc::UnboundedReceiver<WriterCmd>,
    session_id: [u8; 16],
    max_frame_payload: usize,
    failure: Arc<Mutex<Option<String>>>,
) {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, w);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Message(m) => {
                let r = async {
                    for (header, chunk) in message_frames(session_id, &m, max_frame_payload) {
                        w.write_all(&header).await?;
                        w.write_all(chunk).await?;
                    }
                    w.flush().await
                }
                .await;
                if let Err(e) = r {
                    *lock(&failure) = Some(format!("write failed: {e}"));
                    return;
                }
            }
            WriterCmd::Abort(reason, ack) => {
                let payload = encode_abort(&reason);
                let len = u32::try_from(payload.len()).unwrap_or(0);
                write_control(&mut w, FrameHeader::new(FrameKind::Abort, session_id, len), &payload).await;
                *lock(&failure) = Some("we aborted the session".to_owned());
                let _ = ack.send(());
                return;
            }
            WriterCmd::Close => break,
        }
    }
    write_control(&mut w, FrameHeader::new(FrameKind::Close, session_id, 0), &[]).await;
}

struct ReaderCtx {
    peer: PartyId,
    session_id: [u8; 16],
    max_frame_payload: usize,
    max_message: usize,
    tx: mpsc::UnboundedSender<Incoming>,
    aborted: Arc<watch::Sender<Aborted>>,
    writer: AbortHandle,
}

/// Append exactly `len` bytes from `r` to `buf` (capacity already reserved).
async fn read_into<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let mut take = r.take(len as u64);
    let target = buf.len().saturating_add(len);
    while buf.len() < target {
        if take.read_buf(buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the middle of a frame"));
        }
    }
    Ok(())
}

fn io_terminal(e: &io::Error) -> Terminal {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Terminal::Disconnected("connection closed without a Close frame".to_owned())
    } else {
        Terminal::Disconnected(format!("read failed: {e}"))
    }
}

async fn read_loop(ctx: &ReaderCtx, r: &mut ReadHalf<Stream>) -> Terminal {
    let mut hb = [0u8; HEADER_LEN];
    let mut re = Reassembler::new(ctx.max_message);
    loop {
        if let Err(e) = r.read_exact(&mut hb).await {
            return io_terminal(&e);
        }
        let h = match decode_header(&hb, ctx.max_frame_payload) {
            Ok(h) => h,
            Err(e) => return Terminal::BadFrame(e),
        };
        if h.session_id != ctx.session_id {
            return Terminal::WrongSession { got: hex(&h.session_id), expected: hex(&ctx.session_id) };
        }
        match h.kind {
            FrameKind::Data => {
                let buf = match re.start_frame(&h) {
                    Ok(b) => b,
                    Err(WireError::MessageTooLarge { size, max }) => return Terminal::TooLarge { size, limit: max },
                    Err(e) => return Terminal::BadFrame(e),
                };
                if let Err(e) = read_into(r, buf, h.payload_len()).await {
                    return io_terminal(&e);
                }
                match re.finish_frame() {
                    Ok(Some(m)) => {
                        if ctx.tx.send(Incoming::Message(m)).is_err() {
                            return Terminal::Disconnected("transport dropped".to_owned());
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Terminal::BadFrame(e),
                }
            }
            FrameKind::Abort => {
                let mut payload = vec![0u8; h.payload_len().min(MAX_ABORT_REASON)];
                if let Err(e) = r.read_exact(&mut payload).await {
                    return io_terminal(&e);
                }
                return match decode_abort(&payload) {
                    Ok(reason) => Terminal::Aborted(reason),
                    Err(e) => Terminal::BadFrame(e),
                };
            }
            FrameKind::Close => {
                if re.in_progress() {
                    return Terminal::Disconnected("closed the connection in the middle of a message".to_owned());
                }
                return Terminal::Disconnected("closed the connection".to_owned());
            }
            FrameKind::Hello => {
                return Terminal::BadFrame(WireError::UnexpectedKind {
                    got: FrameKind::Hello,
                    expected: FrameKind::Data,
                })
            }
        }
    }
}

async fn reader_task(ctx: ReaderCtx, mut r: ReadHalf<Stream>) {
    let end = read_loop(&ctx, &mut r).await;
    match &end {
        Terminal::Aborted(reason) => {
            ctx.aborted.send_if_modified(|v| {
                if v.is_none() {
                    *v = Some((ctx.peer, reason.clone()));
                    true
                } else {
                    false
                }
            });
        }
        Terminal::BadFrame(_) | Terminal::TooLarge { .. } | Terminal::WrongSession { .. } => {
            tracing::warn!(peer = ctx.peer, reason = ?end, "dropping connection");
            // Drop the connection: stop the writer, which holds the other half.
            ctx.writer.abort();
        }
        Terminal::Disconnected(_) => {}
    }
    let _ = ctx.tx.send(Incoming::End(end));
}

/// A [`Transport`] over TCP and mutually authenticated TLS 1.3.
///
/// Dropping it sends a Close frame to every peer (after any queued messages,
/// for at most a few seconds) and stops its tasks.
pub struct TlsTransport {
    me: PartyId,
    n: usize,
    max_message: usize,
    recv_timeout: Duration,
    links: Vec<Option<PeerLink>>,
    counters: Arc<Counters>,
    aborted: watch::Receiver<Aborted>,
    readers: Vec<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").field("me", &self.me).field("parties", &self.n).finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// Connect to every peer as described in the [module docs](self) and
    /// return once all connections are authenticated and greeted.
    ///
    /// Takes an already-bound listener (so tests can use port 0). Fails after
    /// at most `cfg.connect_timeout`.
    pub async fn establish(cfg: TlsConfig, listener: TcpListener) -> Result<TlsTransport, NetError> {
        TlsTransport::establish_with(cfg, Inbound::Listener(listener)).await
    }

    /// Like [`TlsTransport::establish`], for parties that listen on a shared
    /// [`PeerPort`](crate::peer::PeerPort): incoming connections come from
    /// `inbound` (obtained with [`PeerPort::register`](crate::peer::PeerPort::register)
    /// for `cfg.session_id`), and when dialing we write the session preamble
    /// (see [`crate::peer`]) before the TLS handshake. `cfg.peers` holds the
    /// peers' peer-port addresses.
    ///
    /// A dialed peer port that closes our connection before the handshake
    /// (it holds connections for unknown sessions only for a while) is dialed
    /// again until `cfg.connect_timeout`.
    pub async fn establish_routed(cfg: TlsConfig, inbound: SessionInbound) -> Result<TlsTransport, NetError> {
        if inbound.session_id() != cfg.session_id {
            return Err(NetError::Config(format!(
                "inbound connections are routed for session {}, but the configuration is for session {}",
                hex(&inbound.session_id()),
                hex(&cfg.session_id)
            )));
        }
        TlsTransport::establish_with(cfg, Inbound::Routed(inbound)).await
    }

    async fn establish_with(cfg: TlsConfig, inbound: Inbound) -> Result<TlsTransport, NetError> {
        validate(&cfg)?;
        let routed = matches!(inbound, Inbound::Routed(_));
        let provider = crypto_provider();
        let key = cfg.identity.certified_key()?;
        let n = cfg.peers.len();
        let counters =
            Arc::new(Counters { payload_sent_to: (0..n).map(|_| AtomicU64::new(0)).collect(), ..Counters::default() });
        let me = cfg.me;
        let ctx = Arc::new(SetupCtx {
            me,
            n,
            session_id: cfg.session_id,
            peers: cfg.peers.clone(),
            my_fingerprint: cfg.identity.fingerprint(),
            max_frame_payload: cfg.max_frame_payload,
            provider,
            key,
            counters: counters.clone(),
            deadline: Instant::now() + cfg.connect_timeout,
            connect_timeout: cfg.connect_timeout,
            routed,
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for j in 0..me {
            tasks.spawn(dial(ctx.clone(), j, tx.clone()));
        }
        if me + 1 < n {
            tasks.spawn(accept_loop(ctx.clone(), inbound, tx.clone()));
        }
        drop(tx);

        let mut streams: Vec<Option<Stream>> = (0..n).map(|_| None).collect();
        let mut missing = n - 1;
        let mut rejection = None;
        while missing > 0 {
            let ev = match timeout_at(ctx.deadline, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            match ev {
                SetupEvent::Connected(peer, s) => match streams.get_mut(peer) {
                    Some(slot @ None) => {
                        *slot = Some(*s);
                        missing -= 1;
                    }
                    _ => {
                        return Err(NetError::Tls {
                            who: format!("party {peer}"),
                            reason: "connected twice".to_owned(),
                        })
                    }
                },
                SetupEvent::Fatal(e) => return Err(e),
                SetupEvent::Rejected(e) => rejection = Some(e),
            }
        }
        drop(tasks);
        if missing > 0 {
            if let Some(e) = rejection {
                return Err(e);
            }
            let peer = (0..n).find(|&j| j != me && streams.get(j).is_some_and(Option::is_none)).unwrap_or(0);
            return Err(NetError::Timeout { peer, after: cfg.connect_timeout });
        }

        let (abort_tx, abort_rx) = watch::channel(None);
        let abort_tx = Arc::new(abort_tx);
        let mut links = Vec::with_capacity(n);
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for (peer, s) in streams.into_iter().enumerate() {
            let Some(stream) = s else {
                links.push(None);
                continue;
            };
            let mut stream = stream;
            match &mut stream {
                tokio_rustls::TlsStream::Client(c) => c.get_mut().1.set_buffer_limit(Some(TLS_BUFFER)),
                tokio_rustls::TlsStream::Server(c) => c.get_mut().1.set_buffer_limit(Some(TLS_BUFFER)),
            }
            let (r, w) = tokio::io::split(stream);
            let (wtx, wrx) = mpsc::unbounded_channel();
            let (itx, irx) = mpsc::unbounded_channel();
            let failure = Arc::new(Mutex::new(None));
            let writer = tokio::spawn(writer_task(w, wrx, cfg.session_id, cfg.max_frame_payload, failure.clone()));
            let rctx = ReaderCtx {
                peer,
                session_id: cfg.session_id,
                max_frame_payload: cfg.max_frame_payload,
                max_message: cfg.max_message,
                tx: itx,
                aborted: abort_tx.clone(),
                writer: writer.abort_handle(),
            };
            readers.push(tokio::spawn(reader_task(rctx, r)));
            writers.push(writer);
            links.push(Some(PeerLink {
                writer: wtx,
                incoming: tokio::sync::Mutex::new(irx),
                terminal: Mutex::new(None),
                write_failure: failure,
            }));
        }
        Ok(TlsTransport {
            me,
            n,
            max_message: cfg.max_message,
            recv_timeout: cfg.recv_timeout,
            links,
            counters,
            aborted: abort_rx,
            readers,
            writers,
        })
    }

    fn link(&self, peer: PartyId) -> Result<&PeerLink, NetError> {
        check_peer(peer, self.me, self.n)?;
        self.links.get(peer).and_then(Option::as_ref).ok_or(NetError::NoSuchPeer {
            party: peer,
            me: self.me,
            n: self.n,
        })
    }

    /// A handle on the bytes sent per peer, readable after the transport is moved or dropped.
    pub fn traffic(&self) -> PeerTraffic {
        PeerTraffic(self.counters.clone())
    }

    fn global_abort(&self) -> Option<NetError> {
        let a = self.aborted.borrow().clone();
        a.map(|(peer, reason)| NetError::PeerAborted { peer, reason })
    }
}

impl Transport for TlsTransport {
    fn me(&self) -> PartyId {
        self.me
    }

    fn parties(&self) -> usize {
        self.n
    }

    async fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        let link = self.link(to)?;
        let len = payload.len();
        if len > self.max_message {
            return Err(NetError::MessageTooLarge { peer: to, size: len, limit: self.max_message });
        }
        if link.writer.send(WriterCmd::Message(payload)).is_err() {
            let reason = lock(&link.write_failure).clone().unwrap_or_else(|| "connection closed".to_owned());
            return Err(NetError::Disconnected { peer: to, reason });
        }
        add(&self.counters.payload_sent, len);
        add(&self.counters.messages_sent, 1);
        if let Some(c) = self.counters.payload_sent_to.get(to) {
            add(c, len);
        }
        Ok(())
    }

    async fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError> {
        let link = self.link(from)?;
        if let Some(e) = self.global_abort() {
            return Err(e);
        }
        if let Some(t) = lock(&link.terminal).clone() {
            return Err(t.to_error(from));
        }
        let mut abort_rx = self.aborted.clone();
        let wait = async {
            let mut rx = link.incoming.lock().await;
            let aborted = async {
                let r = abort_rx.wait_for(Option::is_some).await.map(|v| v.clone());
                match r {
                    Ok(Some(a)) => a,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                (peer, reason) = aborted => Err(NetError::PeerAborted { peer, reason }),
                item = rx.recv() => match item {
                    Some(Incoming::Message(m)) => {
                        add(&self.counters.payload_received, m.len());
                        Ok(m)
                    }
                    Some(Incoming::End(t)) => {
                        let e = t.to_error(from);
                        *lock(&link.terminal) = Some(t);
                        Err(e)
                    }
                    None => {
                        let t = Terminal::Disconnected("connection reader stopped".to_owned());
                        let e = t.to_error(from);
                        *lock(&link.terminal) = Some(t);
                        Err(e)
                    }
                },
            }
        };
        match timeout(self.recv_timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout { peer: from, after: self.recv_timeout }),
        }
    }

    async fn abort(&self, reason: &str) {
        let mut acks = Vec::new();
        for link in self.links.iter().flatten() {
            let (tx, rx) = oneshot::channel();
            if link.writer.send(WriterCmd::Abort(reason.to_owned(), tx)).is_ok() {
                acks.push(rx);
            }
        }
        let _ = timeout(ABORT_GRACE, async {
            for a in acks {
                let _ = a.await;
            }
        })
        .await;
    }

    async fn shutdown(&mut self) {
        for link in self.links.iter().flatten() {
            let _ = link.writer.send(WriterCmd::Close);
        }
        // Writers flush what is queued, send Close and end; wait for them, bounded.
        let writers = std::mem::take(&mut self.writers);
        let aborts: Vec<AbortHandle> = writers.iter().map(JoinHandle::abort_handle).collect();
        if timeout(CLOSE_GRACE, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await
        .is_err()
        {
            for a in aborts {
                a.abort();
            }
        }
    }

    fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            payload_bytes_sent: c.payload_sent.load(Ordering::Relaxed),
            payload_bytes_received: c.payload_received.load(Ordering::Relaxed),
            wire_bytes_sent: c.wire_sent.load(Ordering::Relaxed),
            wire_bytes_received: c.wire_received.load(Ordering::Relaxed),
            messages_sent: c.messages_sent.load(Ordering::Relaxed),
        }
    }
}

impl Drop for TlsTransport {
    fn drop(&mut self) {
        for link in self.links.iter().flatten() {
            let _ = link.writer.send(WriterCmd::Close);
        }
        for r in &self.readers {
            r.abort();
        }
        let writers: Vec<AbortHandle> = self.writers.iter().map(JoinHandle::abort_handle).collect();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    sleep(CLOSE_GRACE).await;
                    for w in writers {
                        w.abort();
                    }
                });
            }
            Err(_) => {
                for w in writers {
                    w.abort();
                }
            }
        }
    }
}
