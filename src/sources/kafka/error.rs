//! Why a Kafka source cannot consume now: the broker's failures and the TLS
//! configuration's, as kinds with their sources kept. The consumer shows the
//! text in `SYNC.STATUS` and backs off; nothing decides on the text.

use std::fmt;

use crate::pipeline::threads::SpawnError;

/// A failure talking to the brokers.
#[derive(Debug)]
pub enum KafkaError {
    /// A broker call failed.
    Broker {
        /// The call (`connect`, `fetch`, ...).
        call: &'static str,
        /// The client's error.
        source: rskafka::client::error::Error,
    },
    /// A broker call had no answer in time.
    Timeout {
        /// The call.
        call: &'static str,
        /// How long it was given.
        after: std::time::Duration,
    },
    /// The topic is not on the brokers.
    NoTopic(String),
    /// A configured partition is not in the topic.
    NoPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A partition the consumer does not hold was asked for (a bug).
    NotConsumed(i32),
    /// The TLS configuration cannot be built.
    Tls(TlsError),
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaError::Broker { call, source } => write!(f, "{call}: {source}"),
            KafkaError::Timeout { call, after } => write!(f, "{call}: no answer within {} s", after.as_secs()),
            KafkaError::NoTopic(topic) => write!(f, "topic \"{topic}\" does not exist"),
            KafkaError::NoPartition { topic, partition } => write!(f, "topic \"{topic}\" has no partition {partition}"),
            KafkaError::NotConsumed(partition) => write!(f, "partition {partition} is not consumed"),
            KafkaError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for KafkaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KafkaError::Broker { source, .. } => Some(source),
            KafkaError::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TlsError> for KafkaError {
    fn from(e: TlsError) -> KafkaError {
        KafkaError::Tls(e)
    }
}

/// A source's `"tls"` that cannot be turned into a client configuration.
#[derive(Debug)]
pub struct TlsError {
    /// Who configured it (`mapping "name"`).
    pub who: String,
    /// Which part failed.
    pub part: TlsPart,
    /// Why.
    pub cause: TlsCause,
}

/// The part of a TLS configuration that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPart {
    /// The `"ca_file"` (its path).
    CaFile(String),
    /// The system's trusted certificates (no `"ca_file"`).
    SystemRoots,
    /// The protocol versions (a rustls build problem).
    Protocols,
    /// The `"cert_file"` (its path).
    CertFile(String),
    /// The `"key_file"` (its path).
    KeyFile(String),
    /// The certificate and key together.
    ClientCert,
}

/// Why a part of a TLS configuration failed.
#[derive(Debug)]
pub enum TlsCause {
    /// A PEM file cannot be read or parsed.
    Pem(rustls::pki_types::pem::Error),
    /// rustls refused a certificate, a key or the versions.
    Rustls(rustls::Error),
    /// The file holds no PEM certificate.
    NoCertificate,
    /// The system has no certificate rustls can use (the first loading error, if any).
    NoSystemRoots(Option<rustls_native_certs::Error>),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: kafka tls", self.who)?;
        match &self.part {
            TlsPart::CaFile(file) => write!(f, " \"ca_file\" {file}")?,
            TlsPart::SystemRoots => f.write_str(": the system's certificates")?,
            TlsPart::Protocols => {}
            TlsPart::CertFile(file) => write!(f, " \"cert_file\" {file}")?,
            TlsPart::KeyFile(file) => write!(f, " \"key_file\" {file}")?,
            TlsPart::ClientCert => f.write_str(" client certificate")?,
        }
        match &self.cause {
            TlsCause::Pem(e) => write!(f, ": {e}"),
            TlsCause::Rustls(e) => write!(f, ": {e}"),
            TlsCause::NoCertificate => f.write_str(": no PEM certificate in it"),
            TlsCause::NoSystemRoots(Some(e)) => write!(f, ": {e}"),
            TlsCause::NoSystemRoots(None) => f.write_str(": none found"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            TlsCause::Pem(e) => Some(e),
            TlsCause::Rustls(e) => Some(e),
            TlsCause::NoSystemRoots(Some(e)) => Some(e),
            TlsCause::NoCertificate | TlsCause::NoSystemRoots(None) => None,
        }
    }
}

/// Why the Kafka sources cannot start with the module.
#[derive(Debug)]
pub enum StartError {
    /// A source's `"tls"` files cannot be used.
    Tls(TlsError),
    /// Its thread cannot be started.
    Spawn(SpawnError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Tls(e) => e.fmt(f),
            StartError::Spawn(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Tls(e) => Some(e),
            StartError::Spawn(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(part: TlsPart, cause: TlsCause) -> String {
        TlsError { who: "mapping \"m\"".into(), part, cause }.to_string()
    }

    #[test]
    fn texts_name_the_mapping_the_part_and_the_cause() {
        assert_eq!(
            tls(TlsPart::CaFile("/ca.pem".into()), TlsCause::NoCertificate),
            "mapping \"m\": kafka tls \"ca_file\" /ca.pem: no PEM certificate in it"
        );
        assert_eq!(
            tls(TlsPart::SystemRoots, TlsCause::NoSystemRoots(None)),
            "mapping \"m\": kafka tls: the system's certificates: none found"
        );
        let timeout = KafkaError::Timeout { call: "fetch", after: std::time::Duration::from_secs(10) }.to_string();
        assert_eq!(timeout, "fetch: no answer within 10 s");
        let missing = KafkaError::NoPartition { topic: "t".into(), partition: 3 };
        assert_eq!(missing.to_string(), "topic \"t\" has no partition 3");
    }
}
