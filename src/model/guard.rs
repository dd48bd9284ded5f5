//! The one panic guard of every entry point that Redis or a thread of ours calls
//! into (commands, keyspace handlers, server events, INFO, threads): a panic is a
//! bug, and one unwinding into redis-server would abort the whole server.

/// Runs `f`, turning a panic into `Err` with its message. The panic hook set at
/// load has already logged it with its location.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // AssertUnwindSafe: what `f` leaves half-done is either restored on unwind
    // (`own_writes`, the reload mark) or behind mutexes whose users recover from
    // poisoning, so carrying on after a caught panic is sound.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| panic_message(&panic))
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
    use super::catch;

    #[test]
    fn a_value_passes_through() {
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| -> i32 { panic!("static text") }), Err("static text".to_string()));
        let id = 42;
        assert_eq!(catch(|| -> i32 { panic!("formatted {id}") }), Err("formatted 42".to_string()));
    }
}
