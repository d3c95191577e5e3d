//! `up --tls auto`: HTTPS without a certificate of your own. A local CA (made once, kept in
//! `<data>/tls/ca.crt` and `ca.key`) signs a server certificate for the `--tls-name`s (kept in
//! `server.crt`, `server.key`), valid [`SERVER_DAYS`] days and made again [`RENEW_AFTER_DAYS`]
//! days after it was issued, or when the names change: at start, and while serving (the running
//! listener picks the new files up, `tls.rs`). Clients trust the CA once, by the commands `up`
//! prints ([`trust_commands`]).

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SERVER_DAYS: i64 = 90;
pub const RENEW_AFTER_DAYS: u64 = 60;
const CA_DAYS: i64 = 3650;
const CA_NAME: &str = "Berth local CA";

/// The files of a local CA and the server certificate it signed.
#[derive(Debug, Clone)]
pub struct AutoTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AutoTls {
    pub fn at(data: &Path) -> AutoTls {
        let dir = data.join("tls");
        AutoTls { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") }
    }

    fn dir(&self) -> &Path {
        self.ca.parent().expect("in a dir")
    }

    /// Make what is missing, and the server certificate again when it is due or its names
    /// changed. `now`: seconds since the epoch. Whether a new server certificate was made.
    pub fn ensure(&self, names: &[String], now: u64) -> Result<bool> {
        let dir = self.dir().to_owned();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key_path = dir.join("ca.key");
        let ca_key = match std::fs::read_to_string(&ca_key_path) {
            Ok(pem) if self.ca.is_file() => KeyPair::from_pem(&pem).context("reading the local CA's key")?,
            _ => {
                let key = KeyPair::generate()?;
                let ca = ca_params(now)?.self_signed(&key)?;
                write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
                replace(&self.ca, ca.pem().as_bytes())?;
                key
            }
        };
        let stamp = dir.join("server.issued");
        let issued: Option<(u64, String)> = std::fs::read_to_string(&stamp).ok().and_then(|text| {
            let (at, listed) = text.split_once('\n')?;
            Some((at.trim().parse().ok()?, listed.trim().to_owned()))
        });
        let wanted = names.join(",");
        let due = match issued {
            Some((at, listed)) => {
                listed != wanted || now.saturating_sub(at) >= RENEW_AFTER_DAYS * 86_400 || !self.cert.is_file()
            }
            None => true,
        };
        if !due {
            return Ok(false);
        }
        // The issuer as rcgen needs it: the CA's name and key (the stored certificate has the
        // same, so the chain verifies against it).
        let issuer = ca_params(now)?.self_signed(&ca_key)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or("localhost", String::as_str));
        params.not_before = at(now).saturating_sub(time::Duration::hours(1));
        params.not_after = at(now).saturating_add(time::Duration::days(SERVER_DAYS));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer, &ca_key)?;
        // The key first: the listener reloads a pair only once both fit together.
        write_private(&self.key, key.serialize_pem().as_bytes())?;
        replace(&self.cert, cert.pem().as_bytes())?;
        replace(&stamp, format!("{now}\n{wanted}\n").as_bytes())?;
        Ok(true)
    }
}

fn at(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn ca_params(now: u64) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.not_before = at(now).saturating_sub(time::Duration::hours(1));
    params.not_after = at(now).saturating_add(time::Duration::days(CA_DAYS));
    Ok(params)
}

/// Write `path` whole: a new file renamed over the old one, so a reader sees the old or the new.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let staged = path.with_extension("new");
    std::fs::write(&staged, bytes).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("writing {}", path.display()))
}

/// The same for a private key, readable by this user only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let staged = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("writing {}", staged.display()))?;
    file.write_all(bytes)?;
    std::fs::rename(&staged, path).with_context(|| format!("writing {}", path.display()))
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// The commands that make docker, podman (and skopeo, buildah) and containerd trust the local
/// CA for `name:port`, one line each (run as root).
pub fn trust_commands(ca: &Path, name: &str, port: u16) -> Vec<String> {
    let ca = ca.display();
    let host = format!("{name}:{port}");
    vec![
        format!("docker:     mkdir -p /etc/docker/certs.d/{host} && cp {ca} /etc/docker/certs.d/{host}/ca.crt"),
        format!(
            "podman, skopeo, buildah: mkdir -p /etc/containers/certs.d/{host} && cp {ca} /etc/containers/certs.d/{host}/ca.crt"
        ),
        format!(
            "containerd: mkdir -p /etc/containerd/certs.d/{host} && cp {ca} /etc/containerd/certs.d/{host}/ca.crt && \
             printf 'server = \"https://{host}\"\\n[host.\"https://{host}\"]\\n  ca = \"/etc/containerd/certs.d/{host}/ca.crt\"\\n' \
             > /etc/containerd/certs.d/{host}/hosts.toml   (with config_path = \"/etc/containerd/certs.d\" in containerd's registry config)"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_the_server_certificate_again_when_due_or_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let auto = AutoTls::at(dir.path());
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let start = now();
        assert!(auto.ensure(&names, start).unwrap(), "made at first");
        let (ca, cert) = (std::fs::read(&auto.ca).unwrap(), std::fs::read(&auto.cert).unwrap());
        assert!(!auto.ensure(&names, start + 86_400).unwrap(), "kept the next day");
        assert!(auto.ensure(&names, start + RENEW_AFTER_DAYS * 86_400).unwrap(), "renewed when due");
        assert_ne!(std::fs::read(&auto.cert).unwrap(), cert);
        assert_eq!(std::fs::read(&auto.ca).unwrap(), ca, "the CA stays: clients trust it once");
        let other = vec!["registry.lan".to_owned()];
        assert!(auto.ensure(&other, start + RENEW_AFTER_DAYS * 86_400 + 1).unwrap(), "made again for new names");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&auto.key).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
}
