//! The [`RecordStore`] over Redis: the Redis lock's context, the records'
//! commands run as a client's (`direct_write`), their changes captured, the
//! offsets in their keys (`offsets.rs`), refusals on the dead-letter list.

use super::{Plan, RecordStore, Refusal};
use crate::model::kafka::{KafkaOrigin, KafkaSource};
use crate::model::mapping::Mapping;
use crate::pipeline::capture::{self, Target};
use crate::pipeline::runtime::Runtime;
use crate::redis::cluster::{self, Place};
use crate::redis::deadletter;
use crate::redis::direct_write;
use crate::redis::redis_io::{string, warn};
use crate::sources::kafka::offsets;
use redis_module::{Context, RedisString};

/// The live store: the context of the Redis lock the caller holds.
pub(super) struct LiveStore<'a> {
    /// The locked context.
    pub ctx: &'a Context,
    /// The module's state (mappings, capture, counters).
    pub rt: &'a Runtime,
}

impl RecordStore for LiveStore<'_> {
    fn writing(&self) -> bool {
        capture::capturing(self.ctx, self.rt)
    }

    fn offset_key(&self, source: &KafkaSource, partition: i32) -> String {
        offsets::offset_key(self.ctx, source, partition)
    }

    fn read_offset(&self, key: &str) -> Option<i64> {
        offsets::read_offset(self.ctx, key)
    }

    fn write_offset(&self, key: &str, next: i64) {
        offsets::write_offset(self.ctx, key, next)
    }

    fn place(&self, key: &str) -> Place {
        cluster::place(self.ctx, key.as_bytes())
    }

    fn write(&self, plan: Plan) -> Result<(), Refusal> {
        let ctx = self.ctx;
        let target: Target = match capture::target(self.rt, plan.key.as_bytes()) {
            Some(Ok(target)) => target,
            Some(Err(why)) => return Err(Refusal::Capture(Box::new(why))),
            None => return Err(Refusal::NotSynced { key: plan.key }),
        };
        for (command, argv) in &plan.commands {
            let argv: Vec<RedisString> = argv.iter().map(|a| string(ctx, a)).collect();
            direct_write::run_unchecked(ctx, *command, &argv).map_err(|e| Refusal::Command(e.to_string()))?;
        }
        capture::record(ctx, self.rt, &target, plan.key.as_bytes(), plan.write);
        Ok(())
    }

    fn dead_letter(&self, m: &Mapping, origin: KafkaOrigin, why: &Refusal) {
        warn(&format!(
            "{}: Kafka record {}/{} offset {} dead-lettered: {why}",
            m.name, origin.topic, origin.partition, origin.offset
        ));
        deadletter::add_record(self.ctx, self.rt.drop_counters(), m, origin, &why.to_string());
    }
}
