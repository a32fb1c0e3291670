//! The status page: `GET /` on the admin listener, one server-rendered HTML page about this
//! gateway's job (like HAProxy's stats page), with no external assets and no script — it
//! refreshes itself every [`REFRESH_S`] seconds with `<meta http-equiv="refresh">`, so it works
//! with JavaScript off.
//!
//! Sections: version, commit and configuration hash; upstreams and their endpoints (available,
//! health, ejection, draining, connections, recent latency, last error); routes; auth issuers
//! with their key ids and last key-set load; rate-limit policies with their recent rejection
//! rate and the most refused principals; recent errors by `error_code` with the last path
//! that met each; TLS certificate expiry (the listener's serving certificates, each SNI name
//! included, or "no TLS").
//!
//! Everything shown goes through [`escape`]: paths, principal names, tenants and globs come
//! from clients or configuration and must never become markup. The page is answered with a
//! `Content-Security-Policy` that forbids every script and external resource, as a second
//! line of defence.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::runtime::Runtime;
use crate::telemetry::metrics::{COMMIT, VERSION};
use crate::telemetry::status::{CertificateExpiry, StatusBoard, WINDOW};

/// Seconds between the page's own refreshes.
pub const REFRESH_S: u64 = 5;

/// The `Content-Security-Policy` of the page: its own inline style, nothing else.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// `text` with every character that means something in HTML (text or attribute) escaped.
pub fn escape(text: &str) -> String {
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

fn ago(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(d) => format!("{} ago", human(d)),
        Err(_) => "just now".to_owned(),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{}d {}h", s / 86400, s % 86400 / 3600)
    } else if s >= 3600 {
        format!("{}h {}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A table row of already-escaped cells.
fn row(out: &mut String, cells: &[String]) {
    out.push_str("<tr>");
    for cell in cells {
        let _ = write!(out, "<td>{cell}</td>");
    }
    out.push_str("</tr>\n");
}

fn head(out: &mut String, id: &str, title: &str, columns: &[&str]) {
    let _ = write!(
        out,
        "<section id=\"{id}\"><h2>{title}</h2><table><thead><tr>"
    );
    for column in columns {
        let _ = write!(out, "<th>{column}</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
}

fn empty(out: &mut String, columns: usize, text: &str) {
    let _ = writeln!(
        out,
        "<tr><td colspan=\"{columns}\" class=\"none\">{text}</td></tr>"
    );
}

fn end(out: &mut String) {
    out.push_str("</tbody></table></section>\n");
}

fn state(ok: bool, yes: &str, no: &str) -> String {
    if ok {
        format!("<span class=\"up\">{yes}</span>")
    } else {
        format!("<span class=\"down\">{no}</span>")
    }
}

/// The page for `runtime`, with what `board` remembers.
pub fn render(runtime: &Runtime, board: &StatusBoard) -> String {
    let now = SystemTime::now();
    let config = &runtime.config;
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>pipeline-gateway status</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(
        out,
        "<header><h1>pipeline-gateway</h1><p>version <b id=\"version\">{}</b> · commit \
         <code>{}</code> · configuration <code id=\"config-hash\">{}</code> loaded {} · \
         refreshes every {REFRESH_S} s</p></header>",
        escape(VERSION),
        escape(COMMIT),
        escape(&config.hash()),
        escape(&ago(runtime.loaded_at, now)),
    );

    head(
        &mut out,
        "upstreams",
        "Upstreams",
        &[
            "upstream",
            "endpoint",
            "state",
            "health",
            "ejected",
            "connections (open / idle / pending)",
            "recent latency",
            "last error",
        ],
    );
    for upstream in runtime.upstreams.iter() {
        let now_ms = upstream.now_ms();
        for (index, endpoint) in upstream.endpoints.iter().enumerate() {
            let available = endpoint.is_available(now_ms);
            let status = if endpoint.is_draining() {
                "<span class=\"down\">draining</span>".to_owned()
            } else {
                state(available, "up", "down")
            };
            let health = match upstream.health() {
                None => "not checked".to_owned(),
                Some(_) => state(endpoint.is_healthy(), "healthy", "unhealthy"),
            };
            let ejected = match endpoint.ejected_for_ms(now_ms) {
                0 => "no".to_owned(),
                ms => format!(
                    "<span class=\"down\">for {}</span>",
                    human(Duration::from_millis(ms))
                ),
            };
            let pool = &endpoint.pool;
            let recent = upstream
                .meters
                .endpoints
                .get(index)
                .and_then(|m| m.recent_latency())
                .map_or_else(|| "–".to_owned(), latency);
            let last_error = endpoint.last_error().map_or_else(
                || "–".to_owned(),
                |e| format!("{} ({})", escape(&e.reason), escape(&ago(e.at, now))),
            );
            row(
                &mut out,
                &[
                    escape(&upstream.name),
                    format!("<code>{}</code>", escape(&endpoint.url())),
                    status,
                    health,
                    ejected,
                    format!(
                        "{} / {} / {}",
                        pool.open(),
                        pool.idle_count(),
                        pool.pending()
                    ),
                    recent,
                    last_error,
                ],
            );
        }
    }
    end(&mut out);

    head(
        &mut out,
        "routes",
        "Routes (first match wins)",
        &[
            "#",
            "pipelines",
            "tenants",
            "paths",
            "issuers",
            "upstream",
            "default",
        ],
    );
    for (i, route) in config.routes.iter().enumerate() {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "any".to_owned()
            } else {
                escape(&items.join(", "))
            }
        };
        row(
            &mut out,
            &[
                i.to_string(),
                list(route.pipelines.iter().map(ToString::to_string).collect()),
                list(route.tenants.clone()),
                list(route.paths.iter().map(ToString::to_string).collect()),
                list(route.issuers.clone()),
                escape(&route.upstream),
                if route.default { "yes" } else { "" }.to_owned(),
            ],
        );
    }
    end(&mut out);

    head(
        &mut out,
        "auth",
        "Authentication",
        &["issuer", "keys", "key ids", "last key-set load"],
    );
    let _ = writeln!(
        out,
        "<tr><td colspan=\"4\">mode <b>{}</b> · {} API key(s)</td></tr>",
        escape(&format!("{:?}", config.auth.mode).to_lowercase()),
        runtime.authenticator.state().api_keys.len(),
    );
    let key_sets: Vec<_> = runtime.authenticator.state().key_sets().collect();
    for jwt in &config.auth.jwt {
        let set = key_sets.iter().find(|s| s.issuer() == jwt.issuer);
        let (count, kids, loaded) = match set {
            None => ("–".to_owned(), "shared secret".to_owned(), "–".to_owned()),
            Some(set) => {
                let keys = set.keys();
                let kids: Vec<String> = keys
                    .iter()
                    .flat_map(|k| k.kids())
                    .map(|kid| kid.unwrap_or("(no kid)").to_owned())
                    .collect();
                (
                    keys.as_ref().map_or(0, |k| k.len()).to_string(),
                    escape(&kids.join(", ")),
                    set.loaded_at().map_or_else(
                        || "<span class=\"down\">never</span>".to_owned(),
                        |at| escape(&ago(at, now)),
                    ),
                )
            }
        };
        row(&mut out, &[escape(&jwt.issuer), count, kids, loaded]);
    }
    end(&mut out);

    let window = human(WINDOW);
    head(
        &mut out,
        "rate-limits",
        "Rate-limit policies",
        &["policy", "allowed", "refused", "refused share", "over"],
    );
    match &runtime.rate_limits {
        None => empty(&mut out, 5, "no [rate_limit]"),
        Some(limits) => {
            for rate in board.policy_rates(limits.decision_totals()) {
                let total = rate.allowed + rate.denied;
                let share = if total == 0 {
                    "–".to_owned()
                } else {
                    format!("{:.1} %", 100.0 * rate.denied as f64 / total as f64)
                };
                let over = if rate.over_s == 0.0 {
                    "since start".to_owned()
                } else {
                    format!("last {}", human(Duration::from_secs_f64(rate.over_s)))
                };
                row(
                    &mut out,
                    &[
                        escape(&rate.policy),
                        rate.allowed.to_string(),
                        rate.denied.to_string(),
                        share,
                        over,
                    ],
                );
            }
        }
    }
    end(&mut out);

    let (top, overflow) = board.top_limited();
    head(
        &mut out,
        "limited",
        &format!(
            "Most refused principals (last {window} to {})",
            human(2 * WINDOW)
        ),
        &["principal (rate-limit key)", "policy", "refusals"],
    );
    if top.is_empty() {
        empty(&mut out, 3, "nobody was refused recently");
    }
    for limited in &top {
        row(
            &mut out,
            &[
                format!("<code>{}</code>", escape(&limited.key)),
                escape(&limited.policy),
                limited.count.to_string(),
            ],
        );
    }
    if overflow > 0 {
        empty(
            &mut out,
            3,
            &format!("and {overflow} refusals of keys not tracked"),
        );
    }
    end(&mut out);

    head(
        &mut out,
        "errors",
        &format!("Recent errors (last {window} to {})", human(2 * WINDOW)),
        &["error_code", "status", "count", "last path", "last seen"],
    );
    let errors = board.recent_errors();
    if errors.is_empty() {
        empty(&mut out, 5, "no errors recently");
    }
    for error in &errors {
        row(
            &mut out,
            &[
                format!("<code>{}</code>", escape(&error.code)),
                error.status.to_string(),
                error.count.to_string(),
                format!("<code>{}</code>", escape(&error.last_path)),
                escape(&ago(error.last_seen, now)),
            ],
        );
    }
    end(&mut out);

    head(
        &mut out,
        "tls",
        "TLS certificates",
        &["certificate", "expires", "in"],
    );
    // The listener's own certificates when it terminates TLS; else what was reported.
    let certificates = match &runtime.tls {
        Some(terminator) => Some(
            terminator
                .expiries()
                .into_iter()
                .map(|(name, not_after)| CertificateExpiry { name, not_after })
                .collect(),
        ),
        None => board.certificates(),
    };
    match certificates {
        None => empty(&mut out, 3, "no TLS"),
        Some(certificates) if certificates.is_empty() => empty(&mut out, 3, "no TLS"),
        Some(certificates) => {
            for certificate in certificates {
                let left = match certificate.not_after.duration_since(now) {
                    Ok(left) if left < Duration::from_secs(14 * 86400) => {
                        format!("<span class=\"down\">{}</span>", human(left))
                    }
                    Ok(left) => human(left),
                    Err(_) => "<span class=\"down\">expired</span>".to_owned(),
                };
                let unix = certificate
                    .not_after
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                row(
                    &mut out,
                    &[
                        escape(&certificate.name),
                        format!("{unix} (Unix time)"),
                        left,
                    ],
                );
            }
        }
    }
    end(&mut out);
    out.push_str(
        "<footer>Metrics: <a href=\"/metrics\">/metrics</a> · upstreams as JSON: \
         <a href=\"/upstreams\">/upstreams</a> · configuration: <a href=\"/config\">/config</a>\
         </footer></body></html>\n",
    );
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{margin:0}h2{margin-top:1.5em;font-size:1.1em}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3em .6em;\
text-align:left;vertical-align:top}th{background:#f4f4f4}\
.up{color:#0a7d20;font-weight:600}.down{color:#b00020;font-weight:600}.none{color:#777}\
code{font-size:.95em}footer{margin-top:2em;color:#777}";

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::config::Config;
    use crate::runtime::Process;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn client_text_on_the_page_is_escaped() {
        let config = Config::from_toml(
            "[server]\n[auth]\nmode = \"off\"\n\
             [[upstreams]]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\npipelines = [\"*\"]\nupstream = \"a\"\ndefault = true\n",
        )
        .expect("config");
        let process = Process::new();
        let runtime = Runtime::build(config, &process).expect("runtime");
        let board = StatusBoard::new();
        let policy: Arc<str> = Arc::from("principal");
        board.limited(&policy, &"key:<script>alert(1)</script>");
        board.error(
            "UnknownEndpoint".into(),
            404,
            "/v0/<img src=x onerror=alert(2)>",
        );
        let page = render(&runtime, &board);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("key:&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("/v0/&lt;img src=x onerror=alert(2)&gt;"));
        assert!(page.contains("no TLS"));
        board.set_certificates(vec![crate::telemetry::CertificateExpiry {
            name: "<b>client</b>".into(),
            not_after: SystemTime::now() + Duration::from_secs(3 * 86400),
        }]);
        let page = render(&runtime, &board);
        assert!(page.contains("&lt;b&gt;client&lt;/b&gt;"));
        assert!(!page.contains("no TLS"));
    }
}
