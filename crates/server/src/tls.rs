//! TLS for both listeners (rustls with the ring provider, through tokio-rustls).
//!
//! One [`Tls`] per server: a rustls `ServerConfig` per listener (they differ only in
//! ALPN) that both take their certificate from one [`Reloadable`] resolver. Reloading
//! swaps the certificate in the resolver: handshakes from then on see the new one,
//! established connections keep theirs. A new chain or key that does not load (bad PEM,
//! key not matching the certificate) is refused with a logged error and the old one
//! stays. [`watch`] reloads when the files' contents change (checked every
//! `tls.reload_check_ms`) and on SIGHUP.
//!
//! TLS 1.2 and 1.3 only, with rustls' default cipher suites: ECDHE key exchange and AEAD
//! ciphers (AES-GCM, ChaCha20-Poly1305), nothing older.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The certificate in use; swapped on reload.
pub struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reloadable")
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::read(&self.current).clone())
    }
}

/// The server's TLS state: acceptors for the native and the HTTP listener, and where the
/// certificate comes from.
#[derive(Clone)]
pub struct Tls {
    pub line: TlsAcceptor,
    pub http: TlsAcceptor,
    cert: Arc<Reloadable>,
    pub chain_path: PathBuf,
    pub key_path: PathBuf,
}

/// Reads and checks a PEM chain and key: at least one certificate, a key rustls can use,
/// and the key matching the first certificate.
pub fn load(chain_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain_pem = read(chain_path)?;
    let key_pem = read(key_path)?;
    certified_key(&chain_pem, &key_pem, chain_path, key_path)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    chain_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{}: not a PEM certificate chain ({e})",
                chain_path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            chain_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: no usable PEM private key ({e})",
            key_path.display()
        ))
    })?;
    let key = provider::sign::any_supported_type(&key).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: unsupported private key ({e})",
            key_path.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| {
        TlsError::Invalid(format!(
            "{} does not match the certificate in {} ({e})",
            key_path.display(),
            chain_path.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Tls {
    /// Loads the configured certificate (generating the self-signed one first if asked)
    /// and builds the acceptors. `None` when TLS is off.
    pub fn from_config(config: &TlsConfig, data_dir: &Path) -> Result<Option<Tls>, TlsError> {
        let (chain_path, key_path) = match (&config.cert, &config.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (None, None) if config.self_signed => self_signed(&config.hosts, data_dir)?,
            (None, None) => return Ok(None),
            _ => {
                return Err(TlsError::Invalid(
                    "tls.cert and tls.key go together: set both or neither".into(),
                ))
            }
        };
        let initial = load(&chain_path, &key_path)?;
        let cert = Arc::new(Reloadable {
            current: RwLock::new(initial),
        });
        let build = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut server =
                ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .map_err(|e| TlsError::Invalid(e.to_string()))?
                    .with_no_client_auth()
                    .with_cert_resolver(cert.clone());
            server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(server)))
        };
        Ok(Some(Tls {
            line: build(&[])?,
            http: build(&[b"http/1.1"])?,
            cert,
            chain_path,
            key_path,
        }))
    }

    /// Loads the files again; on success the new certificate serves every handshake from
    /// now on, on failure the old one stays (and the error is returned).
    pub fn reload(&self) -> Result<(), TlsError> {
        let new = load(&self.chain_path, &self.key_path)?;
        *crate::write(&self.cert.current) = new;
        Ok(())
    }

    /// The SHA-256 fingerprint of the certificate in use.
    pub fn current_fingerprint(&self) -> String {
        let current = crate::read(&self.cert.current).clone();
        current
            .cert
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }
}

/// Reloads the certificate when its files change (their contents, checked every
/// `every`) and on SIGHUP, until `stop`.
pub async fn watch(tls: Tls, every: Duration, stop: CancellationToken) {
    let contents = |tls: &Tls| {
        (
            std::fs::read(&tls.chain_path).ok(),
            std::fs::read(&tls.key_path).ok(),
        )
    };
    // What was last tried: a file that failed is not tried again until it changes.
    let mut seen = contents(&tls);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = sighup => true,
        };
        let now = contents(&tls);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match tls.reload() {
            Ok(()) => tracing::info!(
                cert = %tls.chain_path.display(),
                fingerprint = %tls.current_fingerprint(),
                "TLS certificate reloaded"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "TLS certificate not reloaded; the previous one stays in use"
            ),
        }
    }
}

/// The self-signed certificate in `data_dir/tls/`: made once for `hosts` (with rcgen),
/// then reused, so its fingerprint stays the same across restarts. Delete the files to
/// make a new one (e.g. after changing `tls.hosts`).
pub fn self_signed(hosts: &[String], data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let chain_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Read { path, source }
    };
    if !(chain_path.exists() && key_path.exists()) {
        crate::files::create_private_dir(data_dir).map_err(io(data_dir))?;
        crate::files::create_private_dir(&dir).map_err(io(&dir))?;
        let generated = rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| {
            TlsError::Invalid(format!("cannot make a self-signed certificate: {e}"))
        })?;
        crate::files::write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        crate::files::write_private(&chain_path, generated.cert.pem().as_bytes())
            .map_err(io(&chain_path))?;
        tracing::warn!(path = %chain_path.display(), hosts = ?hosts, "made a self-signed TLS certificate");
    }
    let certified = load(&chain_path, &key_path)?;
    let fingerprint = certified
        .cert
        .first()
        .map(|c| fingerprint(c))
        .unwrap_or_default();
    // On the terminal, like the first administrator's password: the operator needs it to
    // check what clients are shown.
    eprintln!(
        "\n  Self-signed TLS certificate for {}: {}\n  SHA-256 fingerprint {fingerprint}\n  \
         For a first trial only: clients must be told to trust it (--ca-file) or to skip \
         verification.\n",
        hosts.join(", "),
        chain_path.display()
    );
    tracing::info!(%fingerprint, "self-signed TLS certificate in use");
    Ok((chain_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        let p = Path::new("x");
        assert!(certified_key(
            a.cert.pem().as_bytes(),
            a.key_pair.serialize_pem().as_bytes(),
            p,
            p
        )
        .is_ok());
        let err = certified_key(
            a.cert.pem().as_bytes(),
            b.key_pair.serialize_pem().as_bytes(),
            p,
            p,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("does not match"), "{err}");
        let err = certified_key(b"garbage", b"garbage", p, p).err().unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
