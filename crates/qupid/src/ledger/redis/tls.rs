//! TLS for the Redis ledger: `rediss://` URLs, a CA file, and the crypto provider rustls
//! needs.

use std::path::PathBuf;

use ::redis::{RedisError, TlsCertificates};

use crate::error::{Error, Result};

/// The URL parameter naming a PEM file of CA certificates.
const CA_FILE: &str = "tls_ca_file";

/// The TLS settings qupid reads from a Redis URL (the rest is the `redis` crate's).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Tls {
    ca_file: Option<PathBuf>,
}

/// Takes `tls_ca_file` out of `url`, answering the rest of it and the settings. Makes sure
/// rustls has a crypto provider when the URL asks for TLS.
pub(super) fn split(url: &str) -> Result<(String, Tls)> {
    if url.starts_with("rediss://") {
        install_provider();
    }
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut tls = Tls::default();
    let rest = match base.split_once('?') {
        None => base.to_owned(),
        Some((path, query)) => {
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some((CA_FILE, v)) if !v.is_empty() => {
                        if !url.starts_with("rediss://") {
                            return Err(Error::config(format!(
                                "{CA_FILE} is for TLS: expected a rediss:// url, found {}",
                                crate::redact_url(url)
                            )));
                        }
                        tls.ca_file = Some(PathBuf::from(v));
                    }
                    _ => kept.push(pair),
                }
            }
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    };
    let rest = match fragment {
        Some(f) => format!("{rest}#{f}"),
        None => rest,
    };
    Ok((rest, tls))
}

impl Tls {
    /// The root certificates to give the `redis` crate, if the URL named a CA file.
    pub(super) fn certificates(&self) -> Result<Option<TlsCertificates>> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            Error::config(format!(
                "{CA_FILE} {}: expected a readable PEM file of CA certificates: {e}",
                path.display()
            ))
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(Error::config(format!(
                "{CA_FILE} {}: expected PEM certificates, found none",
                path.display()
            )));
        }
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }
}

/// rustls needs a crypto provider; the `redis` crate takes the process's default. Unless
/// the application installed one, qupid installs ring's (the one it is built with).
fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have installed one meanwhile: then that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// What went wrong with TLS, if that is why connecting failed.
pub(super) fn failure(e: &RedisError) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    "; the server's certificate must chain to the system's roots or to the \
                     CA of ?tls_ca_file=PATH, and name the host (#insecure skips the checks, \
                     for test servers only)"
                }
                _ => "",
            };
            return Some(format!("the TLS handshake failed: {tls}{hint}"));
        }
        source = s.source();
    }
    // The `redis` crate may keep only the text of the rustls error.
    let text = e.to_string();
    (text.contains("invalid peer certificate") || text.contains("InvalidCertificate"))
        .then(|| format!("the TLS handshake failed: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_is_taken_out_of_the_url() {
        let (rest, tls) = split("rediss://:pw@h:6380/2?tls_ca_file=/etc/ca.pem#insecure").unwrap();
        assert_eq!(rest, "rediss://:pw@h:6380/2#insecure");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, tls) = split("redis://h:6379/0").unwrap();
        assert_eq!((rest.as_str(), tls), ("redis://h:6379/0", Tls::default()));
        let e = split("redis://h/?tls_ca_file=/ca.pem").unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let (_, tls) = split("rediss://h/?tls_ca_file=/no/such/ca.pem").unwrap();
        let Err(e) = tls.certificates() else {
            panic!("a missing file is an error");
        };
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
    }
}
