//! What `COMMAND DOCS` and `COMMAND INFO` say about the `SYNC.*` commands:
//! summary, complexity, since, arity and arguments, set through
//! `RM_SetCommandInfo` on the commands `redis_module!` registered (the crate's
//! command-info support would register the commands itself, which skips the
//! old-server gate in lib.rs).

use crate::redis::redis_io::{api, warn, HookError};
use redis_module::raw;
use redis_module::Context;
use std::ffi::{c_char, c_int, CString};
use std::ptr;

const KEY: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY;
const STRING: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING;
const INTEGER: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER;
const TOKEN: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN;
const ONE_OF: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF;
const BLOCK: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK;

/// Release of the module that introduced the commands.
const SINCE: &str = "0.1.0";

/// One argument as `COMMAND DOCS` shows it.
struct Arg {
    name: &'static str,
    kind: raw::RedisModuleCommandArgType,
    token: Option<&'static str>,
    flags: u32,
    sub: &'static [Arg],
}

const fn arg(name: &'static str, kind: raw::RedisModuleCommandArgType) -> Arg {
    Arg { name, kind, token: None, flags: raw::REDISMODULE_CMD_ARG_NONE, sub: &[] }
}

impl Arg {
    const fn optional(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        self
    }

    const fn multiple(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        self
    }

    const fn token(mut self, token: &'static str) -> Arg {
        self.token = Some(token);
        self
    }

    const fn of(mut self, sub: &'static [Arg]) -> Arg {
        self.sub = sub;
        self
    }
}

/// One command's documentation.
struct Doc {
    name: &'static str,
    summary: &'static str,
    complexity: &'static str,
    arity: c_int,
    args: &'static [Arg],
}

const ENTRY_OR_ALL: &[Arg] = &[arg("entry", STRING), arg("all", TOKEN).token("ALL")];

const DOCS: &[Doc] = &[
    Doc {
        name: "sync.hset",
        summary: "Writes hash fields through to Postgres; replies once the row is committed, or with an error after pgsync.hset-timeout-ms",
        complexity: "O(N) where N is the number of fields, plus the wait for the commit",
        arity: -4,
        args: &[arg("key", KEY), arg("data", BLOCK).multiple().of(&[arg("field", STRING), arg("value", STRING)])],
    },
    Doc {
        name: "sync.jsonset",
        summary: "Sets a path of a JSON row (RedisJSON) through to Postgres; replies once the row is committed, or with an error after pgsync.hset-timeout-ms",
        complexity: "O(N) where N is the size of the value (or of the member read back), plus the wait for the commit",
        arity: -4,
        args: &[
            arg("key", KEY),
            arg("path", STRING),
            arg("value", STRING),
            arg("condition", ONE_OF).optional().of(&[arg("nx", TOKEN).token("NX"), arg("xx", TOKEN).token("XX")]),
        ],
    },
    Doc {
        name: "sync.wait",
        summary: "Blocks until every change captured before the call reached Postgres; replies with the rows still pending",
        complexity: "O(1), plus the wait",
        arity: -1,
        args: &[arg("timeout-ms", INTEGER).optional()],
    },
    Doc {
        name: "sync.status",
        summary: "Shows each mapping's sync figures and the state of Postgres and the listener",
        complexity: "O(M) where M is the number of mappings",
        arity: -1,
        args: &[arg("mapping", STRING).optional()],
    },
    Doc {
        name: "sync.reload",
        summary: "Loads mapped tables from Postgres into their hashes; FLUSH also deletes keys without a row",
        complexity:
            "O(R + K) where R is the number of rows read and K the keys scanned by FLUSH, run in the background",
        arity: -1,
        args: &[arg("mapping", STRING).optional().multiple(), arg("flush", TOKEN).token("FLUSH").optional()],
    },
    Doc {
        name: "sync.failed",
        summary: "Lists the rows Postgres rejected (the dead-letter list), least recently rejected first",
        complexity: "O(N + S) where N is the size of the entries returned and S the entries passed over (other mappings, rows the caller may not read)",
        arity: -1,
        args: &[arg("mapping", STRING).optional(), arg("count", INTEGER).token("COUNT").optional()],
    },
    Doc {
        name: "sync.retry",
        summary: "Queues dead-letter entries again and removes them from the list",
        complexity: "O(N) for one entry of size N; ALL: O(E + size of the entries retried), E the number of entries",
        arity: 2,
        args: &[arg("selector", ONE_OF).of(ENTRY_OR_ALL)],
    },
    Doc {
        name: "sync.discard",
        summary: "Drops dead-letter entries",
        complexity: "O(log E) for one entry; ALL: O(E log E), E the number of entries",
        arity: 2,
        args: &[arg("selector", ONE_OF).of(ENTRY_OR_ALL)],
    },
    Doc {
        name: "sync.write",
        summary: "Runs a hash write on a synced key and records what it changed; clients' writes are routed here",
        complexity: "O(N) where N is the size of the write, plus the wrapped command's own cost",
        arity: -3,
        args: &[arg("command", STRING), arg("key", KEY), arg("arg", STRING).optional().multiple()],
    },
    Doc {
        name: "sync.remove",
        summary: "Runs HDEL or HGETDEL on a synced key and records the removed fields; clients' removals are routed here",
        complexity: "O(N) where N is the number of fields",
        arity: -3,
        args: &[arg("command", STRING), arg("key", KEY), arg("field", STRING).multiple()],
    },
    Doc {
        name: "sync.jsonwrite",
        summary: "Runs a RedisJSON write on a synced JSON row key and records the members it changed; clients' JSON writes are routed here",
        complexity: "O(N) where N is the size of the write (or of the member read back), plus the wrapped command's own cost",
        arity: -3,
        args: &[arg("command", STRING), arg("key", KEY), arg("arg", STRING).optional().multiple()],
    },
    Doc {
        name: "sync.delete",
        summary: "Runs DEL or UNLINK and deletes the rows of synced keys; clients' deletes are routed here",
        complexity: "O(N) where N is the number of keys, plus the wrapped command's own cost",
        arity: -3,
        args: &[arg("command", STRING), arg("key", KEY).multiple()],
    },
    Doc {
        name: "sync.migrate",
        summary: "Runs MIGRATE in a cluster so that a row's keys and unsynced change move together; clients' MIGRATEs are routed here",
        complexity: "O(N) where N is the number of keys moved, plus MIGRATE's own cost",
        arity: -2,
        args: &[arg("command", STRING), arg("arg", STRING).multiple()],
    },
    Doc {
        name: "sync.keysinslot",
        summary: "Runs CLUSTER GETKEYSINSLOT in a cluster and adds the journal-key names of the slot's rows with a pending change but no key, so a reshard moves their changes; clients' GETKEYSINSLOTs are routed here",
        complexity: "O(N) where N is the number of keys returned, plus the number of pending rows of the slot",
        arity: -2,
        args: &[arg("command", STRING), arg("arg", STRING).multiple()],
    },
    Doc {
        name: "sync.read",
        summary: "Runs a read of read-through keys that Redis does not hold, loading their rows from Postgres first; clients' reads of missing keys are routed here",
        complexity: "O(1) plus the wrapped command's own cost; a miss waits for one batched query",
        arity: -3,
        args: &[arg("command", STRING), arg("key", KEY), arg("arg", STRING).optional().multiple()],
    },
];

/// Sets the documentation of every `SYNC.*` command. A failure only costs the
/// docs, so it is logged rather than failing the load.
pub fn register(ctx: &Context) {
    for doc in DOCS {
        if let Err(e) = set_info(ctx, doc) {
            warn(&format!("no COMMAND DOCS for {}: {e}", doc.name));
        }
    }
}

fn set_info(ctx: &Context, doc: &Doc) -> Result<(), HookError> {
    let (Some(get_command), Some(set_command_info)) = (api!(RedisModule_GetCommand), api!(RedisModule_SetCommandInfo))
    else {
        return Err(HookError::NoCommandInfo);
    };
    let mut keep = Lowered::default();
    let name = keep.text(doc.name);
    // SAFETY: the context is the load's; the name is a live C string.
    let command = unsafe { get_command(ctx.ctx, name) };
    if command.is_null() {
        return Err(HookError::NotRegistered);
    }
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
    };
    let info = raw::RedisModuleCommandInfo {
        version: &version,
        summary: keep.text(doc.summary),
        complexity: keep.text(doc.complexity),
        since: keep.text(SINCE),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity: doc.arity,
        // None: the key spec made from the registration's first/last key stays.
        key_specs: ptr::null_mut(),
        args: keep.args(doc.args),
    };
    // SAFETY: every pointer in `info` points into `version` or `keep`, alive until
    // the call returns; Redis copies what it keeps.
    match unsafe { set_command_info(command, &info) } {
        status if status == raw::REDISMODULE_OK as c_int => Ok(()),
        _ => Err(HookError::CommandInfoRefused),
    }
}

/// The C strings and argument arrays of one command's info, kept alive until
/// Redis has copied them.
#[derive(Default)]
struct Lowered {
    strings: Vec<CString>,
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl Lowered {
    fn text(&mut self, text: &str) -> *const c_char {
        // Our texts are literals without NUL bytes; an empty string is the fallback.
        let text = CString::new(text).unwrap_or_default();
        let pointer = text.as_ptr();
        self.strings.push(text);
        pointer
    }

    /// The arguments as a C array ended by an all-null entry (`NULL` when empty).
    fn args(&mut self, args: &[Arg]) -> *mut raw::RedisModuleCommandArg {
        if args.is_empty() {
            return ptr::null_mut();
        }
        let mut array = Vec::with_capacity(args.len() + 1);
        for a in args {
            let token = a.token.map_or(ptr::null(), |t| self.text(t));
            array.push(raw::RedisModuleCommandArg {
                name: self.text(a.name),
                type_: a.kind,
                // A key argument is always the registration's key spec 0 (one key each).
                key_spec_index: if a.kind == KEY { 0 } else { -1 },
                token,
                summary: ptr::null(),
                since: ptr::null(),
                flags: a.flags as c_int,
                deprecated_since: ptr::null(),
                subargs: self.args(a.sub),
                display_text: ptr::null(),
            });
        }
        array.push(raw::RedisModuleCommandArg {
            name: ptr::null(),
            type_: 0,
            key_spec_index: 0,
            token: ptr::null(),
            summary: ptr::null(),
            since: ptr::null(),
            flags: 0,
            deprecated_since: ptr::null(),
            subargs: ptr::null_mut(),
            display_text: ptr::null(),
        });
        let pointer = array.as_mut_ptr();
        self.arrays.push(array);
        pointer
    }
}
