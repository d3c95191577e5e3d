//! `berth-runner gc` and `berth-runner quota`: drive the registry's admin API on a running
//! registry. `gc` runs garbage collection (`POST /v2/_berth/gc`, one bounded step per request),
//! with progress on stderr and what was (or, with --dry-run, would be) removed on stdout;
//! `quota` shows each rule's usage (`GET /v2/_berth/quotas`) and, with --recount, first
//! recounts it from the links (`POST /v2/_berth/quotas/recount`, step by step). The steps run
//! inside the registry, so this works the same against a runner, `spin up` or an edge host.

use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Where the registry is and who asks.
#[derive(clap::Args)]
pub struct Target {
    /// The registry's address (plain HTTP; for a registry served over HTTPS, run this where it
    /// listens on loopback, or call the admin API with curl).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    registry: String,
    /// A user whose policy grants `admin` (basic or token auth); the password comes from the
    /// BERTH_ADMIN_PASSWORD environment variable.
    #[arg(long)]
    user: Option<String>,
}

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    target: Target,
    /// Report what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Blobs the registry examines at once (1 to 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=8))]
    concurrency: u8,
    /// The share of the pass's time spent in steps: after a step that took t, rest
    /// t * (1 - PACE) / PACE before the next, so the pass leaves the registry to the pushes and
    /// pulls beside it that much of the time. 1: no rest (an idle registry).
    #[arg(long, default_value_t = 0.5, value_parser = pace)]
    pace: f64,
    /// Run a pass every this many seconds, forever (a registry's periodic collection).
    #[arg(long, value_name = "SECONDS")]
    every: Option<u64>,
}

#[derive(clap::Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    target: Target,
    /// Recount every rule's usage from the links first (after adding a rule to a registry that
    /// already holds images, or to check the counts): one pass over the blobs, safe beside
    /// pushes.
    #[arg(long)]
    recount: bool,
}

impl Target {
    fn client(&self) -> Result<Client> {
        let url: http::Uri = self.registry.parse().context("--registry")?;
        if url.scheme_str() != Some("http") {
            bail!("--registry must be an http:// address");
        }
        let authority = url.authority().context("--registry needs a host and port")?.to_string();
        let password = std::env::var("BERTH_ADMIN_PASSWORD").ok();
        let credentials = match (&self.user, password) {
            (Some(user), Some(password)) => {
                Some(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
            }
            (Some(_), None) => bail!("--user needs the password in BERTH_ADMIN_PASSWORD"),
            (None, _) => None,
        };
        Ok(Client { authority, credentials, bearer: None })
    }
}

pub async fn quota(args: QuotaArgs) -> Result<()> {
    let mut client = args.target.client()?;
    if args.recount {
        let (mut examined, mut released, mut restored) = (0u64, 0u64, 0u64);
        let mut cursor = String::new();
        loop {
            let step =
                client.send_json("POST", &format!("/v2/_berth/quotas/recount?cursor={}", url_escape(&cursor))).await?;
            examined += step["examined"].as_u64().unwrap_or(0);
            released += step["released"].as_u64().unwrap_or(0);
            restored += step["restored"].as_u64().unwrap_or(0);
            match step["next"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        println!(
            "recount: examined {examined} blobs; released {} ({released} bytes) no repository links any more; \
             restored {} ({restored} bytes) not counted before",
            human(released),
            human(restored)
        );
    }
    let usage = client.send_json("GET", "/v2/_berth/quotas").await?;
    for rule in usage["quotas"].as_array().into_iter().flatten() {
        let figure = |field: &str| rule[field].as_u64().unwrap_or(0);
        println!(
            "{}: {} of {} used ({} bytes), {} uploading",
            rule["repositories"].as_str().unwrap_or("?"),
            human(figure("used")),
            human(figure("limit")),
            figure("used"),
            human(figure("uploading"))
        );
    }
    Ok(())
}

pub async fn gc(args: GcArgs) -> Result<()> {
    let mut client = args.target.client()?;
    loop {
        pass(&mut client, &args).await?;
        let Some(every) = args.every else { return Ok(()) };
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

fn pace(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(pace) if pace > 0.0 && pace <= 1.0 => Ok(pace),
        _ => Err(format!("{text:?} is not a share above 0 and at most 1 (0.5: half the time)")),
    }
}

/// One whole pass over the registry's blobs.
async fn pass(client: &mut Client, args: &GcArgs) -> Result<()> {
    let (dry_run, concurrency) = (args.dry_run, args.concurrency);
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(indicatif::ProgressStyle::with_template("{spinner} gc {msg} [{elapsed}]").expect("template"));
    let (mut examined, mut removed, mut bytes) = (0u64, 0u64, 0u64);
    let (mut steps, mut retention_examined) = (0u64, 0u64);
    // An empty cursor starts the pass from the first blob (not where an earlier pass stopped).
    let mut cursor = String::new();
    loop {
        let query = format!("dry_run={dry_run}&concurrency={concurrency}&cursor={}", url_escape(&cursor));
        let started = std::time::Instant::now();
        let step = client.send_json("POST", &format!("/v2/_berth/gc?{query}")).await?;
        let worked = started.elapsed();
        examined += step["examined"].as_u64().unwrap_or(0);
        retention_examined += step["retentionExamined"].as_u64().unwrap_or(0);
        steps += 1;
        for blob in step["collected"].as_array().into_iter().flatten() {
            let size = blob["size"].as_u64().unwrap_or(0);
            let verb = if dry_run { "would remove" } else { "removed" };
            progress.suspend(|| println!("{verb} {} ({size} bytes)", blob["digest"].as_str().unwrap_or("?")));
            removed += 1;
            bytes += size;
        }
        for (field, done, planned) in
            [("untagged", "untagged", "would untag"), ("deletedManifests", "deleted manifest", "would delete manifest")]
        {
            for item in step[field].as_array().into_iter().flatten() {
                let verb = if dry_run { planned } else { done };
                progress.suspend(|| println!("{verb} {}", item.as_str().unwrap_or("?")));
            }
        }
        progress.set_message(format!("examined {examined} blobs, {removed} unreferenced, {}", human(bytes)));
        progress.tick();
        match step["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        if args.pace < 1.0 {
            tokio::time::sleep(worked.mul_f64((1.0 - args.pace) / args.pace)).await;
        }
    }
    progress.finish_and_clear();
    let verb = if dry_run { "would free" } else { "freed" };
    println!(
        "gc: examined {examined} blobs; {removed} unreferenced; {verb} {bytes} bytes ({}); retention examined \
         {retention_examined} tags and manifests; {steps} steps",
        human(bytes)
    );
    Ok(())
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

struct Client {
    authority: String,
    credentials: Option<String>,
    bearer: Option<String>,
}

impl Client {
    /// Send (no body) and decode the JSON answer; with token auth, a 401's Bearer challenge is
    /// answered by fetching a token from its realm with the basic credentials, once.
    async fn send_json(&mut self, method: &str, path: &str) -> Result<serde_json::Value> {
        for _ in 0..2 {
            let authorization = match (&self.bearer, &self.credentials) {
                (Some(token), _) => Some(format!("Bearer {token}")),
                (None, Some(basic)) => Some(format!("Basic {basic}")),
                (None, None) => None,
            };
            let (status, headers, body) = self.send(method, path, authorization).await?;
            if status == StatusCode::UNAUTHORIZED
                && self.bearer.is_none()
                && let Some(challenge) = headers.get(http::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok())
                && challenge.starts_with("Bearer ")
            {
                self.bearer = Some(self.token(challenge).await?);
                continue;
            }
            if !status.is_success() {
                bail!("the registry answered {status}: {}", String::from_utf8_lossy(&body));
            }
            return serde_json::from_slice(&body).context("the registry's answer is not JSON");
        }
        bail!("the registry refused the token it issued")
    }

    /// A token for the challenge's scope, from its realm (on this registry).
    async fn token(&mut self, challenge: &str) -> Result<String> {
        let param = |key: &str| {
            challenge.split(',').find_map(|part| {
                let (k, v) = part.trim().trim_start_matches("Bearer ").split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        let realm: http::Uri = param("realm").context("challenge without a realm")?.parse()?;
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(value) = param(key) {
                query.push(format!("{key}={}", url_escape(&value)));
            }
        }
        let path = format!("{}?{}", realm.path(), query.join("&"));
        let basic = self.credentials.clone().context("the registry wants a token: pass --user")?;
        let (status, _, body) = self.send("GET", &path, Some(format!("Basic {basic}"))).await?;
        if !status.is_success() {
            bail!("the token endpoint answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        answer["token"]
            .as_str()
            .or(answer["access_token"].as_str())
            .map(str::to_owned)
            .context("no token in the answer")
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes)> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header(http::header::HOST, &self.authority);
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let response = sender.send_request(request.body(Empty::<Bytes>::new())?).await?;
        let (parts, body) = response.into_parts();
        Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_escaped_for_the_query() {
        assert_eq!(url_escape("index/blobs/sha256/ab"), "index%2Fblobs%2Fsha256%2Fab");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
