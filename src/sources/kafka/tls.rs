//! TLS to the brokers: the rustls client configuration of a source's `"tls"`
//! object. Built at load, so that an unreadable or malformed file fails the
//! load with its name, and again at every connection to the brokers, so that
//! certificates renewed on disk are used without restarting Redis.

use crate::model::kafka::KafkaTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// The client configuration for `tls`; `who` names the mapping in errors.
pub fn client_config(who: &str, tls: &KafkaTls) -> Result<Arc<ClientConfig>, String> {
    let roots = match &tls.ca_file {
        Some(file) => roots_from(file).map_err(|e| format!("{who}: kafka tls \"ca_file\" {file}: {e}"))?,
        None => system_roots().map_err(|e| format!("{who}: kafka tls: the system's certificates: {e}"))?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{who}: kafka tls: {e}"))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(|e| format!("{who}: kafka tls \"cert_file\" {cert}: {e}"))?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{who}: kafka tls \"key_file\" {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("{who}: kafka tls client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an empty file is an error.
fn certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

fn roots_from(file: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// The operating system's trusted certificates (`/etc/ssl/certs` on Debian),
/// for brokers with a public certificate.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(why);
    }
    Ok(roots)
}
