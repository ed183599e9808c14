//! Parties as separate OS processes over loopback TLS.
//!
//! The parent creates a TLS identity per party in a private directory (0700,
//! keys 0600, removed afterwards), starts `concord <subcommand> --party i
//! --dir D --session S ...` for every party, learns the port each child
//! listens on (`PORT p` on its stdout), tells every child all ports (`PEERS
//! p0,p1,...` on its stdin), relays `PHASE text` lines as progress and
//! collects one `RESULT payload` line per party. Children connect with
//! [`child_connect`]. A child still running when the parent gives up is
//! killed, never orphaned.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use concord_net::tls::{Identity, TlsConfig, TlsPeer, TlsTransport};
use indicatif::ProgressBar;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Private working directory for one run (certificates and keys), removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> Result<Self> {
        let mut tag = [0u8; 8];
        ChaCha12Rng::from_os_rng().fill_bytes(&mut tag);
        let dir = std::env::temp_dir().join(format!("concord-{}-{}", std::process::id(), concord_net::hex(&tag)));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        set_mode(&dir, 0o700)?;
        Ok(RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

fn write_secret(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, "").with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, 0o600)?;
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

struct ChildParty {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for ChildParty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Line {
    Port(usize, u16),
    Phase(usize, String),
    Result(usize, String),
    Exit(usize),
}

/// Run `n` party processes of `subcommand`; `extra(i)` gives party i's
/// further arguments. Returns each party's RESULT payload, or an error
/// naming every party that failed (their own errors go to stderr).
pub fn run_processes(
    n: usize,
    subcommand: &str,
    extra: impl Fn(usize) -> Vec<String>,
    timeout: Duration,
    pb: Option<&ProgressBar>,
) -> Result<Vec<String>> {
    let say = |m: String| {
        if let Some(pb) = pb {
            pb.set_message(m);
        }
    };
    let dir = RunDir::create()?;
    say(format!("generating {n} TLS identities"));
    let mut fingerprints = Vec::with_capacity(n);
    for i in 0..n {
        let id = Identity::generate(&format!("concord-party-{i}"))?;
        fingerprints.push(concord_net::hex(&id.fingerprint()));
        std::fs::write(dir.0.join(format!("party-{i}.crt")), id.cert_pem())?;
        write_secret(&dir.0.join(format!("party-{i}.key")), &id.key_pem())?;
    }
    std::fs::write(dir.0.join("fingerprints"), fingerprints.join("\n"))?;
    let mut session = [0u8; 16];
    ChaCha12Rng::from_os_rng().fill_bytes(&mut session);
    let exe = std::env::current_exe().context("locating the concord executable")?;
    let (tx, rx) = mpsc::channel::<Line>();
    let mut children = Vec::with_capacity(n);
    say(format!("starting {n} party processes"));
    for i in 0..n {
        let mut child = Command::new(&exe)
            .arg(subcommand)
            .args(["--party", &i.to_string()])
            .arg("--dir")
            .arg(&dir.0)
            .args(["--session", &concord_net::hex(&session)])
            .args(extra(i))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting party {i}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("party {i}: no stdout"))?;
        let stdin = child.stdin.take();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let msg = if let Some(p) = line.strip_prefix("PORT ") {
                    p.trim().parse().ok().map(|p| Line::Port(i, p))
                } else if let Some(p) = line.strip_prefix("PHASE ") {
                    Some(Line::Phase(i, p.to_string()))
                } else {
                    line.strip_prefix("RESULT ").map(|r| Line::Result(i, r.to_string()))
                };
                if let Some(m) = msg {
                    let _ = tx.send(m);
                }
            }
            let _ = tx.send(Line::Exit(i));
        });
        children.push(ChildParty { child, stdin });
    }
    drop(tx);
    let deadline = Instant::now() + timeout + Duration::from_secs(30);
    let wait = |rx: &mpsc::Receiver<Line>| -> Result<Line> {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).map_err(|_| anyhow!("the parties did not finish in time"))
    };
    let mut ports = vec![None; n];
    while ports.iter().any(Option::is_none) {
        match wait(&rx)? {
            Line::Port(i, p) => ports[i] = Some(p),
            Line::Exit(i) => bail!("party {i} exited before listening (see its error above)"),
            _ => {}
        }
    }
    let list: Vec<String> = ports.iter().map(|p| p.unwrap_or(0).to_string()).collect();
    for (i, c) in children.iter_mut().enumerate() {
        if let Some(mut stdin) = c.stdin.take() {
            writeln!(stdin, "PEERS {}", list.join(",")).with_context(|| format!("telling party {i} its peers"))?;
        }
    }
    say("parties connecting over TLS".to_string());
    let mut results: Vec<Option<String>> = vec![None; n];
    let mut exited = vec![false; n];
    while exited.iter().any(|e| !e) {
        match wait(&rx)? {
            Line::Result(i, r) => results[i] = Some(r),
            Line::Phase(i, p) => say(format!("party {i}: {p}")),
            Line::Exit(i) => exited[i] = true,
            Line::Port(..) => {}
        }
    }
    let mut failed = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        let status = c.child.wait().with_context(|| format!("waiting for party {i}"))?;
        if !status.success() {
            failed.push(format!("party {i} ({status})"));
        }
    }
    if !failed.is_empty() {
        bail!("the run failed: {}; each party's error is printed above", failed.join(", "));
    }
    results.into_iter().enumerate().map(|(i, r)| r.ok_or_else(|| anyhow!("party {i} sent no result"))).collect()
}

/// The arguments every party process receives.
#[derive(Args, Clone, Debug)]
pub struct ChildArgs {
    /// This party's index.
    #[arg(long)]
    pub party: usize,
    /// Directory with every party's certificate and this party's key.
    #[arg(long)]
    pub dir: PathBuf,
    /// Session id (32 hex digits).
    #[arg(long)]
    pub session: String,
}

fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        bail!("{what} must be {} hex digits, got {:?}", 2 * N, s);
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).ok_or_else(|| anyhow!("{what} is too short"))?;
        *b = u8::from_str_radix(pair, 16).with_context(|| format!("{what} is not hex: {s:?}"))?;
    }
    Ok(out)
}

/// Child side: load this party's identity, listen, report the port, learn
/// the peers' ports, and connect to all of them. `on_listen` runs before
/// connecting (for setup timing). Returns the runtime the transport's tasks
/// live on, and the transport.
pub fn child_connect(
    c: &ChildArgs,
    n: usize,
    timeout: Duration,
    on_listen: impl FnOnce(),
) -> Result<(tokio::runtime::Runtime, TlsTransport)> {
    let me = c.party;
    let session = parse_hex::<16>(&c.session, "--session")?;
    let cert = std::fs::read_to_string(c.dir.join(format!("party-{me}.crt")))?;
    let key = std::fs::read_to_string(c.dir.join(format!("party-{me}.key")))?;
    let identity = Identity::from_pem(&cert, &key)?;
    let fps = std::fs::read_to_string(c.dir.join("fingerprints"))?;
    let fps: Vec<[u8; 32]> = fps.lines().map(|l| parse_hex::<32>(l, "fingerprint")).collect::<Result<_>>()?;
    if fps.len() != n || me >= n {
        bail!("party {me}: {} fingerprints for {n} parties", fps.len());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let mut out = std::io::stdout();
    writeln!(out, "PORT {port}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("PEERS ")
        .ok_or_else(|| anyhow!("party {me}: expected PEERS line, got {line:?}"))?
        .split(',')
        .map(|s| s.parse::<u16>().with_context(|| format!("bad port {s:?}")))
        .collect::<Result<_>>()?;
    if ports.len() != n {
        bail!("party {me}: {} ports for {n} parties", ports.len());
    }
    let peers = ports
        .iter()
        .zip(&fps)
        .map(|(port, fp)| TlsPeer { addr: std::net::SocketAddr::from(([127, 0, 0, 1], *port)), fingerprint: *fp })
        .collect();
    let mut cfg = TlsConfig::new(me, identity, peers, session);
    cfg.recv_timeout = timeout;
    cfg.connect_timeout = timeout.min(Duration::from_secs(30));
    on_listen();
    let net = rt.block_on(TlsTransport::establish(cfg, listener)).map_err(|e| anyhow!("party {me}: {e}"))?;
    phase("connected")?;
    Ok((rt, net))
}

/// Report progress to the parent.
pub fn phase(text: &str) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "PHASE {text}")?;
    out.flush()?;
    Ok(())
}

/// Send this party's result to the parent (one line).
pub fn result(payload: &str) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "RESULT {payload}")?;
    out.flush()?;
    Ok(())
}
