//! The node's identity: an Ed25519 signing key (signs pairing and session
//! messages) and a TLS key and self-signed certificate (authenticates MPC
//! connections; peers pin its SHA-256 fingerprint).
//!
//! Files live in `DIR/identity/` (created `0700`): secret files are created
//! `0600` with `create_new`, so an existing identity is never overwritten,
//! and are refused on load if group or others may read them. Secrets are
//! zeroized when dropped and never shown by `Debug`.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use concord_net::tls::Identity as TlsIdentity;
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{hex, unhex, NodeError};

/// Subdirectory of the node directory holding the identity.
pub const IDENTITY_DIR: &str = "identity";
/// Ed25519 secret key (hex of the 32-byte seed), mode 0600.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// TLS private key (PEM), mode 0600.
pub const TLS_KEY_FILE: &str = "tls.key";
/// TLS certificate (PEM), mode 0644.
pub const TLS_CERT_FILE: &str = "tls.crt";
/// Public identity (JSON), mode 0644.
pub const PUBLIC_FILE: &str = "public.json";

/// A secret value: zeroized on drop, redacted in `Debug`.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wrap a secret.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Zeroize for Secret<T> {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// What others may know of a node: its name and the public halves of its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicIdentity {
    /// The node's name.
    pub name: String,
    /// Ed25519 public key, hex (64 digits).
    pub ed25519_public: String,
    /// SHA-256 of the TLS certificate (DER), hex (64 digits): what peers pin.
    pub tls_fingerprint: String,
}

/// The node's full identity, secrets included.
pub struct NodeIdentity {
    name: String,
    signing: SigningKey,
    tls: TlsIdentity,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity").field("public", &self.public()).field("secrets", &"[REDACTED]").finish()
    }
}

impl NodeIdentity {
    /// Generate a fresh identity for `name` from the operating system's RNG.
    pub fn generate(name: &str) -> Result<NodeIdentity, NodeError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.try_fill_bytes(seed.as_mut()).map_err(|e| NodeError::Tls(format!("operating system RNG failed: {e}")))?;
        let signing = SigningKey::from_bytes(&seed);
        let tls = TlsIdentity::generate(name).map_err(|e| NodeError::Tls(e.to_string()))?;
        Ok(NodeIdentity { name: name.to_owned(), signing, tls })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The TLS identity (certificate and key) for MPC connections.
    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    /// The public identity.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            name: self.name.clone(),
            ed25519_public: hex(self.signing.verifying_key().as_bytes()),
            tls_fingerprint: hex(&self.tls.fingerprint()),
        }
    }

    /// The identity directory of node directory `dir`.
    pub fn dir_in(dir: &Path) -> PathBuf {
        dir.join(IDENTITY_DIR)
    }

    /// Whether node directory `dir` already holds (part of) an identity.
    pub fn exists_in(dir: &Path) -> Option<PathBuf> {
        let id = NodeIdentity::dir_in(dir);
        [SIGNING_KEY_FILE, TLS_KEY_FILE, TLS_CERT_FILE, PUBLIC_FILE].iter().map(|f| id.join(f)).find(|p| p.exists())
    }

    /// Write the identity into node directory `dir` (creating `dir/identity`
    /// with mode 0700). Refuses, writing nothing, if any identity file exists.
    pub fn write(&self, dir: &Path) -> Result<(), NodeError> {
        if let Some(path) = NodeIdentity::exists_in(dir) {
            return Err(NodeError::IdentityExists { path });
        }
        let id_dir = NodeIdentity::dir_in(dir);
        DirBuilder::new().recursive(true).mode(0o700).create(&id_dir).map_err(|e| NodeError::io(&id_dir, e))?;
        let seed_hex = Secret::new(format!("{}\n", hex(self.signing.as_bytes())));
        write_new(&id_dir.join(SIGNING_KEY_FILE), seed_hex.expose().as_bytes(), 0o600)?;
        let key_pem = Secret::new(self.tls.key_pem());
        write_new(&id_dir.join(TLS_KEY_FILE), key_pem.expose().as_bytes(), 0o600)?;
        write_new(&id_dir.join(TLS_CERT_FILE), self.tls.cert_pem().as_bytes(), 0o644)?;
        let public = serde_json::to_string_pretty(&self.public())
            .map_err(|e| NodeError::Tls(format!("cannot encode the public identity: {e}")))?;
        write_new(&id_dir.join(PUBLIC_FILE), format!("{public}\n").as_bytes(), 0o644)?;
        Ok(())
    }

    /// Load the identity of node `name` from node directory `dir`. Refuses
    /// secret files readable by group or others, and a TLS key that does not
    /// match its certificate.
    pub fn load(dir: &Path, name: &str) -> Result<NodeIdentity, NodeError> {
        let id_dir = NodeIdentity::dir_in(dir);
        let key_path = id_dir.join(SIGNING_KEY_FILE);
        let seed_hex = read_secret(&key_path)?;
        let seed = Zeroizing::new(unhex(seed_hex.expose()).unwrap_or_default());
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| NodeError::BadKey {
            path: key_path.clone(),
            reason: "expected 64 hexadecimal digits (an Ed25519 secret key)".into(),
        })?;
        let signing = SigningKey::from_bytes(seed);
        let tls_key_path = id_dir.join(TLS_KEY_FILE);
        let key_pem = read_secret(&tls_key_path)?;
        let cert_path = id_dir.join(TLS_CERT_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| NodeError::io(&cert_path, e))?;
        let tls = TlsIdentity::from_pem(&cert_pem, key_pem.expose())
            .map_err(|e| NodeError::BadKey { path: tls_key_path, reason: e.to_string() })?;
        Ok(NodeIdentity { name: name.to_owned(), signing, tls })
    }
}

/// Create `path` (failing if it exists) with `mode` and write `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NodeError> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            NodeError::IdentityExists { path: path.to_owned() }
        } else {
            NodeError::io(path, e)
        }
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| NodeError::io(path, e))
}

/// Read a secret file, refusing it if group or others have any access.
fn read_secret(path: &Path) -> Result<Secret<String>, NodeError> {
    let meta = std::fs::metadata(path).map_err(|e| NodeError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NodeError::BadKey {
            path: path.to_owned(),
            reason: format!("permissions {mode:04o} are too open for a secret key; run chmod 600 on it"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
    Ok(Secret::new(text))
}
