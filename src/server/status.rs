//! The figures of `SYNC.STATUS` and `INFO pgsync`, computed once in one place.

use crate::model::counting_alloc::module_bytes;
use crate::model::stats::{Figure, MappingStats};
use crate::pipeline::runtime::{self, Runtime};
use crate::redis::eviction::journal_evictions;
use redis_module::{InfoContext, RedisValue};
use std::sync::atomic::Ordering;

/// Every figure of one mapping, in display order.
pub fn figures(rt: &Runtime, mapping: usize) -> Vec<(&'static str, Figure)> {
    let m = rt.mapping(mapping).def;
    let s = rt.mapping(mapping).stats;
    let backlog = rt.queue().backlog(mapping);
    let lag_ms = backlog.oldest.map_or(0, |t| t.elapsed().as_millis() as i64);
    let count = |c: &std::sync::atomic::AtomicU64| Figure::Int(MappingStats::get(c) as i64);
    vec![
        ("mode", Figure::Text(m.mode.as_str().into())),
        ("table", Figure::Text(m.table.clone())),
        ("key_prefix", Figure::Text(m.key_prefix.clone())),
        ("pending", Figure::Int(backlog.pending as i64)),
        ("in_flight", Figure::Int(backlog.in_flight as i64)),
        ("synced", count(&s.synced)),
        ("failed", count(&s.failed)),
        ("retries", count(&s.retries)),
        ("refused", count(&s.refused)),
        ("deadletter_dropped", count(&s.dead_letters_dropped)),
        ("notify_skipped", count(&s.notify_skipped)),
        ("lag_ms", Figure::Int(lag_ms)),
        ("read_through", Figure::Text(if m.read_through { "on" } else { "off" }.into())),
        ("read_hits", count(&s.read_hits)),
        ("read_misses", count(&s.read_misses)),
        ("read_negative_hits", count(&s.read_negative_hits)),
        ("read_loads", count(&s.read_loads)),
        ("read_rows_loaded", count(&s.read_rows_loaded)),
        ("read_errors", count(&s.read_errors)),
        ("read_load_p50_us", Figure::Int(s.read_latency.quantile_micros(0.5) as i64)),
        ("read_load_p99_us", Figure::Int(s.read_latency.quantile_micros(0.99) as i64)),
        ("last_error", Figure::Text(s.last_error().unwrap_or_default())),
        ("schema", Figure::Text(s.schema_error().map_or_else(|| schema_state(rt, mapping), |e| format!("error: {e}")))),
        ("postgres", Figure::Text(rt.postgres.describe().into())),
        ("postgres_error", Figure::Text(rt.postgres.error().unwrap_or_default())),
        ("role", Figure::Text(if rt.is_replica() { "replica" } else { "primary" }.into())),
        ("listener", Figure::Text(s.listener().unwrap_or_else(|| if m.listen { "starting" } else { "off" }.into()))),
        ("reload", Figure::Text(reload_state(rt))),
        ("reload_rows_read", count(&s.reload_rows_read)),
        ("recovery", Figure::Text(rt.dirty.recovery().describe())),
    ]
    .into_iter()
    .chain(crate::sources::kafka::status::figures(rt, mapping))
    .collect()
}

/// The figures of the whole module, in display order: the same for every mapping.
pub fn module_figures(rt: &Runtime) -> Vec<(&'static str, Figure)> {
    let unsynced: usize = rt
        .each_mapping()
        .map(|m| {
            let backlog = rt.queue().backlog(m.index);
            backlog.pending + backlog.in_flight
        })
        .sum();
    let (journal_rows, journal_bytes) = crate::redis::journal::logs::size();
    vec![
        ("module_bytes", Figure::Int(module_bytes() as i64)),
        ("unsynced_rows", Figure::Int(unsynced as i64)),
        ("journal_rows", Figure::Int(journal_rows as i64)),
        ("journal_bytes", Figure::Int(journal_bytes as i64)),
        ("journal_evictions", Figure::Int(journal_evictions() as i64)),
        ("cluster", Figure::Text(crate::redis::cluster::describe())),
    ]
    .into_iter()
    .chain(
        crate::sources::logical::status::figures()
            .into_iter()
            .map(|(name, value)| (name, value.map_or_else(Figure::Int, Figure::Text))),
    )
    .collect()
}

fn reload_state(rt: &Runtime) -> String {
    let rows = rt.reload_rows.load(Ordering::Relaxed);
    match (rt.reload_running.load(Ordering::Relaxed), rows) {
        (true, rows) => format!("running: {rows} rows loaded"),
        (false, 0) => "idle".into(),
        (false, rows) => format!("idle: last reload loaded {rows} rows"),
    }
}

fn schema_state(rt: &Runtime, mapping: usize) -> String {
    if rt.schema(mapping).is_some() { "ok" } else { "unchecked" }.into()
}

/// `SYNC.STATUS` reply for one mapping: a flat list of name, value pairs, its
/// own figures then the module's.
pub fn mapping_reply(rt: &Runtime, mapping: usize) -> RedisValue {
    let mut out = Vec::new();
    for (name, figure) in figures(rt, mapping).into_iter().chain(module_figures(rt)) {
        out.push(RedisValue::BulkString(name.into()));
        out.push(match figure {
            Figure::Int(n) => RedisValue::Integer(n),
            Figure::Text(t) => RedisValue::BulkString(t),
        });
    }
    RedisValue::Array(out)
}

/// The `INFO` handler: the `pgsync` section, left out of crash reports.
pub fn info(ctx: &InfoContext, for_crash_report: bool) {
    if let (Some(rt), false) = (runtime::get(), for_crash_report) {
        add_info(ctx, rt);
    }
}

/// Adds the `pgsync` section to `INFO`: the module's `<figure>:<value>` lines,
/// then each mapping's `<mapping>_<figure>:<value>` lines.
// The builder API wants a section name and would print `pgsync_<name>`; the plain
// calls give the section the module's own name, which `INFO pgsync` selects.
#[allow(deprecated)]
pub fn add_info(ctx: &InfoContext, rt: &Runtime) {
    ctx.add_info_section(None);
    for (name, figure) in module_figures(rt) {
        add_info_field(ctx, name, figure);
    }
    for m in rt.each_mapping() {
        for (name, figure) in figures(rt, m.index) {
            add_info_field(ctx, &format!("{}_{}", m.def.name, name), figure);
        }
    }
}

#[allow(deprecated)]
fn add_info_field(ctx: &InfoContext, field: &str, figure: Figure) {
    match figure {
        Figure::Int(n) => ctx.add_info_field_long_long(field, n),
        Figure::Text(t) => ctx.add_info_field_str(field, &t.replace(['\r', '\n', '\0'], " ")),
    };
}
