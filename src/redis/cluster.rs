//! Redis Cluster: whether the server runs in a cluster, which slots this node
//! serves, and where a key stands. Every primary runs the module with the same
//! mappings and syncs only the keys of its own slots; clients' writes reach the
//! right node through the cluster's own redirections, but the module's other
//! writers (the listener, reloads, read-through loads, other sources) must ask
//! [`owns_key`] before they write a key, and the module's per-node keys (dead
//! letters, changelog) take a hash tag of a slot the node owns ([`home_tag`]).
//!
//! The slot table is read from `CLUSTER NODES` under the Redis lock when it is
//! stale: after every `CLUSTER` command (the filter calls [`on_command`]), a
//! change of role, and once a second from the cron (a slot lost through gossip
//! after a failover). A slot being moved out is served only for the keys still
//! here, as Redis does for clients; a slot being moved in is not ours yet.

use crate::model::slots::{SlotState, SlotTable};
use crate::redis::redis_io::{api, bytes, string, warn};
use redis_module::{CallOptionsBuilder, CallResult, Context, ContextFlags};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The slot table as last read, and whether it must be read again.
static TABLE: Mutex<Cached> = Mutex::new(Cached { table: None, stale: true });

struct Cached {
    table: Option<SlotTable>,
    stale: bool,
}

/// Set by the filter while the command about to run is `RESTORE-ASKING`: a key
/// arriving from another node by `MIGRATE`. Main thread only.
static ARRIVING: AtomicBool = AtomicBool::new(false);

/// Notes at load whether the server runs in a cluster.
pub fn detect(ctx: &Context) {
    ENABLED.store(ctx.get_flags().contains(ContextFlags::CLUSTER), Ordering::Relaxed);
}

/// Whether the server runs with `cluster-enabled yes`.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The slot table must be read again (a `CLUSTER` command ran, the role changed,
/// or a second went by).
pub fn invalidate() {
    lock().stale = true;
}

fn lock() -> MutexGuard<'static, Cached> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The slot table, read from `CLUSTER NODES` if stale. Needs the Redis lock.
///
/// The table's mutex is not held during the call: outside a command (the
/// listener, the loader, the cron) `NOSELF` does not spare the module's own
/// calls from its command filter, whose [`on_command`] marks the table stale
/// under that mutex. Holding it here deadlocked the server. The Redis lock
/// keeps every other reader and writer of the table out meanwhile.
fn table(ctx: &Context) -> MutexGuard<'static, Cached> {
    let cached = lock();
    if !cached.stale {
        return cached;
    }
    drop(cached);
    let text = read_cluster_nodes(ctx);
    let mut cached = lock();
    if let Some(text) = text {
        cached.table = Some(SlotTable::from_cluster_nodes(&text));
        // Our own CLUSTER NODES went through the filter and marked it stale.
        cached.stale = false;
    }
    cached
}

/// The text of `CLUSTER NODES`, or `None` (logged) when the call failed.
fn read_cluster_nodes(ctx: &Context) -> Option<String> {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let reply: CallResult = ctx.call_ext("CLUSTER", &options, &[b"NODES".as_slice()]);
    match reply.map(|r| bytes(&(&r).into())) {
        Ok(Some(text)) => Some(String::from_utf8_lossy(&text).into_owned()),
        Ok(None) => {
            warn("CLUSTER NODES gave no text");
            None
        }
        Err(e) => {
            warn(&format!("CLUSTER NODES failed: {}", e.to_utf8_string().unwrap_or_default()));
            None
        }
    }
}

/// The hash slot of `key`.
pub fn slot(ctx: &Context, key: &[u8]) -> u16 {
    let name = string(ctx, key);
    // SAFETY: `name` is a live string for the duration of the call.
    api!(RedisModule_ClusterKeySlot).map_or(0, |slot| unsafe { slot(name.inner) } as u16)
}

/// A short name whose slot is `slot` (the server's canonical one), to use as a
/// hash tag that puts a key in that slot.
pub fn slot_tag(slot: u16) -> Vec<u8> {
    api!(RedisModule_ClusterCanonicalKeyNameInSlot)
        // SAFETY: the server returns a static string for every slot below 16384.
        .map(|canonical| unsafe { canonical(u32::from(slot) % 16384) })
        .filter(|p| !p.is_null())
        // SAFETY: checked non-null; a NUL-terminated static string.
        .map(|p| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
        .unwrap_or_else(|| slot.to_string().into_bytes())
}

/// Whether this node may write `key` now: outside a cluster always; in one, when
/// the key's slot is ours and stays, or is leaving and the key is still here
/// (it leaves with a later `MIGRATE`). Needs the Redis lock. Every writer that
/// is not a client's command (listener, reload, read-through, other sources)
/// asks this before writing a key, so each key is written once, on its node.
pub fn owns_key(ctx: &Context, key: &[u8]) -> bool {
    place(ctx, key) == Place::Mine
}

/// Where a key stands for the module's own writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// This node writes it.
    Mine,
    /// Its slot is moving between nodes and the key is not here: nobody may
    /// create it until the move ends (try again later).
    Moving,
    /// Another node's key.
    Elsewhere,
}

/// Where `key` stands; see [`Place`]. Needs the Redis lock.
pub fn place(ctx: &Context, key: &[u8]) -> Place {
    if !enabled() {
        return Place::Mine;
    }
    let slot = slot(ctx, key);
    let state = table(ctx).table.as_ref().map_or(SlotState::Elsewhere, |t| t.state(slot));
    match state {
        SlotState::Stable => Place::Mine,
        SlotState::Leaving if key_exists(ctx, key) => Place::Mine,
        SlotState::Leaving | SlotState::Arriving => Place::Moving,
        SlotState::Elsewhere => Place::Elsewhere,
    }
}

/// Whether `key` exists on this node.
pub fn key_exists(ctx: &Context, key: &[u8]) -> bool {
    let name = string(ctx, key);
    !ctx.open_key(&name).is_null()
}

/// The hash tag (without braces) of this node's own keys: the canonical name of
/// its lowest owned slot that is not being moved. `None` outside a cluster (the
/// keys keep their single-server names) or on a node that owns no slot.
pub fn home_tag(ctx: &Context) -> Option<Vec<u8>> {
    if !enabled() {
        return None;
    }
    table(ctx).table.as_ref().and_then(SlotTable::first_stable).map(slot_tag)
}

/// The slots this node owns, lowest first (none outside a cluster). Needs the
/// Redis lock.
pub fn owned_slots(ctx: &Context) -> Vec<u16> {
    if !enabled() {
        return Vec::new();
    }
    table(ctx).table.as_ref().map(|t| t.owned().collect()).unwrap_or_default()
}

/// The `cluster` figure of `SYNC.STATUS` and `INFO`: `off`, or the owned slots
/// as last read (INFO cannot call commands).
pub fn describe() -> String {
    if !enabled() {
        return "off".into();
    }
    match &lock().table {
        Some(t) if t.owned_count() > 0 => format!("slots {}", t.describe()),
        Some(_) => "no slots".into(),
        None => "unknown".into(),
    }
}

/// Reads the slot table again now if it is stale (before `SYNC.STATUS`).
pub fn refresh(ctx: &Context) {
    if enabled() {
        drop(table(ctx));
    }
}

/// Called by the command filter before every command (main thread, so the
/// flags it sets describe the command that runs next). Returns the wrapper
/// `MIGRATE` goes through in a cluster (see `commands/migrate.rs`).
/// `subcommand` gives the command's second argument, asked for only for `CLUSTER`:
/// `CLUSTER GETKEYSINSLOT` goes through `SYNC.KEYSINSLOT` (`slot_keys.rs`).
pub fn on_command<'a>(name: &[u8], subcommand: impl FnOnce() -> Option<&'a [u8]>) -> Option<&'static [u8]> {
    if !enabled() {
        return None;
    }
    ARRIVING.store(name.eq_ignore_ascii_case(b"restore-asking"), Ordering::Relaxed);
    if name.eq_ignore_ascii_case(b"cluster") {
        invalidate();
        return subcommand().filter(|s| s.eq_ignore_ascii_case(b"getkeysinslot")).map(|_| &b"SYNC.KEYSINSLOT"[..]);
    }
    name.eq_ignore_ascii_case(b"migrate").then_some(b"SYNC.MIGRATE")
}

/// Whether the command running now is `RESTORE-ASKING`: keys restored by it
/// arrive from another node and are not a client's write.
pub fn arriving() -> bool {
    ARRIVING.load(Ordering::Relaxed)
}
