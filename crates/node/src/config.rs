//! `concord.toml`: the node's configuration.
//!
//! Loading is strict: an unknown key is an error naming the file and the key
//! (a typo must not silently fall back to a default). Relative paths are
//! relative to the directory holding `concord.toml`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Default address of the HTTP API.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7300";
/// Default address on which peers connect for MPC sessions.
pub const DEFAULT_MPC_LISTEN: &str = "127.0.0.1:7301";
/// Default data directory (relative to the node directory).
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default period between heartbeats to peers, in seconds.
pub const DEFAULT_HEARTBEAT_PERIOD_SECS: u64 = 5;
/// Default time after which a silent peer is considered down, in seconds.
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: u64 = 20;

/// Default period of dataset re-checks while the node runs, in seconds.
pub const DEFAULT_DATASET_CHECK_SECS: u64 = 60;

/// Default privacy budget of each analyst on each dataset, in zCDP rho.
pub const DEFAULT_BUDGET_RHO: f64 = 1.0;

/// The node's configuration (`concord.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name (the organisation), e.g. `hospital-a`.
    pub name: String,
    /// Address of the HTTP API (analysts, dashboard, health, metrics).
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    /// Address on which peers connect for MPC sessions (TLS).
    #[serde(default = "default_mpc_listen")]
    pub mpc_listen: SocketAddr,
    /// The MPC address (`host:port`) given to peers at pairing, when they
    /// must reach this node by another address than `mpc_listen` (a DNS
    /// name, a container's service name, a NAT). Default: `mpc_listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<String>,
    /// Directory of the store; relative to the node directory unless absolute.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Period between heartbeats to peers, in seconds.
    #[serde(default = "default_heartbeat_period")]
    pub heartbeat_period_secs: u64,
    /// A peer silent for this many seconds is considered down.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_secs: u64,
    /// Re-check registered datasets (re-hash, re-validate if changed) every
    /// this many seconds while the node runs; 0 disables.
    #[serde(default = "default_dataset_check")]
    pub dataset_check_secs: u64,
    /// Differential privacy: budgets and defaults.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// Access control: who may ask what (signed requests and a policy file).
    #[serde(default)]
    pub access: AccessConfig,
    /// Known peers (filled in by pairing).
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
}

/// The `[privacy]` section: what this node demands of queries on its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Budget of each analyst on each dataset, in zCDP rho (overridden per
    /// analyst and dataset with `concord budget set`). Every differentially
    /// private query an analyst runs with this node is charged against it.
    #[serde(default = "default_budget_rho")]
    pub budget_rho: f64,
    /// Refuse queries without differential privacy on this node's data.
    #[serde(default)]
    pub require: bool,
    /// Epsilon applied by this node, as coordinator, to queries that give no
    /// privacy parameter (absent: such queries run without noise, unless a
    /// participant requires it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_epsilon: Option<f64>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig { budget_rho: DEFAULT_BUDGET_RHO, require: false, default_epsilon: None }
    }
}

fn default_budget_rho() -> f64 {
    DEFAULT_BUDGET_RHO
}

/// Default longest validity of a signed request, in seconds.
pub const DEFAULT_MAX_REQUEST_LIFETIME_SECS: u64 = 3600;
/// Default time an operator has to approve a session, in seconds.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 86_400;

/// The `[access]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The policy file (TOML; relative to the node directory). When set,
    /// every query on this node's data must come as a request signed by an
    /// analyst registered here (`concord analyst add`) and be allowed by the
    /// policy; when absent, the node accepts unsigned queries from whoever
    /// reaches its API (open mode, for trials on one machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// Longest validity window of a signed request, in seconds.
    #[serde(default = "default_max_request_lifetime")]
    pub max_request_lifetime_secs: u64,
    /// How long a session may wait for this node's operator's approval, in seconds.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            policy: None,
            max_request_lifetime_secs: DEFAULT_MAX_REQUEST_LIFETIME_SECS,
            approval_timeout_secs: DEFAULT_APPROVAL_TIMEOUT_SECS,
        }
    }
}

fn default_max_request_lifetime() -> u64 {
    DEFAULT_MAX_REQUEST_LIFETIME_SECS
}
fn default_approval_timeout() -> u64 {
    DEFAULT_APPROVAL_TIMEOUT_SECS
}

/// A peer node, as pinned at pairing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's name.
    pub name: String,
    /// The peer's MPC address (`host:port`).
    pub address: String,
    /// The peer's Ed25519 public key, hex.
    pub ed25519_public: String,
    /// SHA-256 fingerprint of the peer's TLS certificate, hex.
    pub tls_fingerprint: String,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7300))
}
fn default_mpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7301))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_heartbeat_period() -> u64 {
    DEFAULT_HEARTBEAT_PERIOD_SECS
}
fn default_dataset_check() -> u64 {
    DEFAULT_DATASET_CHECK_SECS
}
fn default_heartbeat_timeout() -> u64 {
    DEFAULT_HEARTBEAT_TIMEOUT_SECS
}

impl NodeConfig {
    /// A configuration with every default and no peers.
    pub fn new(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_owned(),
            api_listen: default_api_listen(),
            mpc_listen: default_mpc_listen(),
            advertise_address: None,
            data_dir: default_data_dir(),
            heartbeat_period_secs: DEFAULT_HEARTBEAT_PERIOD_SECS,
            heartbeat_timeout_secs: DEFAULT_HEARTBEAT_TIMEOUT_SECS,
            dataset_check_secs: DEFAULT_DATASET_CHECK_SECS,
            privacy: PrivacyConfig::default(),
            access: AccessConfig::default(),
            peers: Vec::new(),
        }
    }

    /// Parse `text` (the contents of `path`, which errors name).
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, NodeError> {
        let config: NodeConfig =
            toml::from_str(text).map_err(|e| NodeError::Config { path: path.to_owned(), reason: one_line(&e) })?;
        config.check(path)?;
        Ok(config)
    }

    /// Load `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
        NodeConfig::from_toml(&text, path)
    }

    fn check(&self, path: &Path) -> Result<(), NodeError> {
        let bad = |reason: String| Err(NodeError::Config { path: path.to_owned(), reason });
        if let Err(e) = check_name(&self.name) {
            return bad(format!("key `name`: {e}"));
        }
        if let Some(a) = &self.advertise_address {
            if let Err(e) = check_address(a) {
                return bad(format!("key `advertise_address`: {e}"));
            }
        }
        if self.heartbeat_period_secs == 0 {
            return bad("key `heartbeat_period_secs`: must be at least 1".into());
        }
        if self.heartbeat_timeout_secs <= self.heartbeat_period_secs {
            return bad(format!(
                "key `heartbeat_timeout_secs`: must exceed heartbeat_period_secs ({})",
                self.heartbeat_period_secs
            ));
        }
        let pv = &self.privacy;
        if !(pv.budget_rho.is_finite() && pv.budget_rho >= 0.0) {
            return bad(format!("key `privacy.budget_rho`: must be a number >= 0, got {}", pv.budget_rho));
        }
        if let Some(e) = pv.default_epsilon.filter(|e| !(e.is_finite() && *e > 0.0)) {
            return bad(format!("key `privacy.default_epsilon`: must be a number > 0, got {e}"));
        }
        for (i, p) in self.peers.iter().enumerate() {
            if let Err(e) = check_name(&p.name) {
                return bad(format!("peer {} key `name`: {e}", i + 1));
            }
        }
        Ok(())
    }

    /// The MPC address given to peers: `advertise_address` if set, else `mpc_listen`.
    pub fn advertised_mpc_address(&self) -> String {
        self.advertise_address.clone().unwrap_or_else(|| self.mpc_listen.to_string())
    }

    /// The policy file, resolved against the node directory `dir`, if access control is on.
    pub fn policy_in(&self, dir: &Path) -> Option<PathBuf> {
        self.access.policy.as_ref().map(|p| if p.is_absolute() { p.clone() } else { dir.join(p) })
    }

    /// The data directory, resolved against the node directory `dir`.
    pub fn data_dir_in(&self, dir: &Path) -> PathBuf {
        if self.data_dir.is_absolute() {
            self.data_dir.clone()
        } else {
            dir.join(&self.data_dir)
        }
    }

    /// The configuration as commented TOML (what [`NodeConfig::write_commented`] writes).
    pub fn to_commented_toml(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "# Concord node configuration. Unknown keys are refused.\n\
             # Relative paths are relative to the directory of this file.\n\
             \n\
             # This node's name (its organisation), shown to peers.\n\
             name = {}\n\
             \n\
             # HTTP API (analysts, dashboard, /healthz, /metrics). Keep it on loopback\n\
             # or behind an authenticating proxy: it has no authentication yet.\n\
             api_listen = {}\n\
             \n\
             # Where peers connect for MPC sessions (mutually authenticated TLS 1.3).\n\
             mpc_listen = {}\n\
             \n\
             # The MPC address (host:port) given to peers at pairing, if they reach this\n\
             # node by another address than mpc_listen (DNS name, container name, NAT).\n\
             {}\n\
             \n\
             # The store (SQLite: datasets, peers, event log).\n\
             data_dir = {}\n\
             \n\
             # Heartbeats to peers: period, and silence after which a peer is down.\n\
             heartbeat_period_secs = {}\n\
             heartbeat_timeout_secs = {}\n\
             \n\
             # Datasets are registered with `concord dataset add` and kept in the store,\n\
             # not here. While the node runs, their files are re-hashed every\n\
             # dataset_check_secs seconds and re-validated if changed (0: never).\n\
             dataset_check_secs = {}\n\
             \n\
             # Differential privacy. Each analyst has a budget on each dataset, in zCDP\n\
             # rho (rho = epsilon^2 / 2 for a pure epsilon-DP query); every private query\n\
             # is charged on every participating node, which refuses it once the budget\n\
             # would be exceeded. `require = true` refuses queries without noise;\n\
             # `default_epsilon` is applied (as coordinator) to queries that give none.\n\
             [privacy]\n\
             budget_rho = {:?}\n\
             require = {}\n\
             {}\n\
             \n\
             # Access control. With a policy file, every query must be a request signed by\n\
             # an analyst registered here (`concord analyst add`) and allowed by the policy\n\
             # (see docs/OPERATIONS.md); without one, unsigned queries are accepted from\n\
             # whoever reaches the API (open mode: trials on one machine only).\n\
             [access]\n\
             {}\n\
             max_request_lifetime_secs = {}\n\
             approval_timeout_secs = {}\n\
             \n\
             # Peers, added by pairing. Each is pinned by its keys:\n\
             # [[peer]]\n\
             # name = \"hospital-b\"\n\
             # address = \"hospital-b.example:7301\"\n\
             # ed25519_public = \"<64 hex digits>\"\n\
             # tls_fingerprint = \"<64 hex digits>\"\n",
            toml_str(&self.name),
            toml_str(&self.api_listen.to_string()),
            toml_str(&self.mpc_listen.to_string()),
            match &self.advertise_address {
                Some(a) => format!("advertise_address = {}", toml_str(a)),
                None => "# advertise_address = \"hospital-a.example:7301\"".to_owned(),
            },
            toml_str(&self.data_dir.to_string_lossy()),
            self.heartbeat_period_secs,
            self.heartbeat_timeout_secs,
            self.dataset_check_secs,
            self.privacy.budget_rho,
            self.privacy.require,
            match self.privacy.default_epsilon {
                Some(e) => format!("default_epsilon = {e}"),
                None => "# default_epsilon = 1.0".to_owned(),
            },
            match &self.access.policy {
                Some(p) => format!("policy = {}", toml_str(&p.to_string_lossy())),
                None => "# policy = \"policy.toml\"".to_owned(),
            },
            self.access.max_request_lifetime_secs,
            self.access.approval_timeout_secs,
        );
        for p in &self.peers {
            let _ = write!(
                s,
                "\n[[peer]]\nname = {}\naddress = {}\ned25519_public = {}\ntls_fingerprint = {}\n",
                toml_str(&p.name),
                toml_str(&p.address),
                toml_str(&p.ed25519_public),
                toml_str(&p.tls_fingerprint),
            );
        }
        s
    }

    /// Write the configuration, with comments, to `path` (mode 0644,
    /// replacing any existing file).
    pub fn write_commented(&self, path: &Path) -> Result<(), NodeError> {
        std::fs::write(path, self.to_commented_toml()).map_err(|e| NodeError::io(path, e))
    }
}

/// Check a node, peer or dataset name: 1 to 64 characters among ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must have 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err("may contain only ASCII letters, digits, '-', '_' and '.'");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("may not start with '.' or '-'");
    }
    Ok(())
}

/// Check an address given to peers: `HOST:PORT`, at most 255 characters,
/// no whitespace, a non-empty host and a port from 1 to 65535.
pub fn check_address(address: &str) -> Result<(), &'static str> {
    if address.is_empty() || address.len() > 255 {
        return Err("must have 1 to 255 characters");
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("may not contain whitespace");
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err("must be HOST:PORT with a port from 1 to 65535"),
    }
}

/// A TOML basic string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The parser's message on one line: `POSITION (`SOURCE LINE`): MESSAGE`.
fn one_line(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let mut position = None;
    let mut source = None;
    let mut message = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('|') {
            Some((before, after)) if before.trim().chars().all(|c| c.is_ascii_digit()) => {
                let after = after.trim();
                if !before.trim().is_empty() && !after.is_empty() {
                    source = Some(after.to_owned());
                }
            }
            _ if position.is_none() && line.starts_with("TOML parse error") => position = Some(line.to_owned()),
            _ => message.push(line),
        }
    }
    let mut out = position.unwrap_or_default();
    if let Some(source) = source {
        out.push_str(&format!(" (`{source}`)"));
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out.push_str(&message.join(" "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_file_round_trips() {
        let mut c = NodeConfig::new("hospital-a");
        assert_eq!(c.api_listen.to_string(), DEFAULT_API_LISTEN);
        assert_eq!(c.mpc_listen.to_string(), DEFAULT_MPC_LISTEN);
        let text = c.to_commented_toml();
        assert!(text.contains("# [[peer]]"));
        assert_eq!(NodeConfig::from_toml(&text, Path::new("concord.toml")).unwrap(), c);
        c.peers.push(PeerConfig {
            name: "hospital-b".into(),
            address: "b.example:7301".into(),
            ed25519_public: "ab".repeat(32),
            tls_fingerprint: "cd".repeat(32),
        });
        c.data_dir = PathBuf::from("/var/lib/concord \"x\"");
        let text = c.to_commented_toml();
        assert_eq!(NodeConfig::from_toml(&text, Path::new("concord.toml")).unwrap(), c);
        c.advertise_address = Some("hospital-a:7301".into());
        let text = c.to_commented_toml();
        assert!(text.contains("\nadvertise_address = \"hospital-a:7301\"\n"), "{text}");
        assert_eq!(NodeConfig::from_toml(&text, Path::new("concord.toml")).unwrap(), c);
    }

    #[test]
    fn advertised_address_defaults_to_mpc_listen() {
        let mut c = NodeConfig::new("a");
        assert!(c.to_commented_toml().contains("\n# advertise_address = "));
        assert_eq!(c.advertised_mpc_address(), DEFAULT_MPC_LISTEN);
        c.mpc_listen = SocketAddr::from(([0, 0, 0, 0], 7401));
        assert_eq!(c.advertised_mpc_address(), "0.0.0.0:7401");
        let c = NodeConfig::from_toml(
            "name = \"a\"\nmpc_listen = \"0.0.0.0:7301\"\nadvertise_address = \"hospital-a:7301\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.advertised_mpc_address(), "hospital-a:7301");
        assert_eq!(c.mpc_listen.to_string(), "0.0.0.0:7301");
        for good in ["hospital-a:7301", "10.0.0.2:1", "[::1]:7301", "a.example.org:65535"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let c = NodeConfig::from_toml("name = \"a\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(c, NodeConfig::new("a"));
    }

    #[test]
    fn unknown_key_is_refused_with_file_and_key() {
        let err = NodeConfig::from_toml("name = \"a\"\napi_listne = \"127.0.0.1:1\"\n", Path::new("/n/concord.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/n/concord.toml: "), "{err}");
        assert!(err.contains("api_listne"), "{err}");
        let err = NodeConfig::from_toml(
            "name = \"a\"\n[[peer]]\nname = \"b\"\naddress = \"x:1\"\ned25519_public = \"\"\ntls_fingerprint = \"\"\nport = 3\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, key) in [
            ("name = \"a\"\napi_listen = \"nowhere\"\n", "api_listen"),
            ("name = \"a b\"\n", "name"),
            ("name = \"a\"\nheartbeat_period_secs = 0\n", "heartbeat_period_secs"),
            ("name = \"a\"\nheartbeat_timeout_secs = 2\n", "heartbeat_timeout_secs"),
            ("name = \"a\"\nadvertise_address = \"hospital-a\"\n", "advertise_address"),
            ("name = \"a\"\nadvertise_address = \"\"\n", "advertise_address"),
            ("name = \"a\"\nadvertise_address = \":7301\"\n", "advertise_address"),
            ("name = \"a\"\nadvertise_address = \"h:0\"\n", "advertise_address"),
            ("name = \"a\"\nadvertise_address = \"h:99999\"\n", "advertise_address"),
            ("name = \"a\"\nadvertise_address = \"a b:7301\"\n", "advertise_address"),
            ("name = \"a\"\nadvertise_address = 7301\n", "advertise_address"),
        ] {
            let err = NodeConfig::from_toml(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
