//! rgsync-compatible ack streams: a change tagged `# =<uuid>` gets its outcome in
//! the stream `{<prefix><id>}<uuid>` as `status done` or `status failed error <text>`.

use crate::model::mapping::Mapping;
use crate::model::queue::Outcome;
use crate::redis::redis_io::call_logged;
use redis_module::Context;

/// How long an ack stream is kept after its last entry.
pub const ACK_TTL_SECS: &str = "3600";

/// Writes the outcome of a change to each of its ack streams.
pub fn send(ctx: &Context, mapping: &Mapping, id: &str, uuids: &[String], outcome: &Outcome) {
    for uuid in uuids {
        let stream = mapping.ack_stream(id, uuid);
        let stream = stream.as_bytes();
        match outcome {
            Ok(()) => call_logged(ctx, "XADD", &[stream, b"*", b"status", b"done"]),
            Err(e) => call_logged(ctx, "XADD", &[stream, b"*", b"status", b"failed", b"error", e.0.as_bytes()]),
        }
        call_logged(ctx, "EXPIRE", &[stream, ACK_TTL_SECS.as_bytes()]);
    }
}
