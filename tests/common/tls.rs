//! Throw-away certificate authorities and server certificates, made with the
//! `openssl` command line, for tests of TLS to Postgres.

use super::TempDir;
use std::path::PathBuf;
use std::process::Command;

/// A certificate authority: its certificate and key in a temp dir.
pub struct Ca {
    pub dir: TempDir,
    /// The CA certificate (PEM), what `sslrootcert` names.
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let dir = TempDir::new("pgsync_ca");
        let cert = dir.0.join("ca.crt");
        let key = dir.0.join("ca.key");
        let subject = format!("/CN={name}");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        Ca { dir, cert, key }
    }

    /// A server certificate signed by this CA for the host names `dns` (and no IP
    /// address): returns the certificate and key files.
    pub fn server_cert(&self, dns: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.0.join(format!("{dns}.key"));
        let csr = self.dir.0.join(format!("{dns}.csr"));
        let cert = self.dir.0.join(format!("{dns}.crt"));
        let ext = self.dir.0.join(format!("{dns}.ext"));
        std::fs::write(&ext, format!("subjectAltName=DNS:{dns}\nextendedKeyUsage=serverAuth\n")).expect("write ext");
        let subject = format!("/CN={dns}");
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.cert.to_str().unwrap(),
            "-CAkey",
            self.key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        (cert, key)
    }
}
