//! Kafka → Redis (→ Postgres): a mapping with a `"kafka"` source consumes a
//! topic into its keys, one thread per source. Records are written as a
//! client's hash writes would be (captured, so write-behind carries them to
//! Postgres and change events follow), and each partition's next offset is
//! stored in Redis in the same locked step as the records: data and offset
//! travel together through the AOF and to the replicas, so consumption resumes
//! exactly where the last write left off. Design: docs/kafka.md.

pub mod apply;
mod client;
mod consumer;
pub mod error;
mod offsets;
pub mod status;
mod tls;

use crate::pipeline::runtime::Runtime;
use crate::pipeline::threads::SpawnError;
use error::StartError;

/// Starts the consumer thread of every mapping with a Kafka source, through
/// `spawn` (the supervisor's, which joins it at shutdown). A `"tls"` whose
/// files cannot be read fails the load; the consumer reads them again at every
/// connection, so renewed certificates need no restart.
pub fn start(
    rt: &'static Runtime,
    spawn: impl Fn(&str, Box<dyn FnOnce() + Send>) -> Result<(), SpawnError>,
) -> Result<(), StartError> {
    for m in rt.each_mapping() {
        let Some(source) = &m.def.kafka else { continue };
        if let Some(tls) = &source.tls {
            tls::client_config(&format!("mapping \"{}\"", m.def.name), tls).map_err(StartError::Tls)?;
        }
        status::of(rt, m.index);
        let mapping = m.index;
        spawn(&format!("pgsync-kafka-{}", m.def.name), Box::new(move || consumer::run(rt, mapping)))
            .map_err(StartError::Spawn)?;
    }
    Ok(())
}
