//! The node dashboard: one server-rendered HTML page (inline CSS, no
//! JavaScript, no external assets) with the node's peers and their health,
//! its datasets, MPC sessions with their progress, the recent events, and the
//! audit trail (the most recent signed audit entries and the head checkpoint).
//!
//! The page is built from plain view structs ([`DashboardView`] and its
//! parts), independent of the store, so any part of the node can fill them;
//! [`render`] turns a view into the page. Every string of a view is
//! HTML-escaped ([`escape_html`]): names, addresses, SQL and messages come
//! from the store or from peers and are never trusted. The page reloads
//! itself every 2 seconds (`<meta http-equiv="refresh">`), which keeps
//! session progress live without a script.

use std::fmt::Write as _;

/// Everything the dashboard shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DashboardView {
    /// This node's name.
    pub node: String,
    /// The node's software version.
    pub version: String,
    /// When the view was built, Unix seconds.
    pub generated_at: i64,
    /// Paired peers.
    pub peers: Vec<PeerView>,
    /// Registered datasets.
    pub datasets: Vec<DatasetView>,
    /// MPC sessions, in the order they should be listed.
    pub sessions: Vec<SessionView>,
    /// Recent events, newest first.
    pub events: Vec<EventView>,
    /// Privacy budgets per analyst and dataset.
    pub budgets: Vec<BudgetView>,
    /// Sessions waiting for this node's operator.
    pub approvals: Vec<ApprovalView>,
    /// Unlock requests waiting for this node's operator.
    pub unlocks: Vec<UnlockView>,
    /// The most recent audit entries, newest first.
    pub audit: Vec<AuditView>,
    /// One line about the audit log's head (entries, signed checkpoint).
    pub audit_head: String,
}

/// One entry of the audit log (see [`crate::audit`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditView {
    /// Position in the chain.
    pub seq: u64,
    /// When, Unix seconds.
    pub at: i64,
    /// Kind, e.g. `session.accepted`.
    pub kind: String,
    /// The session it is about (empty: none).
    pub session: String,
    /// The body, as JSON.
    pub body: String,
    /// The entry's hash, hex.
    pub hash: String,
}

/// A session waiting for this node's operator, or one the operator may veto.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovalView {
    /// Session id.
    pub id: String,
    /// `pending` or `running`.
    pub state: String,
    /// Whether it waits for this node's approval (else it can only be vetoed).
    pub awaiting: bool,
    /// The analyst.
    pub analyst: String,
    /// The coordinating node.
    pub coordinator: String,
    /// The parties.
    pub parties: Vec<String>,
    /// The plan in words: what is computed and what is revealed to whom.
    pub description: Vec<String>,
}

/// An unlock request waiting for this node's operator ([`crate::unlock`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnlockView {
    /// Request id.
    pub id: String,
    /// The consortium whose key sealed the file.
    pub consortium: String,
    /// The node that asks (and will open the file).
    pub requester: String,
    /// The requester's reason.
    pub reason: String,
    /// Size of the sealed file, bytes.
    pub size: usize,
    /// SHA-256 of the sealed file, hex.
    pub digest: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The operator's page: sessions to approve, reject or veto, and unlock
/// requests to approve or reject, with forms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovalsPage {
    /// This node's name.
    pub node: String,
    /// The anti-forgery token every form carries (it changes when the node restarts).
    pub csrf: String,
    /// Waiting and active sessions.
    pub sessions: Vec<ApprovalView>,
    /// Unlock requests waiting for this node's decision.
    pub unlocks: Vec<UnlockView>,
}

/// An analyst's privacy budget on one dataset (numbers already formatted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetView {
    /// The analyst.
    pub analyst: String,
    /// The dataset.
    pub dataset: String,
    /// Spent, zCDP rho.
    pub spent: String,
    /// The budget, zCDP rho.
    pub budget: String,
    /// What is left, as zCDP rho and as (epsilon, delta).
    pub remaining: String,
}

/// A paired peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's name.
    pub name: String,
    /// Its MPC address.
    pub address: String,
    /// `"up"`, `"suspected"`, `"down"` or `"unknown"` (anything else is shown
    /// as given, with a neutral badge).
    pub health: String,
    /// When the peer was last heard from, Unix seconds.
    pub last_seen: Option<i64>,
    /// Its pinned TLS certificate fingerprint (SHA-256, hex).
    pub fingerprint: String,
}

/// A registered dataset (public facts only: no path, no row count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetView {
    /// The dataset's name.
    pub name: String,
    /// The table name queries use.
    pub table: String,
    /// Column names, in schema order.
    pub columns: Vec<String>,
    /// `"valid"` or `"invalid"` (anything else: neutral badge).
    pub status: String,
    /// When the file was last validated, Unix seconds.
    pub validated_at: Option<i64>,
}

/// An MPC session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// `"pending"`, `"running"`, `"done"`, `"failed"` or `"cancelled"`.
    pub state: String,
    /// The query.
    pub sql: String,
    /// The parties' names.
    pub parties: Vec<String>,
    /// The coordinating party's name.
    pub coordinator: String,
    /// When the session was created, Unix seconds.
    pub created_at: i64,
    /// When it ended, Unix seconds.
    pub finished_at: Option<i64>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Each party's current phase: `(party, phase)`.
    pub progress: Vec<(String, String)>,
}

/// One entry of the event log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventView {
    /// When, Unix seconds.
    pub at: i64,
    /// Event kind, e.g. `dataset.added`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}

/// Escape `text` for HTML element content and (quoted) attribute values:
/// `&`, `<`, `>`, `"` and `'`.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM:SS` (proleptic Gregorian calendar).
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Year, month (1..=12), day (1..=31) of the day `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

const STYLE: &str = "
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
header { background: #fff; border-bottom: 1px solid #d8dee4; padding: 16px 32px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 2px 0 0; color: #59636e; font-size: 13px; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 32px 32px; }
section { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; margin-top: 20px; padding: 4px 20px 16px; }
h2 { font-size: 17px; margin: 12px 0 8px; }
h2 .count { color: #59636e; font-weight: normal; font-size: 14px; }
table { width: 100%; border-collapse: collapse; font-size: 14px; }
th { text-align: left; color: #59636e; font-weight: 600; border-bottom: 2px solid #d8dee4; padding: 6px 8px; }
td { border-bottom: 1px solid #eaeef2; padding: 6px 8px; vertical-align: top; }
tr:last-child td { border-bottom: none; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.empty { color: #59636e; font-style: italic; margin: 4px 0; }
.muted { color: #59636e; }
.nowrap { white-space: nowrap; }
.badge { display: inline-block; border-radius: 999px; padding: 1px 10px; font-size: 12px; font-weight: 600;
  border: 1px solid transparent; white-space: nowrap; }
.ok { background: #dafbe1; color: #116329; border-color: #aceebb; }
.warn { background: #fff8c5; color: #7d4e00; border-color: #eed888; }
.bad { background: #ffebe9; color: #a40e26; border-color: #ffcecb; }
.info { background: #ddf4ff; color: #0550ae; border-color: #b6e3ff; }
.neutral { background: #eff2f5; color: #424a53; border-color: #d8dee4; }
ul.progress { list-style: none; margin: 0; padding: 0; }
.decision { border-top: 1px solid #eaeef2; padding: 8px 0; }
.decision form { display: inline-block; margin-right: 12px; }
.reason { color: #a40e26; font-size: 13px; }
";

/// The CSS class of a badge for `value` (a fixed class, never the value
/// itself, so a hostile value cannot inject a class).
fn badge_class(value: &str) -> &'static str {
    match value {
        "up" | "valid" | "done" => "ok",
        "suspected" | "pending" => "warn",
        "down" | "invalid" | "failed" => "bad",
        "running" => "info",
        _ => "neutral",
    }
}

fn badge(out: &mut String, value: &str) {
    let _ = write!(out, "<span class=\"badge {}\">{}</span>", badge_class(value), escape_html(value));
}

fn time_or(out: &mut String, at: Option<i64>, none: &str) {
    match at {
        Some(t) => {
            let _ = write!(out, "<span class=\"nowrap\">{} UTC</span>", format_utc(t));
        }
        None => {
            let _ = write!(out, "<span class=\"muted\">{}</span>", escape_html(none));
        }
    }
}

fn section_head(out: &mut String, id: &str, title: &str, n: usize) {
    let _ = write!(out, "<section id=\"{id}\" aria-labelledby=\"{id}-h\">");
    let _ = write!(out, "<h2 id=\"{id}-h\">{title} <span class=\"count\">({n})</span></h2>");
}

fn table_head(out: &mut String, columns: &[&str]) {
    out.push_str("<table><thead><tr>");
    for c in columns {
        let _ = write!(out, "<th scope=\"col\">{c}</th>");
    }
    out.push_str("</tr></thead><tbody>");
}

fn peers(out: &mut String, peers: &[PeerView]) {
    section_head(out, "peers", "Peers", peers.len());
    if peers.is_empty() {
        out.push_str("<p class=\"empty\">No peers paired yet.</p>");
    } else {
        table_head(out, &["Name", "Health", "Address", "Last seen", "TLS fingerprint"]);
        for p in peers {
            let _ = write!(out, "<tr><td><strong>{}</strong></td><td>", escape_html(&p.name));
            badge(out, &p.health);
            let _ = write!(out, "</td><td><code>{}</code></td><td>", escape_html(&p.address));
            time_or(out, p.last_seen, "never");
            let short: String = p.fingerprint.chars().take(16).collect();
            let ellipsis = if short.len() < p.fingerprint.len() { "…" } else { "" };
            let _ = write!(
                out,
                "</td><td><code title=\"{}\">{}{ellipsis}</code></td></tr>",
                escape_html(&p.fingerprint),
                escape_html(&short)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn datasets(out: &mut String, datasets: &[DatasetView]) {
    section_head(out, "datasets", "Datasets", datasets.len());
    if datasets.is_empty() {
        out.push_str("<p class=\"empty\">No datasets registered yet.</p>");
    } else {
        table_head(out, &["Name", "Status", "Table", "Columns", "Validated"]);
        for d in datasets {
            let _ = write!(out, "<tr><td><strong>{}</strong></td><td>", escape_html(&d.name));
            badge(out, &d.status);
            let columns: Vec<String> = d.columns.iter().map(|c| escape_html(c)).collect();
            let _ = write!(
                out,
                "</td><td><code>{}</code></td><td><code>{}</code></td><td>",
                escape_html(&d.table),
                columns.join(", ")
            );
            time_or(out, d.validated_at, "not yet");
            out.push_str("</td></tr>");
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn sessions(out: &mut String, sessions: &[SessionView]) {
    section_head(out, "sessions", "Sessions", sessions.len());
    if sessions.is_empty() {
        out.push_str("<p class=\"empty\">No sessions yet.</p>");
    } else {
        table_head(out, &["Session", "State", "Query", "Parties", "Progress", "Created", "Finished"]);
        for s in sessions {
            let _ = write!(out, "<tr><td><code>{}</code></td><td>", escape_html(&s.id));
            badge(out, &s.state);
            if let Some(reason) = &s.reason {
                let _ = write!(out, "<div class=\"reason\">{}</div>", escape_html(reason));
            }
            let _ = write!(out, "</td><td><code>{}</code></td><td>", escape_html(&s.sql));
            let parties: Vec<String> = s
                .parties
                .iter()
                .map(|p| {
                    let mark = if *p == s.coordinator { " <span class=\"muted\">(coordinator)</span>" } else { "" };
                    format!("{}{mark}", escape_html(p))
                })
                .collect();
            out.push_str(&parties.join("<br>"));
            out.push_str("</td><td>");
            if s.progress.is_empty() {
                out.push_str("<span class=\"muted\">—</span>");
            } else {
                out.push_str("<ul class=\"progress\">");
                for (party, phase) in &s.progress {
                    let _ = write!(out, "<li>{}: <strong>{}</strong></li>", escape_html(party), escape_html(phase));
                }
                out.push_str("</ul>");
            }
            out.push_str("</td><td>");
            time_or(out, Some(s.created_at), "");
            out.push_str("</td><td>");
            time_or(out, s.finished_at, "—");
            out.push_str("</td></tr>");
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn approvals(out: &mut String, approvals: &[ApprovalView], unlocks: &[UnlockView]) {
    let waiting: Vec<&ApprovalView> = approvals.iter().filter(|a| a.awaiting).collect();
    section_head(out, "approvals", "Waiting for your approval", waiting.len() + unlocks.len());
    if waiting.is_empty() && unlocks.is_empty() {
        out.push_str("<p class=\"empty\">No session waits for this node's approval.</p>");
    }
    if !unlocks.is_empty() {
        table_head(out, &["Unlock request", "Requester", "Consortium", "Reason", "Sealed file"]);
        for u in unlocks {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{} bytes, SHA-256 <code>{}</code></td></tr>",
                escape_html(&u.id),
                escape_html(&u.requester),
                escape_html(&u.consortium),
                escape_html(&u.reason),
                u.size,
                escape_html(u.digest.get(..16).unwrap_or(&u.digest))
            );
        }
        out.push_str("</tbody></table>");
    }
    if !waiting.is_empty() {
        table_head(out, &["Session", "Analyst", "Coordinator", "What it computes and reveals"]);
        for a in waiting {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&a.id),
                escape_html(&a.analyst),
                escape_html(&a.coordinator),
                a.description.iter().map(|l| escape_html(l)).collect::<Vec<_>>().join("<br>")
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<p><a href=\"/approvals\">Approve, reject or veto sessions and unlock requests</a></p></section>");
}

/// The operator's page (no automatic refresh, so a reason being typed is not lost).
pub fn render_approvals(page: &ApprovalsPage) -> String {
    let node = escape_html(&page.node);
    let csrf = escape_html(&page.csrf);
    let mut out = String::with_capacity(8192);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(out, "<title>Approvals · {node} · Concord node</title><style>{STYLE}</style></head><body>");
    let _ = write!(
        out,
        "<header><h1>Approvals at <span class=\"mono\">{node}</span></h1><p><a href=\"/\">back to the dashboard</a></p>\
         </header><main>"
    );
    let count = page.sessions.len();
    section_head(&mut out, "decide", "Sessions you can decide on", count);
    if page.sessions.is_empty() {
        out.push_str("<p class=\"empty\">No session waits for approval or is running here.</p>");
    }
    for a in &page.sessions {
        let id = escape_html(&a.id);
        let _ = write!(out, "<div class=\"decision\" id=\"s-{id}\"><h3><code>{id}</code> ");
        badge(&mut out, &a.state);
        let _ = write!(
            out,
            "</h3><p>analyst <strong>{}</strong>, coordinator {}, parties {}</p><ul>",
            escape_html(&a.analyst),
            escape_html(&a.coordinator),
            a.parties.iter().map(|p| escape_html(p)).collect::<Vec<_>>().join(", ")
        );
        for line in &a.description {
            let _ = write!(out, "<li>{}</li>", escape_html(line));
        }
        out.push_str("</ul>");
        if a.awaiting {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/sessions/{id}/approve\"><input type=\"hidden\" name=\"csrf\" \
                 value=\"{csrf}\"><button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button></form>"
            );
        }
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/sessions/{id}/veto\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{csrf}\"><label>Reason <input type=\"text\" name=\"reason\" required></label> \
             <button type=\"submit\" name=\"decision\" value=\"veto\">{}</button></form></div>",
            if a.awaiting { "Reject" } else { "Veto" }
        );
    }
    out.push_str("</section>");
    section_head(&mut out, "unlocks", "Unlock requests you can decide on", page.unlocks.len());
    if page.unlocks.is_empty() {
        out.push_str("<p class=\"empty\">No unlock request waits for this node's decision.</p>");
    }
    for u in &page.unlocks {
        let id = escape_html(&u.id);
        let _ = write!(
            out,
            "<div class=\"decision\" id=\"u-{id}\"><h3>Unlock <code>{id}</code></h3><p>node <strong>{}</strong> asks \
             to open a file sealed to consortium {} ({} bytes, SHA-256 <code>{}</code>), because: {}</p>\
             <p>Approving releases this node's decryption share to {}; the file opens once enough members approve.</p>",
            escape_html(&u.requester),
            escape_html(&u.consortium),
            u.size,
            escape_html(&u.digest),
            escape_html(&u.reason),
            escape_html(&u.requester)
        );
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/unlock-requests/{id}/approve\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{csrf}\"><button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button></form>\
             <form method=\"post\" action=\"/ui/unlock-requests/{id}/reject\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{csrf}\"><label>Reason <input type=\"text\" name=\"reason\" required></label> \
             <button type=\"submit\" name=\"decision\" value=\"reject\">Reject</button></form></div>"
        );
    }
    out.push_str("</section></main></body></html>\n");
    out
}

fn budgets(out: &mut String, budgets: &[BudgetView]) {
    section_head(out, "budgets", "Privacy budgets", budgets.len());
    if budgets.is_empty() {
        out.push_str("<p class=\"empty\">No differentially private query has run here yet.</p>");
    } else {
        table_head(out, &["Analyst", "Dataset", "Spent (rho)", "Budget (rho)", "Remaining"]);
        for b in budgets {
            let _ = write!(
                out,
                "<tr><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&b.analyst),
                escape_html(&b.dataset),
                escape_html(&b.spent),
                escape_html(&b.budget),
                escape_html(&b.remaining)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn events(out: &mut String, events: &[EventView]) {
    section_head(out, "events", "Events", events.len());
    if events.is_empty() {
        out.push_str("<p class=\"empty\">No events recorded yet.</p>");
    } else {
        table_head(out, &["Time (UTC)", "Kind", "Message"]);
        for e in events {
            let _ = write!(
                out,
                "<tr><td class=\"nowrap\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                format_utc(e.at),
                escape_html(&e.kind),
                escape_html(&e.message)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn audit(out: &mut String, entries: &[AuditView], head: &str) {
    section_head(out, "audit", "Audit trail", entries.len());
    if !head.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", escape_html(head));
    }
    if entries.is_empty() {
        out.push_str("<p class=\"empty\">No audit entries yet.</p>");
    } else {
        table_head(out, &["Seq", "Time (UTC)", "Kind", "Session", "Details", "Hash"]);
        for e in entries {
            let session: String = e.session.chars().take(8).collect();
            let short: String = e.hash.chars().take(12).collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"nowrap\">{}</td><td><code>{}</code></td><td><code title=\"{}\">{}</code></td>\
                 <td><code>{}</code></td><td><code title=\"{}\">{}</code></td></tr>",
                e.seq,
                format_utc(e.at),
                escape_html(&e.kind),
                escape_html(&e.session),
                escape_html(&session),
                escape_html(&e.body),
                escape_html(&e.hash),
                escape_html(&short)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

/// The dashboard page for `view`: a complete HTML5 document.
pub fn render(view: &DashboardView) -> String {
    let node = escape_html(&view.node);
    let mut out = String::with_capacity(8192);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<meta http-equiv=\"refresh\" content=\"2\">");
    let _ = write!(out, "<title>{node} · Concord node</title><style>{STYLE}</style></head><body>");
    let _ = write!(
        out,
        "<header><h1>Concord node <span class=\"mono\">{node}</span></h1>\
         <p>version {} · updated {} UTC · refreshes every 2 s</p></header><main>",
        escape_html(&view.version),
        format_utc(view.generated_at)
    );
    approvals(&mut out, &view.approvals, &view.unlocks);
    peers(&mut out, &view.peers);
    datasets(&mut out, &view.datasets);
    sessions(&mut out, &view.sessions);
    budgets(&mut out, &view.budgets);
    events(&mut out, &view.events);
    audit(&mut out, &view.audit, &view.audit_head);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(\"x\" + 'y')</script>&";
    const EVIL_ESCAPED: &str = "&lt;script&gt;alert(&quot;x&quot; + &#39;y&#39;)&lt;/script&gt;&amp;";

    fn full() -> DashboardView {
        DashboardView {
            node: "hospital-a".into(),
            version: "0.1.0".into(),
            generated_at: 1_700_000_000,
            peers: vec![
                PeerView {
                    name: "hospital-b".into(),
                    address: "10.0.0.2:7301".into(),
                    health: "up".into(),
                    last_seen: Some(1_699_999_999),
                    fingerprint: "ab".repeat(32),
                },
                PeerView {
                    name: "hospital-c".into(),
                    address: "10.0.0.3:7301".into(),
                    health: "down".into(),
                    last_seen: None,
                    fingerprint: "cd".repeat(32),
                },
            ],
            datasets: vec![DatasetView {
                name: "patients".into(),
                table: "patients".into(),
                columns: vec!["age".into(), "ward".into()],
                status: "valid".into(),
                validated_at: Some(0),
            }],
            sessions: vec![SessionView {
                id: "s-1".into(),
                state: "failed".into(),
                sql: "SELECT COUNT(*) FROM patients WHERE age > 40".into(),
                parties: vec!["hospital-a".into(), "hospital-b".into()],
                coordinator: "hospital-a".into(),
                created_at: 1_700_000_000,
                finished_at: Some(1_700_000_060),
                reason: Some("peer hospital-b unreachable".into()),
                progress: vec![("hospital-a".into(), "sharing".into()), ("hospital-b".into(), "connecting".into())],
            }],
            events: vec![EventView {
                at: 86_399,
                kind: "dataset.added".into(),
                message: "dataset \"patients\"".into(),
            }],
            approvals: vec![ApprovalView {
                id: "s-2".into(),
                state: "pending".into(),
                awaiting: true,
                analyst: "bob".into(),
                coordinator: "hospital-b".into(),
                parties: vec!["hospital-a".into(), "hospital-b".into()],
                description: vec!["revealed to the analyst only: the exact pooled totals".into()],
            }],
            unlocks: vec![UnlockView {
                id: "u-1".into(),
                consortium: "owners".into(),
                requester: "hospital-c".into(),
                reason: "audit of record 17".into(),
                size: 1234,
                digest: "ef".repeat(32),
                created_at: 1_700_000_000,
            }],
            budgets: vec![BudgetView {
                analyst: "alice".into(),
                dataset: "patients".into(),
                spent: "0.2500".into(),
                budget: "1.0000".into(),
                remaining: "0.7500".into(),
            }],
            audit: vec![AuditView {
                seq: 7,
                at: 1_700_000_030,
                kind: "session.accepted".into(),
                session: "0123456789abcdef".into(),
                body: "{\"plan_hash\":\"ab12\",\"parties\":[\"hospital-a\",\"hospital-b\"]}".into(),
                hash: "9f".repeat(32),
            }],
            audit_head: "8 entries; signed head checkpoint of entry 7".into(),
        }
    }

    #[test]
    fn approvals_page_has_forms_with_the_token_and_escapes_everything() {
        let mut page = ApprovalsPage {
            node: EVIL.into(),
            csrf: "t0k3n".into(),
            sessions: full().approvals,
            unlocks: full().unlocks,
        };
        let html = render_approvals(&page);
        assert!(
            html.contains("action=\"/ui/sessions/s-2/approve\"") && html.contains("action=\"/ui/sessions/s-2/veto\"")
        );
        assert!(
            html.contains("action=\"/ui/unlock-requests/u-1/approve\"")
                && html.contains("action=\"/ui/unlock-requests/u-1/reject\"")
                && html.contains("audit of record 17"),
            "{html}"
        );
        assert_eq!(html.matches("name=\"csrf\" value=\"t0k3n\"").count(), 4, "{html}");
        page.unlocks[0].reason = EVIL.into();
        page.unlocks[0].requester = EVIL.into();
        assert!(!render_approvals(&page).contains("<script"));
        page.unlocks.clear();
        assert!(html.contains(">Reject</button>") && !html.contains("http-equiv=\"refresh\""), "{html}");
        page.sessions[0].awaiting = false;
        page.sessions[0].id = EVIL.into();
        page.sessions[0].description = vec![EVIL.into()];
        let html = render_approvals(&page);
        assert!(!html.contains("/approve") && html.contains(">Veto</button>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.matches(EVIL_ESCAPED).count() >= 4, "{html}");
    }

    #[test]
    fn escape_html_escapes_markup_and_quotes() {
        assert_eq!(escape_html(EVIL), EVIL_ESCAPED);
        assert_eq!(escape_html("plain text é"), "plain text é");
        assert_eq!(escape_html(""), "");
    }

    #[test]
    fn format_utc_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(86_399), "1970-01-01 23:59:59");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00:00");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29 23:59:59");
    }

    #[test]
    fn page_shows_every_section_with_badges_and_times() {
        let html = render(&full());
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(html.trim_end().ends_with("</html>"));
        for h in
            ["Waiting for your approval", "Peers", "Datasets", "Sessions", "Privacy budgets", "Events", "Audit trail"]
        {
            assert!(html.contains(&format!(">{h} <span class=\"count\">")), "heading {h}");
        }
        assert!(html.contains("hospital-a") && html.contains("version 0.1.0"));
        assert!(html.contains("updated 2023-11-14 22:13:20 UTC"));
        // Badges carry their text, not only a colour.
        assert!(html.contains("<span class=\"badge ok\">up</span>"));
        assert!(html.contains("<span class=\"badge bad\">down</span>"));
        assert!(html.contains("<span class=\"badge ok\">valid</span>"));
        assert!(html.contains("<span class=\"badge bad\">failed</span>"));
        assert!(html.contains("peer hospital-b unreachable"));
        assert!(html.contains("<code>age, ward</code>"));
        assert!(html.contains("1970-01-01 00:00:00 UTC"));
        assert!(html.contains("2023-11-14 22:14:20 UTC"));
        assert!(html.contains("1970-01-01 23:59:59"));
        assert!(html.contains("hospital-b: <strong>connecting</strong>"));
        assert!(html.contains("<td><strong>alice</strong></td><td>patients</td><td>0.2500</td><td>1.0000</td>"));
        assert!(html.contains("SELECT COUNT(*) FROM patients WHERE age &gt; 40"));
        assert!(html.contains(&format!("title=\"{}\"", "ab".repeat(32))));
        assert!(html.contains("never"));
        assert!(!html.contains("No peers paired yet"));
        // The audit trail: seq, time, kind, shortened session and hash (full ones on hover), escaped body.
        assert!(
            html.contains("<td>7</td><td class=\"nowrap\">2023-11-14 22:13:50</td><td><code>session.accepted</code>")
        );
        assert!(html.contains("<code title=\"0123456789abcdef\">01234567</code>"), "{html}");
        assert!(html.contains("{&quot;plan_hash&quot;:&quot;ab12&quot;,&quot;parties&quot;:[&quot;hospital-a&quot;"));
        assert!(html.contains(&format!("<code title=\"{}\">{}</code>", "9f".repeat(32), "9f".repeat(6))));
        assert!(html.contains("8 entries; signed head checkpoint of entry 7"));
        // No scripts, no external assets; the one link is to this node's approvals page.
        assert!(!html.contains("<script") && !html.contains("src="));
        assert_eq!(html.matches("href=").count(), html.matches("href=\"/approvals\"").count(), "{html}");
    }

    #[test]
    fn empty_view_shows_empty_states() {
        let html = render(&DashboardView { node: "n".into(), ..DashboardView::default() });
        for empty in [
            "No peers paired yet",
            "No datasets registered yet",
            "No sessions yet",
            "No differentially private query",
            "No session waits for this node's approval",
            "No events recorded yet",
            "No audit entries yet",
        ] {
            assert!(html.contains(empty), "{empty} missing");
        }
        assert!(!html.contains("<table"));
    }

    #[test]
    fn every_string_from_data_is_escaped() {
        let mut v = full();
        v.node = EVIL.into();
        v.version = EVIL.into();
        v.peers[0] = PeerView {
            name: EVIL.into(),
            address: EVIL.into(),
            health: EVIL.into(),
            last_seen: None,
            fingerprint: EVIL.into(),
        };
        v.datasets[0] = DatasetView {
            name: EVIL.into(),
            table: EVIL.into(),
            columns: vec![EVIL.into()],
            status: EVIL.into(),
            validated_at: None,
        };
        v.sessions[0] = SessionView {
            id: EVIL.into(),
            state: EVIL.into(),
            sql: EVIL.into(),
            parties: vec![EVIL.into()],
            coordinator: EVIL.into(),
            created_at: 0,
            finished_at: None,
            reason: Some(EVIL.into()),
            progress: vec![(EVIL.into(), EVIL.into())],
        };
        v.events[0] = EventView { at: 0, kind: EVIL.into(), message: EVIL.into() };
        v.budgets[0] = BudgetView {
            analyst: EVIL.into(),
            dataset: EVIL.into(),
            spent: EVIL.into(),
            budget: EVIL.into(),
            remaining: EVIL.into(),
        };
        v.audit[0] =
            AuditView { seq: 0, at: 0, kind: EVIL.into(), session: EVIL.into(), body: EVIL.into(), hash: EVIL.into() };
        v.audit_head = EVIL.into();
        let html = render(&v);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert(\"") && !html.contains("'y'"), "{html}");
        // Each field appears escaped (the fingerprint, audit session and hash are shortened).
        assert!(html.matches(EVIL_ESCAPED).count() >= 28, "{html}");
        // An unknown state gets the neutral badge, never a class taken from data.
        assert!(html.contains(&format!("<span class=\"badge neutral\">{EVIL_ESCAPED}</span>")));
    }
}
