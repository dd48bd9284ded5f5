//! Loads in progress and the clients waiting for them. One load per row however
//! many clients miss it at once (single flight); a client waits for every row
//! its command reads. Rows Postgres does not have are remembered briefly
//! (the negative cache). Everything here runs under the Redis lock: commands,
//! Redis's callbacks and the loader's apply step, so a client that finds its key
//! missing registers before any load can finish, and is answered exactly once.

use super::answer::ReadAnswer;
use crate::model::mapping::Mappings;
use crate::model::negative_cache::NegativeCache;
use crate::model::queue::RowKey;
use crate::model::read_command::RowFields;
use crate::redis::blocked::Blocked;
use crate::redis::config;
use compact_str::CompactString;
use redis_module::{Context, RedisError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most rows remembered as absent; past it the oldest are forgotten.
const NEGATIVE_CAPACITY: usize = 100_000;

/// What the loader is asked to do with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A read missed it: write the row if Redis still lacks the key.
    Load(RowKey),
    /// A write created the key (`fill_on_write`): once the write has landed,
    /// add the row's other fields that the hash lacks.
    Fill(RowKey),
}

/// A row read from Postgres, or `None` when Postgres has no such row.
pub type Loaded = Option<Vec<(String, Option<String>)>>;

struct Waiter {
    client: Blocked<ReadAnswer>,
    /// The mappings its command's keys resolve with (a replica's answer).
    mappings: &'static Mappings,
    /// The rows it waits for; `remaining` of them are not loaded yet.
    keys: Vec<RowKey>,
    remaining: usize,
    /// Rows for a replica's answer, which is built from them (it writes nothing).
    rows: Vec<(RowKey, Loaded)>,
}

#[derive(Default)]
struct Loading {
    waiters: Vec<usize>,
    /// A newer value was written while the row was read: read it again.
    invalidated: bool,
}

struct Registry {
    loading: HashMap<RowKey, Loading>,
    waiters: HashMap<usize, Waiter>,
    absent: NegativeCache<RowKey>,
    loader: Option<Sender<Request>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    Mutex::new(Registry {
        loading: HashMap::new(),
        waiters: HashMap::new(),
        absent: NegativeCache::new(NEGATIVE_CAPACITY),
        loader: None,
    })
});

/// Whether any load runs or any row is remembered absent: writes need not look
/// here otherwise.
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    fn refresh_active(&self) {
        ACTIVE.store(!self.loading.is_empty() || !self.absent.is_empty(), Ordering::Relaxed);
    }

    /// Starts loading `row` unless it is loading already; false when the loader
    /// is not running.
    fn start(&mut self, row: &RowKey) -> bool {
        if self.loading.contains_key(row) {
            return true;
        }
        let sent = self.loader.as_ref().is_some_and(|tx| tx.send(Request::Load(row.clone())).is_ok());
        if sent {
            self.loading.insert(row.clone(), Loading::default());
            ACTIVE.store(true, Ordering::Relaxed);
        }
        sent
    }
}

/// Connects the loader thread's queue; called once when it starts.
pub fn set_loader(tx: Sender<Request>) {
    registry().loader = Some(tx);
}

/// Whether `row` is remembered as absent from Postgres.
pub fn is_absent(row: &RowKey) -> bool {
    ACTIVE.load(Ordering::Relaxed) && registry().absent.contains(row, Instant::now())
}

/// Blocks the calling client until `rows` are loaded (or its deadline passes),
/// starting the loads that do not run yet. `mappings` resolve the command's keys
/// when the answer is built from the rows read.
pub fn wait_for(
    ctx: &Context,
    mappings: &'static Mappings,
    rows: Vec<RowKey>,
    timeout: Duration,
) -> Result<(), RedisError> {
    let mut all = registry();
    for row in &rows {
        if !all.start(row) {
            return Err(RedisError::Str("ERR pgsync read-through is not running"));
        }
    }
    let client = Blocked::new(ctx, Some(timeout))?;
    let id = client.id();
    for row in &rows {
        if let Some(loading) = all.loading.get_mut(row) {
            loading.waiters.push(id);
        }
    }
    all.waiters.insert(id, Waiter { client, mappings, remaining: rows.len(), keys: rows, rows: Vec::new() });
    Ok(())
}

/// Starts loading `rows` with nobody waiting: a client that cannot block
/// (MULTI, a script) got a miss, and the next read will find the rows.
pub fn warm(rows: &[RowKey]) {
    let mut all = registry();
    for row in rows {
        all.start(row);
    }
}

/// Asks the loader to fill `row` once its write has landed (`fill_on_write`).
pub fn fill_after_write(row: RowKey) {
    if let Some(tx) = registry().loader.as_ref() {
        let _ = tx.send(Request::Fill(row));
    }
}

/// A writer, the listener or a reload wrote these rows of `mapping`: a load
/// reading one now may read an older value, and a row remembered absent may
/// exist now.
pub fn rows_changed<'i>(mapping: usize, ids: impl Iterator<Item = &'i str>) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let mut all = registry();
    let mut row = RowKey { mapping, id: CompactString::default() };
    for id in ids {
        row.id.clear();
        row.id.push_str(id);
        all.absent.remove(&row);
        if let Some(loading) = all.loading.get_mut(&row) {
            loading.invalidated = true;
        }
    }
    all.refresh_active();
}

/// For the loader: whether `row` was written since its read began (the flag is
/// cleared, as the loader reads it again).
pub fn take_invalidated(row: &RowKey) -> bool {
    registry().loading.get_mut(row).is_some_and(|l| std::mem::take(&mut l.invalidated))
}

/// How a load ended, for its waiters.
pub enum Finished {
    /// Answer from Redis: the row was written, or Redis holds the key anyway.
    InRedis,
    /// Postgres has no such row: remembered absent, answered from Redis.
    Absent,
    /// A replica's load: answered from the row read, written nowhere.
    Read(Loaded),
}

/// For the loader: `row` is done. Its waiters are answered once all their rows
/// are.
pub fn finish(row: &RowKey, finished: Finished) {
    let mut all = registry();
    let waiting = all.loading.remove(row).map(|l| l.waiters).unwrap_or_default();
    let ttl = config::millis(&config::READ_THROUGH_NEGATIVE_TTL_MS);
    if matches!(finished, Finished::Absent | Finished::Read(None)) && !ttl.is_zero() {
        all.absent.insert(row.clone(), Instant::now(), ttl);
    }
    let keep_rows = matches!(finished, Finished::Read(_));
    let loaded = match finished {
        Finished::Read(loaded) => loaded,
        Finished::InRedis | Finished::Absent => None,
    };
    let mut done = Vec::new();
    for id in waiting {
        let Some(w) = all.waiters.get_mut(&id) else { continue };
        if keep_rows {
            w.rows.push((row.clone(), loaded.clone()));
        }
        w.remaining = w.remaining.saturating_sub(1);
        if w.remaining == 0 {
            done.extend(all.waiters.remove(&id));
        }
    }
    all.refresh_active();
    drop(all);
    for w in done {
        let answer = match w.rows.is_empty() {
            true => ReadAnswer::FromRedis,
            false => ReadAnswer::FromRows { mappings: w.mappings, rows: w.rows },
        };
        w.client.reply(answer);
    }
}

/// For the loader: `rows` could not be read (`why`); their waiters are answered
/// as `pgsync.read-through-on-error` says.
pub fn fail(rows: &[RowKey], why: &str) {
    let mut all = registry();
    let mut done = HashMap::new();
    for row in rows {
        for id in all.loading.remove(row).map(|l| l.waiters).unwrap_or_default() {
            done.extend(all.waiters.remove(&id).map(|w| (id, w)));
        }
    }
    all.refresh_active();
    drop(all);
    for (_, w) in done {
        w.client.reply(ReadAnswer::Failed(why.to_string()));
    }
}

/// Forgets a client (its deadline passed, or it went away); its rows keep
/// loading, to warm the cache.
pub fn forget(id: usize) {
    let mut all = registry();
    let Some(w) = all.waiters.remove(&id) else { return };
    for key in &w.keys {
        if let Some(loading) = all.loading.get_mut(key) {
            loading.waiters.retain(|other| *other != id);
        }
    }
    drop(all);
    // Dropping the handle unblocks it, which Redis needs even after a deadline.
    drop(w);
}

/// The rows a replica's answer is built from, by key position.
pub fn row_of<'r>(rows: &'r [(RowKey, Loaded)], row: &RowKey) -> Option<&'r RowFields> {
    rows.iter().find(|(r, _)| r == row).and_then(|(_, loaded)| loaded.as_deref())
}
