//! Postgres -> Redis apply: writes rows read from Postgres (by the listener, a
//! reload or a TRUNCATE's clearing) into their hashes, skipping the rows Redis
//! changed since the read began, since Redis is newer for those.

use crate::model::queue::Snapshot;
use crate::pg::reader::PgRow;
use crate::pipeline::runtime::Runtime;
use crate::server::notify::{self, now_ms, Event, EventOp, Source};
use crate::server::redis_io::{call_logged, own_writes};
use redis_module::ThreadSafeContext;

/// Writes rows read from Postgres (listener, reload) into their hashes, under one
/// short lock: mapped fields are set, NULL columns removed, unmapped fields kept.
/// `gone` lists ids whose row no longer exists: their keys are deleted. Rows Redis
/// changed since `snapshot` (taken before the read) are skipped, since Redis is
/// newer for them; their ids are returned.
pub fn apply_pg_rows(
    rt: &Runtime,
    mapping: usize,
    snapshot: &Snapshot<'_>,
    rows: &[PgRow],
    gone: &[String],
    source: Source,
) -> Vec<String> {
    let m = &rt.mappings.all()[mapping];
    let mut skipped = Vec::new();
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    // Checked under the Redis lock, so capture (which needs it) cannot dirty a row
    // between the check and the write; one queue lock for the whole chunk.
    let ids = rows.iter().map(|r| r.id.as_str()).chain(gone.iter().map(String::as_str));
    let newer_ids = snapshot.newer_among(mapping, ids);
    let newer = |id: &str| newer_ids.contains(id);
    own_writes(|| {
        for row in rows {
            if newer(&row.id) {
                skipped.push(row.id.clone());
                continue;
            }
            let key = m.main_key(&row.id);
            let mut set: Vec<&[u8]> = vec![key.as_bytes()];
            let mut unset: Vec<&[u8]> = vec![key.as_bytes()];
            for (field, value) in &row.fields {
                match value {
                    Some(v) => {
                        set.push(field.as_bytes());
                        set.push(v.as_bytes());
                    }
                    None => unset.push(field.as_bytes()),
                }
            }
            if unset.len() > 1 {
                call_logged(&ctx, "HDEL", &unset);
            }
            if set.len() > 1 {
                call_logged(&ctx, "HSET", &set);
            }
            let fields = row.fields.iter().map(|(f, _)| f.clone()).collect();
            let event = Event { key: &key, id: &row.id, op: EventOp::Upsert, source, fields, time: now_ms() };
            notify::send(&ctx, m, &event);
        }
        for id in gone {
            if newer(id) {
                skipped.push(id.clone());
                continue;
            }
            let key = m.main_key(id);
            call_logged(&ctx, "DEL", &[key.as_bytes()]);
            let event = Event { key: &key, id, op: EventOp::Delete, source, fields: Vec::new(), time: now_ms() };
            notify::send(&ctx, m, &event);
        }
    });
    skipped
}
