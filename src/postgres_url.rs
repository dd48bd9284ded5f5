//! The Postgres URL config, between Redis and Postgres: `CONFIG GET` shows it with
//! its password hidden, and the module connects with the real one.

use crate::pg::conninfo::redact;
use crate::redis::config::{SecretUrl, POSTGRES_URL};
use redis_module::configuration::{ConfigurationContext, ConfigurationValue};
use redis_module::{RedisError, RedisString};

impl ConfigurationValue<RedisString> for SecretUrl {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, redact(&self.get()).as_str())
    }

    fn set(&self, _ctx: &ConfigurationContext, value: RedisString) -> Result<(), RedisError> {
        SecretUrl::set(self, value.try_as_str()?.to_string());
        Ok(())
    }
}

/// The Postgres URL to connect with. `CONFIG REWRITE` saves what `CONFIG GET`
/// shows, the URL with its password hidden, as a `pgsync.postgres-url` line that
/// overrides the `loadmodule` arguments at the next start; the real URL is then
/// still among those arguments (`args`), and is used.
pub fn postgres_url(args: &[String]) -> String {
    let url = POSTGRES_URL.get();
    let from_args = args.chunks(2).find(|pair| pair[0] == "postgres-url").and_then(|pair| pair.get(1));
    match from_args {
        Some(real) if *real != url && redact(real) == url => real.clone(),
        _ => url,
    }
}
