//! TLS to the brokers: the rustls client configuration of a source's `"tls"`
//! object. Built at load, so that an unreadable or malformed file fails the
//! load with its name, and again at every connection to the brokers, so that
//! certificates renewed on disk are used without restarting Redis.

use super::error::{TlsCause, TlsError, TlsPart};
use crate::model::kafka::KafkaTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// The client configuration for `tls`; `who` names the mapping in errors.
pub fn client_config(who: &str, tls: &KafkaTls) -> Result<Arc<ClientConfig>, TlsError> {
    let failed = |part: TlsPart| move |cause: TlsCause| TlsError { who: who.to_string(), part, cause };
    let roots = match &tls.ca_file {
        Some(file) => roots_from(file).map_err(failed(TlsPart::CaFile(file.clone())))?,
        None => system_roots().map_err(failed(TlsPart::SystemRoots))?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(TlsPart::Protocols)(TlsCause::Rustls(e)))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(failed(TlsPart::CertFile(cert.clone())))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| failed(TlsPart::KeyFile(key.clone()))(TlsCause::Pem(e)))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| failed(TlsPart::ClientCert)(TlsCause::Rustls(e)))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an empty file is an error.
fn certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, TlsCause> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(TlsCause::Pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsCause::Pem)?;
    if certs.is_empty() {
        return Err(TlsCause::NoCertificate);
    }
    Ok(certs)
}

fn roots_from(file: &str) -> Result<RootCertStore, TlsCause> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(TlsCause::Rustls)?;
    }
    Ok(roots)
}

/// The operating system's trusted certificates (`/etc/ssl/certs` on Debian),
/// for brokers with a public certificate.
fn system_roots() -> Result<RootCertStore, TlsCause> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsCause::NoSystemRoots(found.errors.into_iter().next()));
    }
    Ok(roots)
}
