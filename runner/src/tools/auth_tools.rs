//! Berth's authentication from the runner's side: `berth-runner hash-password`, and a probe of
//! the component at start (so a misconfiguration is reported with the variable's name when `up`
//! starts, not only in the 500 that every request then gets).

use crate::app::manifest::App;
use crate::host::Handler;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::io::Read;
use wasmtime_wasi_http::handler::ProxyHandler;

#[derive(clap::Args)]
pub struct HashPasswordArgs {
    /// bcrypt cost (work factor, 4..=31): each step doubles the time of every check.
    #[arg(long, default_value_t = 10)]
    cost: u32,
    /// Print `USER:HASH`, an `auth_users` line, instead of the hash alone.
    #[arg(long)]
    user: Option<String>,
}

/// Read a password from stdin (one trailing newline is not part of it) and print its bcrypt hash.
pub fn hash_password(args: HashPasswordArgs) -> Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the password from stdin")?;
    println!("{}", hash_line(&input, args.cost, args.user.as_deref())?);
    Ok(())
}

fn hash_line(input: &str, cost: u32, user: Option<&str>) -> Result<String> {
    let password = input.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(input);
    if password.is_empty() {
        bail!("no password on stdin");
    }
    if password.len() > 72 {
        bail!("bcrypt uses only the first 72 bytes of a password; this one has {}", password.len());
    }
    if !(4..=31).contains(&cost) {
        bail!("--cost {cost}: bcrypt costs go from 4 to 31");
    }
    let hash = bcrypt::hash(password, cost)?;
    Ok(match user {
        Some(user) => format!("{user}:{hash}"),
        None => hash,
    })
}

/// What the start-up probe learnt of a registry ready to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// `GET /v2/` answered without credentials: authentication is off.
    OpenToEveryone,
    /// It asked for credentials (or the app serves no `/v2/`).
    Guarded,
}

/// Ask the component `GET /v2/` before serving. A registry that cannot answer it (a 500: its
/// settings do not parse, or its stores cannot open) is an error; the component has logged why
/// (its stderr, just above: clients only ever get a generic message). Any other answer is a
/// registry ready to serve: 200 one open to everyone, 401 one with authentication on.
pub async fn probe(handler: &ProxyHandler<Handler>, app: &App, scheme: &str) -> Result<Probed> {
    if !app.serves("/v2/") {
        return Ok(Probed::Guarded);
    }
    let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
    let request = http::Request::get(format!("{scheme}://localhost/v2/")).body(body)?;
    let response = handler
        .handle(crate::host::Admission::uncounted(), request)
        .await
        .map_err(|e| anyhow::anyhow!("start-up probe failed: {e:?}"))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| anyhow::anyhow!("{e:?}"))?.to_bytes();
    if status.is_server_error() {
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["errors"][0]["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("the component cannot serve (GET /v2/ answered {status}: {detail}); its log line above says why");
    }
    Ok(if status.is_success() { Probed::OpenToEveryone } else { Probed::Guarded })
}

/// The warning for a registry without authentication that listens beyond this machine: anybody
/// who reaches the address may push and delete.
pub fn open_registry_warning(listen: std::net::SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "berth-runner: WARNING: authentication is off (auth_mode none) and the registry listens on {listen}, \
             beyond this machine: ANYBODY who reaches it may push, overwrite and delete images. Set auth_mode to \
             token or basic (README, Authentication), or listen on 127.0.0.1."
        )
    })
}

/// Why `up` refuses to start: plain HTTP on an address beyond this machine, unless asked for.
pub fn plain_http_refusal(listen: std::net::SocketAddr, tls: bool, insecure_http: bool) -> Option<String> {
    (!tls && !insecure_http && !listen.ip().is_loopback()).then(|| {
        format!(
            "refusing to serve plain HTTP on {listen}, beyond this machine: passwords, tokens and images would \
             cross the network in the clear. Give --tls-cert and --tls-key (README, HTTPS), or --insecure-http \
             to serve plain HTTP on purpose (behind a proxy that terminates TLS)."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_this_machine_is_refused_unless_asked_for() {
        let beyond: std::net::SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let lan: std::net::SocketAddr = "192.168.1.10:5000".parse().unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let v6_loopback: std::net::SocketAddr = "[::1]:5000".parse().unwrap();
        assert!(plain_http_refusal(beyond, false, false).unwrap().contains("--insecure-http"));
        assert!(plain_http_refusal(lan, false, false).is_some());
        assert_eq!(plain_http_refusal(beyond, true, false), None, "HTTPS");
        assert_eq!(plain_http_refusal(beyond, false, true), None, "asked for");
        assert_eq!(plain_http_refusal(loopback, false, false), None);
        assert_eq!(plain_http_refusal(v6_loopback, false, false), None);
    }

    #[test]
    fn hashes_verify_and_lines_carry_the_user() {
        let line = hash_line("s3cret\n", 4, Some("alice")).unwrap();
        let (user, hash) = line.split_once(':').unwrap();
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2b$04$"));
        assert!(bcrypt::verify("s3cret", hash).unwrap());
        assert!(bcrypt::verify("s3cret", &hash_line("s3cret\r\n", 4, None).unwrap()).unwrap());
    }

    #[test]
    fn only_an_open_registry_beyond_loopback_is_warned_about() {
        assert_eq!(open_registry_warning("127.0.0.1:5000".parse().unwrap()), None);
        assert_eq!(open_registry_warning("[::1]:5000".parse().unwrap()), None);
        for address in ["0.0.0.0:5000", "10.1.2.3:80", "[::]:5000"] {
            let warning = open_registry_warning(address.parse().unwrap()).unwrap();
            assert!(warning.contains("WARNING") && warning.contains(address), "{warning}");
        }
    }

    #[test]
    fn bad_inputs() {
        assert!(hash_line("\n", 4, None).is_err());
        assert!(hash_line(&"x".repeat(73), 4, None).is_err());
        assert!(hash_line("pw", 3, None).is_err());
    }
}
