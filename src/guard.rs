//! Running burn code that may panic on malformed input, turning the panic into an error
//! without printing it.
//!
//! burn asserts instead of returning errors in a few places a user's data can reach (a
//! record with another number of layers, an undecodable optimizer state). The crate checks
//! what it can before burn sees it; what is left runs under [`quietly`], which catches the
//! panic and keeps Rust's default hook from printing a message and a backtrace for a
//! failure the caller receives as a [`TransferError`](crate::TransferError) anyway.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Depth of [`quietly`] calls on this thread; the hook is silent while it is above 0.
    static QUIET: Cell<usize> = const { Cell::new(0) };
}

static INSTALL: Once = Once::new();

/// Wraps the process's panic hook once: panics inside [`quietly`] on this thread print
/// nothing, every other panic goes to the hook that was installed before (the default one,
/// or the application's own).
fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it (on this thread) becomes `Err` with the panic's message,
/// and is not printed.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    QUIET.with(|q| q.set(q.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get() - 1));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_the_flag_is_reset() {
        assert_eq!(quietly(|| 7), Ok(7));
        let err = quietly(|| -> u8 { panic!("bad {}", 3) }).unwrap_err();
        assert_eq!(err, "bad 3");
        let err = quietly(|| -> u8 { panic!("plain") }).unwrap_err();
        assert_eq!(err, "plain");
        assert_eq!(QUIET.with(Cell::get), 0);
        // Nested calls restore the outer depth.
        let outer = quietly(|| {
            let inner = quietly(|| -> u8 { panic!("inner") });
            (inner, QUIET.with(Cell::get))
        })
        .unwrap();
        assert_eq!(outer, (Err("inner".to_string()), 1));
    }
}
