//! `sluice doctor`: tell a network problem from a key, quota, limit or model problem, in
//! order, each with what it means and what to do. The checks run outside the engine on
//! purpose: retries and admission would hide exactly what is being diagnosed.
//!
//! Order: DNS, TCP connect, TLS handshake (https), time to first byte and key validity
//! (`GET /models`), the chosen model (exists upstream; lifecycle in the registry), and, only
//! with `probe` (it costs a little), one smallest possible completion to read the key's
//! rate-limit headers and quota. A failure of the network steps skips what depends on them.

use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use tokio::time::Instant;

use crate::headers::RateLimits;
use crate::models::{Registry, Status};
use crate::secret::SecretString;

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Skipped,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub millis: Option<u64>,
    /// What was seen.
    pub detail: String,
    /// What it means and what to do (for warnings and failures).
    pub advice: Option<String>,
}

/// The overall verdict; the exit code of `sluice doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Degraded,
    Broken,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 1,
            Verdict::Broken => 2,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub base_url: String,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    /// How old sluice's own model lifecycle data is. Said beside the checks, not in the
    /// verdict: the verdict is about the endpoint and the key.
    pub registry: RegistryAge,
}

/// The registry's data date, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistryAge {
    pub as_of: Option<String>,
    pub age_days: Option<i64>,
    pub stale: bool,
    pub message: String,
}

/// What to check.
#[derive(Debug)]
pub struct Options {
    pub base_url: String,
    pub key: Option<SecretString>,
    /// Where the key came from, for messages (`env OPENAI_API_KEY`).
    pub key_source: String,
    pub model: Option<String>,
    pub probe: bool,
    /// Per network step.
    pub timeout: Duration,
    pub registry: Arc<Registry>,
    pub today: Date,
    /// Remaining fraction under which rate limits warn (default 0.2).
    pub low_fraction: f64,
}

struct Run {
    checks: Vec<Check>,
}

impl Run {
    fn push(
        &mut self,
        name: &'static str,
        outcome: Outcome,
        took: Option<Duration>,
        detail: impl Into<String>,
        advice: Option<&str>,
    ) {
        self.checks.push(Check {
            name,
            outcome,
            millis: took.map(|d| d.as_millis() as u64),
            detail: detail.into(),
            advice: advice.map(str::to_string),
        });
    }

    fn skip(&mut self, names: &[&'static str], why: &str) {
        for n in names {
            self.push(n, Outcome::Skipped, None, why, None);
        }
    }
}

const AFTER_NETWORK: &[&str] = &["first_byte", "key", "model", "limits"];

/// Run every check.
pub async fn run(o: &Options) -> Report {
    let mut r = Run { checks: Vec::new() };
    let url = match reqwest::Url::parse(&o.base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            r.push(
                "url",
                Outcome::Fail,
                None,
                format!("{:?} is not an http(s) URL", o.base_url),
                Some("Give the API's base URL, e.g. https://api.openai.com/v1 (OPENAI_BASE_URL or --base-url)."),
            );
            return finish(o, r);
        }
    };
    let host = url
        .host_str()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let tls = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    network(o, &mut r, &host, port, tls).await;
    if r.checks.iter().any(|c| c.outcome == Outcome::Fail) {
        r.skip(AFTER_NETWORK, "skipped: the network steps failed");
        return finish(o, r);
    }
    api(o, &mut r).await;
    finish(o, r)
}

async fn network(o: &Options, r: &mut Run, host: &str, port: u16, tls: bool) {
    let t = Instant::now();
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(
        o.timeout,
        tokio::net::lookup_host((host, port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            r.push("dns", Outcome::Fail, Some(t.elapsed()), format!("cannot resolve {host}: {e}"),
                    Some("The host name does not resolve: check the URL for typos, the machine's DNS settings, and whether a proxy is required."));
            return;
        }
        Err(_) => {
            r.push(
                "dns",
                Outcome::Fail,
                Some(t.elapsed()),
                format!("resolving {host} took longer than {:?}", o.timeout),
                Some(
                    "DNS is not answering: check the resolver in /etc/resolv.conf or the network.",
                ),
            );
            return;
        }
    };
    let Some(addr) = addrs.first().copied() else {
        r.push(
            "dns",
            Outcome::Fail,
            Some(t.elapsed()),
            format!("{host} resolved to no address"),
            Some("Check the host name."),
        );
        return;
    };
    r.push(
        "dns",
        Outcome::Ok,
        Some(t.elapsed()),
        format!("{host} → {addr}"),
        None,
    );
    let t = Instant::now();
    let tcp = match tokio::time::timeout(o.timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.push("tcp", Outcome::Fail, Some(t.elapsed()), format!("connect to {addr}: {e}"),
                Some("Nothing accepts connections there: the host is down, the port is wrong, or a firewall rejects it."));
            return;
        }
        Err(_) => {
            r.push("tcp", Outcome::Fail, Some(t.elapsed()), format!("connect to {addr} took longer than {:?}", o.timeout),
                Some("Packets are dropped on the way: a firewall, a missing route, or a proxy that must be used."));
            return;
        }
    };
    let took = t.elapsed();
    let slow = took > Duration::from_millis(500);
    r.push(
        "tcp",
        if slow { Outcome::Warn } else { Outcome::Ok },
        Some(took),
        format!("connected to {addr}"),
        slow.then_some("Connecting is slow: every new connection pays this; keep connections pooled (sluice does) and check the network path."),
    );
    if !tls {
        r.push("tls", Outcome::Skipped, None, "plain http", None);
        return;
    }
    let t = Instant::now();
    match tls_handshake(tcp, host, o.timeout).await {
        Ok(detail) => r.push("tls", Outcome::Ok, Some(t.elapsed()), detail, None),
        Err(e) => r.push("tls", Outcome::Fail, Some(t.elapsed()), e,
            Some("The TLS handshake failed: a proxy intercepting TLS (install its CA), a wrong host name, or a clock far off.")),
    }
}

async fn tls_handshake(
    tcp: tokio::net::TcpStream,
    host: &str,
    timeout: Duration,
) -> Result<String, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    match tokio::time::timeout(timeout, conn.connect(name, tcp)).await {
        Ok(Ok(s)) => {
            let (_, c) = s.get_ref();
            Ok(format!(
                "{:?}, {:?}",
                c.protocol_version()
                    .map_or("?".into(), |v| format!("{v:?}")),
                c.negotiated_cipher_suite()
                    .map_or("?".into(), |s| format!("{:?}", s.suite()))
            ))
        }
        Ok(Err(e)) => Err(format!("handshake with {host}: {e}")),
        Err(_) => Err(format!(
            "handshake with {host} took longer than {timeout:?}"
        )),
    }
}

fn http_client(o: &Options) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(o.timeout)
        .timeout(o.timeout * 4)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The error `code`/`type` of an OpenAI error body.
fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let e = &v["error"];
    e["code"]
        .as_str()
        .or_else(|| e["type"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn api(o: &Options, r: &mut Run) {
    let client = match http_client(o) {
        Ok(c) => c,
        Err(e) => {
            r.push("first_byte", Outcome::Fail, None, e, None);
            return;
        }
    };
    let base = o.base_url.trim_end_matches('/');
    let Some(key) = &o.key else {
        r.push("first_byte", Outcome::Skipped, None, "no API key", None);
        r.push(
            "key",
            Outcome::Fail,
            None,
            format!("no API key found ({})", o.key_source),
            Some("Set OPENAI_API_KEY (or the variable given with --api-key-env)."),
        );
        r.skip(&["model", "limits"], "skipped: no key");
        return;
    };
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(key.expose())
            .send()
    };
    let t = Instant::now();
    let resp = match get("/models".into()).await {
        Ok(resp) => resp,
        Err(e) => {
            r.push("first_byte", Outcome::Fail, Some(t.elapsed()), format!("GET /models: {e}"),
                Some("Connected, but no HTTP answer came: the server is overloaded or something in between holds the request."));
            r.skip(&["key", "model", "limits"], "skipped: no answer");
            return;
        }
    };
    let ttfb = t.elapsed();
    let slow = ttfb > Duration::from_secs(2);
    r.push("first_byte", if slow { Outcome::Warn } else { Outcome::Ok }, Some(ttfb),
        format!("GET /models answered {}", resp.status().as_u16()),
        slow.then_some("The API answers slowly even to a listing: expect slow requests; check the provider's status page."));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let code = error_code(&body);
    let (outcome, detail, advice): (Outcome, String, Option<&str>) = match status {
        200..=299 => {
            let n = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"].as_array().map(Vec::len))
                .unwrap_or(0);
            (Outcome::Ok, format!("key accepted ({}); {n} models listed", o.key_source), None)
        }
        401 => (Outcome::Fail, format!("401 {code}: the key ({}) is not accepted", o.key_source),
            Some("The key is wrong, revoked or for another organization: create or copy a valid key; with a key file, sluice picks up the new value without a restart.")),
        403 => (Outcome::Fail, format!("403 {code}: the key lacks permission"),
            Some("The key is valid but restricted (project, organization or IP allow-list): check its permissions.")),
        429 if code == "insufficient_quota" => (Outcome::Fail, "429 insufficient_quota: out of quota".into(),
            Some("Billing, not load: add credit or raise the spending limit; retrying will not help.")),
        429 => (Outcome::Warn, "429: rate limited right now".into(),
            Some("The key is at its limit at this moment: something else is using it heavily.")),
        404 => (Outcome::Fail, "404 on /models".into(),
            Some("The base URL's path is wrong: OpenAI-compatible APIs usually end in /v1.")),
        s => (Outcome::Fail, format!("{s} {code}"),
            Some("The API is failing: check the provider's status page and retry later.")),
    };
    let key_ok = outcome != Outcome::Fail;
    r.push("key", outcome, None, detail, advice);
    if !key_ok {
        r.skip(&["model", "limits"], "skipped: the key is not usable");
        return;
    }
    if let Some(m) = &o.model {
        model_check(
            o,
            r,
            m,
            get(format!("/models/{m}"))
                .await
                .map(|x| x.status().as_u16()),
        )
        .await;
    } else {
        r.push("model", Outcome::Skipped, None, "no --model given", None);
    }
    if !o.probe {
        r.push("limits", Outcome::Skipped, None,
            "not probed: run with --probe to send one smallest completion (costs a few tokens) and read the key's rate-limit headers and quota", None);
        return;
    }
    let model = o.model.clone().unwrap_or_else(|| "gpt-4o-mini".into());
    let t = Instant::now();
    let resp = client
        .post(format!("{base}/chat/completions"))
        .bearer_auth(key.expose())
        .json(&serde_json::json!({"model": model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    let resp = match resp {
        Ok(x) => x,
        Err(e) => {
            r.push(
                "limits",
                Outcome::Fail,
                Some(t.elapsed()),
                format!("probe: {e}"),
                None,
            );
            return;
        }
    };
    let took = t.elapsed();
    let status = resp.status().as_u16();
    let rl = RateLimits::from_headers(resp.headers());
    let body = resp.text().await.unwrap_or_default();
    let code = error_code(&body);
    if status == 429 && code == "insufficient_quota" {
        r.push(
            "limits",
            Outcome::Fail,
            Some(took),
            "probe: 429 insufficient_quota",
            Some("Out of quota: billing, not load. Add credit or raise the limit."),
        );
        return;
    }
    let frac = |rem: Option<u64>, lim: Option<u64>| match (rem, lim) {
        (Some(r), Some(l)) if l > 0 => Some(r as f64 / l as f64),
        _ => None,
    };
    let req = frac(rl.requests.remaining, rl.requests.limit);
    let tok = frac(rl.tokens.remaining, rl.tokens.limit);
    let detail = format!(
        "probe {status}; requests {}/{} remaining, tokens {}/{} remaining",
        rl.requests.remaining.map_or("?".into(), |v| v.to_string()),
        rl.requests.limit.map_or("?".into(), |v| v.to_string()),
        rl.tokens.remaining.map_or("?".into(), |v| v.to_string()),
        rl.tokens.limit.map_or("?".into(), |v| v.to_string()),
    );
    let low = [req, tok].iter().flatten().any(|f| *f < o.low_fraction);
    match (status, low) {
        (200..=299, false) if req.is_none() && tok.is_none() => r.push("limits", Outcome::Warn, Some(took), detail,
            Some("The API sent no x-ratelimit-* headers: sluice will pace by its own limits (set rpm/tpm) and 429s.")),
        (200..=299, false) => r.push("limits", Outcome::Ok, Some(took), detail, None),
        (200..=299, true) | (429, _) => r.push("limits", Outcome::Warn, Some(took), detail,
            Some("Less than the warning fraction of the key's limits is left: other traffic is close to the limit; expect 429s.")),
        (s, _) => r.push("limits", Outcome::Warn, Some(took), format!("probe answered {s} {code}"), None),
    }
}

async fn model_check(o: &Options, r: &mut Run, m: &str, status: Result<u16, reqwest::Error>) {
    let life = o.registry.lifecycle(m).map(|l| (l.status(o.today), l));
    let exists = match status {
        Ok(200..=299) => Some(true),
        Ok(404) => Some(false),
        _ => None,
    };
    match (exists, life) {
        (_, Some((Status::Retired { days_ago }, l))) => r.push("model", Outcome::Fail, None,
            format!("{m} was shut down on {} ({days_ago} days ago)", l.shutdown.map(|d| d.to_string()).unwrap_or_default()),
            Some(match l.replacement.as_deref() { Some(_) => "Move to the replacement named in `sluice models`; or set on_retired = \"substitute\".", None => "Pick another model." })),
        (Some(false), _) => r.push("model", Outcome::Fail, None, format!("{m}: the API answers 404 (model_not_found)"),
            Some("The model does not exist for this key: a typo, a model the project has no access to, or a retired one.")),
        (_, Some((Status::Deprecated { days_left }, l))) => r.push("model", Outcome::Warn, None,
            format!("{m} is deprecated{}; replacement: {}",
                days_left.map(|d| format!(", shutdown in {d} days ({})", l.shutdown.map(|d| d.to_string()).unwrap_or_default())).unwrap_or_default(),
                l.replacement.as_deref().unwrap_or("none named")),
            Some("Plan the move before the shutdown date (`sluice models check` can guard CI).")),
        (Some(true), _) => r.push("model", Outcome::Ok, None, format!("{m} is available"), None),
        (None, _) => r.push("model", Outcome::Warn, None, format!("{m}: could not confirm it exists"), None),
    }
}

fn finish(o: &Options, r: Run) -> Report {
    let worst = r
        .checks
        .iter()
        .map(|c| c.outcome)
        .max()
        .unwrap_or(Outcome::Ok);
    let verdict = match worst {
        Outcome::Fail => Verdict::Broken,
        Outcome::Warn => Verdict::Degraded,
        _ => Verdict::Healthy,
    };
    let st = o.registry.staleness(o.today);
    Report {
        base_url: o.base_url.clone(),
        verdict,
        checks: r.checks,
        registry: RegistryAge {
            as_of: st.as_of.map(|d| d.to_string()),
            age_days: st.age_days,
            stale: st.stale,
            message: st.line(),
        },
    }
}
