//! The one panic guard of every entry point that Redis or a thread of ours calls
//! into (commands, keyspace handlers, server events, INFO, threads): a panic is a
//! bug, and one unwinding into redis-server would abort the whole server.

/// A caught panic: a bug, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic(pub String);

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Panic {}

/// Runs `f`, turning a panic into `Err` with its message. The panic hook set at
/// load has already logged it with its location.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    // AssertUnwindSafe: what `f` leaves half-done is either restored on unwind
    // (`own_writes`, the reload mark) or behind mutexes whose users recover from
    // poisoning, so carrying on after a caught panic is sound.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| Panic(panic_message(&panic)))
}

/// Runs an entry point that has nothing to return (an event handler): a panic is
/// logged by the hook and goes no further.
pub fn guard(f: impl FnOnce()) {
    let _ = catch(f);
}

/// Text of a caught panic.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::{catch, Panic};

    #[test]
    fn a_value_passes_through() {
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| -> i32 { panic!("static text") }), Err(Panic("static text".to_string())));
        let id = 42;
        assert_eq!(catch(|| -> i32 { panic!("formatted {id}") }), Err(Panic("formatted 42".to_string())));
    }
}
