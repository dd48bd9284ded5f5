//! `SYNC.JSONWRITE`: a RedisJSON write (`JSON.SET`, `JSON.DEL`, `JSON.FORGET`,
//! `JSON.NUMINCRBY`, and the writes that change a member in place, such as
//! `JSON.TOGGLE` or `JSON.ARRAPPEND`) to a `"type": "json"` row key
//! (write-behind) or staging key (write-through), run and captured in one step, as `SYNC.WRITE` does for hashes: the command filter routes it here,
//! the arguments say which members (columns) it sets, removes or increments
//! (`model/json_intent.rs`), and the command runs as the caller would have run
//! it. A write to a member of a key Redis does not hold, or an increment of a
//! member the document lacks, creates it (RedisJSON would refuse a path into
//! nothing) and changes only that column in Postgres; a `JSON.SET` below a
//! member Redis does not hold sets that path in the column (`cold_path_set`).
//! `SYNC.JSONSET` is the same capture of a `JSON.SET`, replying once the row
//! is committed.

use super::write::target_of;
use super::{committed_write, reply_when_committed, runtime_or_err};
use crate::model::change::{Delta, FieldChange, Fields, RowOp, Write, OP_FIELD};
use crate::model::intent::Effect;
use crate::model::json_intent::{self, JsonCommand, JsonEffect};
use crate::model::json_row::{self, MemberKind};
use crate::model::mapping::{KeyRole, Mapping, Mode, OnSet, ValueType};
use crate::model::slots::key_slot;
use crate::pipeline::capture::{record, refuse, tagged_write, Target};
use crate::pipeline::runtime::Runtime;
use crate::redis::acl::Caller;
use crate::redis::blocked::Reply;
use crate::redis::client_call::{call_named_as_client, client_argv, ClientReply};
use crate::redis::cluster;
use crate::redis::json_doc::{self, DocError};
use crate::redis::redis_io::{bytes, key_exists};
use crate::redis::replies;
use crate::server::value_refusal;
use redis_module::{CallReply, Context, RedisError, RedisResult, RedisString, RedisValue};

/// `SYNC.JSONWRITE <JSON.command> <key> [args ...]`.
pub fn sync_jsonwrite(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    let Some(command) = JsonCommand::from_name(args[1].as_slice()) else {
        return Err(RedisError::Str(replies::JSONWRITE_RUNS));
    };
    let rt = runtime_or_err()?;
    if command == JsonCommand::MSet {
        return sync_jsonmset(ctx, rt, &args);
    }
    let argv = &args[1..];
    let Some(target) = target_of(ctx, rt, args[2].as_slice())? else { return run(ctx, command, argv)?.forward(ctx) };
    capture(ctx, rt, &target, command, argv)?.0.forward(ctx)
}

/// `SYNC.JSONSET key path value [NX|XX]`: `JSON.SET` on a `"type": "json"`
/// row (its staging key in write-through, the row key in write-behind), with
/// the field-level meaning of a captured `JSON.SET`, replying only once the
/// row is committed in Postgres, or with Postgres's error, as `SYNC.HSET`.
pub fn sync_jsonset(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if !(4..=5).contains(&args.len()) {
        return Err(RedisError::WrongArity);
    }
    let rt = runtime_or_err()?;
    let (target, written) =
        committed_write(ctx, rt, args[1].as_slice(), "SYNC.JSONSET", |m| match (m.value_type, m.mode) {
            (ValueType::Json, Mode::WriteThrough | Mode::WriteBehind) => Ok(()),
            (value_type, mode) => {
                Err(replies::jsonset_needs_json_mapping(&m.name, mode.as_str(), value_type == ValueType::Json))
            }
        })?;
    let argv = client_argv(ctx, b"JSON.SET", &[written.as_bytes()], &args[2..]);
    let (reply, version) = capture(ctx, rt, &target, JsonCommand::Set, &argv)?;
    reply_when_committed(ctx, rt, &target, version, Reply::Ok, &reply)
}

/// Runs the JSON write `argv` (its name first, then the key of `target`) as
/// the caller and records what it changed. Returns RedisJSON's reply and the
/// version of the change queued for Postgres (`None`: nothing goes there).
fn capture(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    command: JsonCommand,
    argv: &[RedisString],
) -> Result<(ClientReply, Option<u64>), RedisError> {
    let key = argv[1].as_slice();
    let m = rt.mapping(target.mapping).def;
    let rest: Vec<&[u8]> = argv[2..].iter().map(|a| a.as_slice()).collect();
    let effect = match json_intent::parse(command, &rest) {
        Ok(Some(effect)) => effect,
        Ok(None) => return Ok((run(ctx, command, argv)?, None)),
        Err(why) => return Err(refusal(ctx, rt, target, argv, &why)),
    };
    let effect = replacing(rt, target, effect);
    check(ctx, rt, target, argv, &effect)?;
    let effect = match effect {
        JsonEffect::Document(members) if command == JsonCommand::Set && members.iter().any(|(n, _)| is_op(n)) => {
            return tagged(ctx, rt, target, argv, members);
        }
        effect => effect,
    };
    if let JsonEffect::Below(member) = &effect {
        if let Some(captured) = cold_path_set(ctx, rt, target, command, argv, &rest, member)? {
            return Ok(captured);
        }
    }
    let cold = !key_exists(ctx, &argv[1]);
    let (reply, fields) = match effect {
        // Deleting a staging key drops what it stages, as `DEL` of a hash one.
        JsonEffect::DeleteRow if target.role == KeyRole::Temp => return Ok((run(ctx, command, argv)?, None)),
        JsonEffect::DeleteRow => {
            let reply = run(ctx, command, argv)?;
            let delete = Write { op: RowOp::Delete, fields: Fields::new(), acks: Vec::new() };
            return Ok((reply, record(ctx, rt, target, key, delete)));
        }
        JsonEffect::Members(members) | JsonEffect::Document(members) if cold && creates_member(command, &rest) => {
            let created = create(ctx, key, &members)?;
            (created, members_changed(m, members))
        }
        JsonEffect::Members(members) | JsonEffect::Document(members) => {
            let reply = run(ctx, command, argv)?;
            let changed = if matched(&reply) { members_changed(m, members) } else { Fields::new() };
            (reply, changed)
        }
        JsonEffect::Merged { members, reread } => {
            if target.role == KeyRole::Temp {
                for member in &reread {
                    stage_from_row(ctx, m, target, key, member)?;
                }
            }
            let reply = run(ctx, command, argv)?;
            let mut changed = Fields::new();
            if matched(&reply) {
                changed = members_changed(m, members);
                for member in reread {
                    changed.insert(member.clone().into_bytes(), member_now(ctx, m, key, &member));
                }
            }
            (reply, changed)
        }
        JsonEffect::Below(member) | JsonEffect::Reread(member) => {
            if target.role == KeyRole::Temp {
                stage_from_row(ctx, m, target, key, &member)?;
            }
            let reply = run(ctx, command, argv)?;
            let changed =
                if matched(&reply) { one(member.clone(), member_now(ctx, m, key, &member)) } else { Fields::new() };
            (reply, changed)
        }
        JsonEffect::Incr { member, delta } => increment(ctx, command, argv, &rest, cold, member, delta)?,
    };
    let version = match fields.is_empty() {
        true => None,
        false => record(ctx, rt, target, key, Write { op: RowOp::Upsert, fields, acks: Vec::new() }),
    };
    Ok((reply, version))
}

/// `JSON.SET key $.member.a.b value` (names only, no `NX`/`XX`) on a
/// write-behind row key, or a write-through staging key, that holds no such
/// member (no key, no member, or `null`; in write-through, the cached row
/// neither), which RedisJSON would refuse, when the member's column is known
/// to be `json`/`jsonb`: the path is set in Postgres inside that column
/// (`model/json_path_set.rs`), replying `OK` as a set does. Redis holds
/// nothing for the member meanwhile, never a part of it that would look whole;
/// after the commit, apply writes the member as Postgres has it into the row
/// key (write-behind: if Redis holds the key then, as it sets a sum;
/// write-through: merged into the row's document, as every committed member
/// is). `None`: not such a write, which runs as it is.
fn cold_path_set(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    command: JsonCommand,
    argv: &[RedisString],
    rest: &[&[u8]],
    member: &str,
) -> Result<Option<(ClientReply, Option<u64>)>, RedisError> {
    let Some((member, set)) = json_intent::path_set(command, rest).filter(|(named, _)| named == member) else {
        return Ok(None);
    };
    // Only a column Postgres keeps the path in: a member no column takes lives
    // in Redis alone, and before the schema is known the column's type is not.
    let m = rt.mapping(target.mapping).def;
    let json_column = rt.schema(target.mapping).is_some_and(|schema| {
        let column = m.column_for(&member).and_then(|c| schema.columns.get(c));
        column.is_some_and(|c| MemberKind::of(&c.key_type.0) == MemberKind::Json)
    });
    if !json_column {
        return Ok(None);
    }
    let key = argv[1].as_slice();
    // A key that holds no JSON object is RedisJSON's to refuse.
    let lacks = |key: &[u8]| {
        json_doc::members(ctx, key, &[member.as_bytes()]).is_some_and(|held| held.iter().all(Option::is_none))
    };
    if !lacks(key) {
        return Ok(None);
    }
    // Write-through: a member the cached row holds is staged from it first
    // (`stage_from_row`), and the write runs in Redis on the whole member.
    if target.role == KeyRole::Temp && !lacks(m.main_key(&target.id).as_bytes()) {
        return Ok(None);
    }
    // Nothing runs as the caller: the caller must still be allowed to run it.
    Caller::of(ctx).and_then(|caller| caller.check_command(ctx, argv))?;
    let write = Write { op: RowOp::Upsert, fields: one(member, FieldChange::Paths(vec![set])), acks: Vec::new() };
    let version = record(ctx, rt, target, key, write);
    Ok(Some((ClientReply::Direct(RedisValue::SimpleStringStatic("OK")), version)))
}

/// A write inside a member, in place on it or merged into it, on a
/// write-through staging document that lacks the member: the cached row's member, when Redis holds
/// it, is staged first, so that the write changes the row's value as it does
/// on a write-behind key (`JSON.SET __{acct:1} $.profile.zip '"0150"'` keeps
/// the profile's other members). Without one, the write runs on what is staged.
fn stage_from_row(ctx: &Context, m: &Mapping, target: &Target, staged: &[u8], member: &str) -> RedisResult<()> {
    let name = [member.as_bytes()];
    if json_doc::members(ctx, staged, &name).is_none_or(|held| held.iter().any(Option::is_some)) {
        return Ok(());
    }
    let row = m.main_key(&target.id);
    let Some(Some(value)) = json_doc::members(ctx, row.as_bytes(), &name).and_then(|v| v.into_iter().next()) else {
        return Ok(());
    };
    create(ctx, staged, &[(member.to_string(), Some(value))]).map(drop)
}

/// Whether a member is rgsync's `#` field.
fn is_op(member: &str) -> bool {
    member.as_bytes() == OP_FIELD
}

/// `JSON.SET key $ '{..., "#": "=6ce0ab"}'`: rgsync's `#` operation as a member
/// of a root set, carried out as `HSET key # ...` is (`capture::tagged_write`:
/// `=` with its ack, `~`, `+`, `-`); the document is written without it.
fn tagged(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    argv: &[RedisString],
    members: Vec<(String, Option<String>)>,
) -> Result<(ClientReply, Option<u64>), RedisError> {
    if argv.len() != 4 {
        return Err(refusal(ctx, rt, target, argv, &"the # member does not go with NX or XX"));
    }
    let m = rt.mapping(target.mapping).def;
    let (ops, members): (Vec<_>, Vec<_>) = members.into_iter().partition(|(n, _)| is_op(n));
    let op = ops.into_iter().last().and_then(|(_, v)| v).map(|v| json_intent::column_text(&v)).unwrap_or_default();
    let key = argv[1].as_slice();
    let document = json_row::without_member(&String::from_utf8_lossy(argv[3].as_slice()), "#").unwrap_or_default();
    let fields = members_changed(m, members.clone());
    let write = |to: &[u8]| {
        if to != key {
            // `+` in write-through: merged into the cached row, as HSET merges.
            return create(ctx, to, &members).map(drop);
        }
        // Nothing else staged stages nothing (no `{}` left behind).
        match document.as_str() {
            "{}" => Ok(()),
            doc => call_named_as_client(ctx, "JSON.SET", true, &[to, b"$", doc.as_bytes()]).map(drop),
        }
    };
    let version = tagged_write(ctx, rt, target, key, &op, fields, write)?;
    Ok((ClientReply::Direct(RedisValue::SimpleStringStatic("OK")), version))
}

/// `JSON.NUMINCRBY` of `member`: recorded as an `Add` with the value Redis
/// returned. With no member to add to (a key or member Redis does not hold),
/// the member becomes the increment, which Postgres adds to the row's own
/// value, as `HINCRBY` on a missing field; a member that is no number
/// (`[null]`) changes nothing.
fn increment(
    ctx: &Context,
    command: JsonCommand,
    argv: &[RedisString],
    rest: &[&[u8]],
    cold: bool,
    member: String,
    delta: Delta,
) -> Result<(ClientReply, Fields), RedisError> {
    let reply = if cold { None } else { Some(run(ctx, command, argv)?) };
    if let Some(reply) = reply.filter(matched) {
        let fields = match incremented(&reply) {
            Some(after) => one(member, FieldChange::Add { delta, redis_after: after }),
            None => Fields::new(),
        };
        return Ok((reply, fields));
    }
    let text = delta.to_text();
    create(ctx, argv[1].as_slice(), &[(member.clone(), Some(MemberKind::Number.member(&text)))])?;
    let legacy = !rest.first().is_some_and(|p| p.starts_with(b"$"));
    let shown = if legacy { text.clone() } else { format!("[{text}]") };
    let change = FieldChange::Add { delta, redis_after: text.into_bytes() };
    Ok((ClientReply::Direct(RedisValue::BulkString(shown)), one(member, change)))
}

/// `SYNC.JSONWRITE JSON.MSET key path value [key path value ...]`: each triple
/// on a synced key is read and checked as a `JSON.SET`, the command runs once
/// (RedisJSON sets all or nothing), then each triple is recorded. A member
/// path into a key Redis does not hold fails the whole command, as RedisJSON
/// makes it (`JSON.SET` creates the document instead).
fn sync_jsonmset(ctx: &Context, rt: &Runtime, args: &[RedisString]) -> RedisResult {
    let argv = &args[1..];
    if args.len() < 5 || !(args.len() - 2).is_multiple_of(3) {
        return run(ctx, JsonCommand::MSet, argv)?.forward(ctx);
    }
    // The wrapper declares one key; the others must share its slot, as
    // JSON.MSET's own key specs would have made the cluster check.
    if cluster::enabled() && args[2..].chunks(3).any(|t| key_slot(t[0].as_slice()) != key_slot(args[2].as_slice())) {
        return Err(RedisError::Str("CROSSSLOT Keys in request don't hash to the same slot"));
    }
    let mut writes = Vec::new();
    for triple in args[2..].chunks(3) {
        let Some(target) = target_of(ctx, rt, triple[0].as_slice())? else { continue };
        let one_set = [args[1].clone(), triple[0].clone(), triple[1].clone(), triple[2].clone()];
        let effect = match json_intent::parse(JsonCommand::MSet, &[triple[1].as_slice(), triple[2].as_slice()]) {
            Ok(Some(effect)) => replacing(rt, &target, effect),
            Ok(None) => return run(ctx, JsonCommand::MSet, argv)?.forward(ctx),
            Err(why) => return Err(refusal(ctx, rt, &target, &one_set, &why)),
        };
        check(ctx, rt, &target, &one_set, &effect)?;
        writes.push((target, triple[0].as_slice(), effect));
    }
    let reply = run(ctx, JsonCommand::MSet, argv)?;
    for (target, key, effect) in writes {
        let m = rt.mapping(target.mapping).def;
        let fields = match effect {
            JsonEffect::Members(members) | JsonEffect::Document(members) => members_changed(m, members),
            JsonEffect::Below(member) => one(member.clone(), member_now(ctx, m, key, &member)),
            _ => Fields::new(),
        };
        if !fields.is_empty() {
            record(ctx, rt, &target, key, Write { op: RowOp::Upsert, fields, acks: Vec::new() });
        }
    }
    reply.forward(ctx)
}

/// With `"on_set": "replace"`, a root set's omitted mapped members become NULL.
fn replacing(rt: &Runtime, target: &Target, effect: JsonEffect) -> JsonEffect {
    let m = rt.mapping(target.mapping).def;
    match (m.on_set, &m.fields) {
        (OnSet::Replace, Some(fields)) => effect.omitted_as_null(fields.keys()),
        _ => effect,
    }
}

/// Whether a `JSON.SET` on a key Redis does not hold names one member (which
/// RedisJSON would refuse: the module creates the document) without `XX`.
/// A root set creates the document itself.
fn creates_member(command: JsonCommand, args: &[&[u8]]) -> bool {
    let member = args.first().is_some_and(|p| matches!(json_intent::place(p), Ok(json_intent::Place::Member(_))));
    command == JsonCommand::Set && member && !args.iter().skip(2).any(|f| f.eq_ignore_ascii_case(b"XX"))
}

/// Runs the JSON command as the caller.
fn run(ctx: &Context, command: JsonCommand, argv: &[RedisString]) -> Result<ClientReply, RedisError> {
    let args: Vec<&[u8]> = argv[1..].iter().map(|a| a.as_slice()).collect();
    call_named_as_client(ctx, command.name(), command.deny_oom(), &args)
}

/// Writes `members` into the document at `key` (a missing key becomes one), as
/// the caller's `JSON.SET key $ <document>`; replies as `JSON.SET` does.
fn create(ctx: &Context, key: &[u8], members: &[(String, Option<String>)]) -> Result<ClientReply, RedisError> {
    let written =
        json_doc::merge_into(ctx, key, members, |args| call_named_as_client(ctx, "JSON.SET", true, args).map(drop));
    match written {
        // The client's own JSON.SET failed: its error is the reply, as is.
        Err(DocError::Write(e)) => Err(e),
        Err(why) => Err(replies::error(why)),
        Ok(_) => Ok(ClientReply::Direct(RedisValue::SimpleStringStatic("OK"))),
    }
}

/// Whether a JSON write's reply says its path matched something: a nil reply
/// (`JSON.SET ... NX|XX` that did not set, a path whose parent is missing) or an
/// empty list of results (`[]`) wrote nothing. `JSON.DEL`'s count of 0 still
/// counts: removing a member Redis did not hold still makes its column NULL.
fn matched(reply: &ClientReply) -> bool {
    match reply {
        ClientReply::Called(CallReply::Null(_)) => false,
        ClientReply::Called(CallReply::Array(items)) => items.len() > 0,
        ClientReply::Called(CallReply::String(s)) => s.as_bytes() != b"[]",
        _ => true,
    }
}

/// Members set or removed, as the column changes they make.
fn members_changed(m: &Mapping, members: Vec<(String, Option<String>)>) -> Fields {
    members
        .into_iter()
        .map(|(name, value)| {
            let change =
                value.map_or(FieldChange::Remove, |v| FieldChange::Set(json_intent::captured_text(m, &name, &v)));
            (name.into_bytes(), change)
        })
        .collect()
}

/// A member's whole value after a write inside it, as its column's change.
fn member_now(ctx: &Context, m: &Mapping, key: &[u8], member: &str) -> FieldChange {
    let doc = match ctx.call("JSON.GET", &[key]) {
        Ok(value) => bytes(&value),
        Err(_) => None,
    };
    let members = doc.and_then(|d| json_row::object_members(&String::from_utf8_lossy(&d)));
    let now = members.and_then(|m| m.into_iter().find(|(n, _)| n == member)).map(|(_, v)| v);
    match now {
        Some(v) if v != "null" => FieldChange::Set(json_intent::captured_text(m, member, &v)),
        _ => FieldChange::Remove,
    }
}

/// The member's value after `JSON.NUMINCRBY`, as RESP2 (`[8]`, `8`) or RESP3
/// (an array of numbers) gives it; `None` when no member was a number.
fn incremented(reply: &ClientReply) -> Option<Vec<u8>> {
    let ClientReply::Called(reply) = reply else { return None };
    let number = |r: &CallReply| match r {
        CallReply::I64(n) => Some(n.to_i64().to_string().into_bytes()),
        CallReply::Double(d) => json_intent::incremented(d.to_double().to_string().as_bytes()),
        CallReply::String(s) => json_intent::incremented(s.as_bytes()),
        _ => None,
    };
    match reply {
        CallReply::Array(items) => items.get(0).and_then(|r| r.ok()).and_then(|r| number(&r)),
        other => number(other),
    }
}

/// Refuses what Postgres would certainly refuse, before anything runs: values
/// of the wrong type for their column (`value_refusal`), an object or array for
/// a column that is not `json`/`jsonb`, a write inside a member whose column is
/// not one.
fn check(ctx: &Context, rt: &Runtime, target: &Target, argv: &[RedisString], effect: &JsonEffect) -> RedisResult<()> {
    let m = rt.mapping(target.mapping).def;
    let Some(schema) = rt.schema(target.mapping) else { return Ok(()) };
    let is_json_column = |member: &str| {
        let column = m.column_for(member).and_then(|c| schema.columns.get(c));
        column.is_none_or(|c| MemberKind::of(&c.key_type.0) == MemberKind::Json)
    };
    let structured = match effect {
        JsonEffect::Members(members) | JsonEffect::Document(members) => members
            .iter()
            .find(|(name, v)| v.as_deref().is_some_and(json_intent::is_structured) && !is_json_column(name))
            .map(|(name, _)| {
                format!("member \"{name}\" holds an object or array, and its column is not json or jsonb")
            }),
        JsonEffect::Below(name) if !is_json_column(name) => {
            Some(format!("a write inside member \"{name}\" needs a json or jsonb column"))
        }
        JsonEffect::Merged { members, reread } => members
            .iter()
            .find(|(name, v)| v.as_deref().is_some_and(json_intent::is_structured) && !is_json_column(name))
            .map(|(name, _)| name)
            .or(reread.iter().find(|name| !is_json_column(name)))
            .map(|name| format!("member \"{name}\" holds an object or array, and its column is not json or jsonb")),
        _ => None,
    };
    if let Some(why) = structured {
        return Err(refusal(ctx, rt, target, argv, &why));
    }
    let (JsonEffect::Members(members) | JsonEffect::Document(members) | JsonEffect::Merged { members, .. }) = effect
    else {
        return Ok(());
    };
    let (sets, removes): (Vec<_>, Vec<_>) = members.iter().partition(|(_, v)| v.is_some());
    let sets =
        sets.into_iter().filter_map(|(n, v)| Some((n.as_bytes().to_vec(), json_intent::column_text(v.as_deref()?))));
    value_refusal::check(ctx, rt, target, argv, &Effect::Set(sets.collect()))?;
    let removes = removes.into_iter().map(|(n, _)| n.as_bytes().to_vec()).collect();
    value_refusal::check(ctx, rt, target, argv, &Effect::Remove(removes))
}

/// Counts, logs and returns the refusal of a write; a caller who may not run
/// the command hears that instead.
fn refusal(
    ctx: &Context,
    rt: &Runtime,
    target: &Target,
    argv: &[RedisString],
    why: &dyn std::fmt::Display,
) -> RedisError {
    if let Err(e) = Caller::of(ctx).and_then(|caller| caller.check_command(ctx, argv)) {
        return e;
    }
    let m = rt.mapping(target.mapping).def;
    let key = argv.get(1).map(|k| k.as_slice()).unwrap_or_default();
    let message = format!("{}: write to {} refused: {why}", m.name, key.escape_ascii());
    refuse(rt, target.mapping, &message);
    replies::refused(&message)
}

/// One member's change.
fn one(member: String, change: FieldChange) -> Fields {
    [(member.into_bytes(), change)].into_iter().collect()
}
