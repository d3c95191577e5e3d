//! HTTPS: the server certificate and key from PEM files, reloaded when the files change (a
//! certificate renewed by certbot, cert-manager or a cron job), without a restart and without
//! dropping a connection: each TLS handshake takes the pair loaded last, and connections made
//! before a reload keep the certificate they were made with.

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The files are looked at again at most this often (a handshake's cost otherwise).
const RECHECK: Duration = Duration::from_secs(1);

pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(cert, key, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate chain and key of `cert` and `key`, as last loaded.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    pair: Arc<CertifiedKey>,
    /// The files' modification times the pair was loaded at (or last failed to load at).
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<ReloadingCert> {
        let stamps = stamps(cert, key);
        let pair = read_pair(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            state: Mutex::new(Loaded { pair: Arc::new(pair), stamps, checked: Instant::now() }),
        })
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    CertifiedKey::from_der(certs, key, provider).context("certificate and key do not fit together")
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let now = stamps(&self.cert, &self.key);
            if now != state.stamps {
                // Marked seen either way: a pair caught half written (the certificate renewed,
                // the key not yet) is tried again when a file changes next.
                state.stamps = now;
                match read_pair(&self.cert, &self.key, &self.provider) {
                    Ok(pair) => {
                        state.pair = Arc::new(pair);
                        println!("berth-runner: TLS certificate reloaded from {}", self.cert.display());
                    }
                    Err(e) => println!("berth-runner: TLS certificate not reloaded (the last one serves on): {e:#}"),
                }
            }
        }
        Some(state.pair.clone())
    }
}
