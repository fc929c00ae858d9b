//! A future put in a box where it is made, instead of made and then copied in.
//!
//! Why: an async fn's future is as large as its largest state — the engine's route is three
//! kilobytes, a gateway request's more — although when it is made it holds only its arguments.
//! `Box::pin(f())` makes the future on the stack and then allocates and copies all of it, every
//! byte of every state; made here, the allocation comes first and the future is written into it
//! directly (the call's return slot is the box), so only what it holds is written.

use std::future::Future;
use std::pin::Pin;

/// `Box::pin(make())`, with the box allocated before `make` runs so that the future it returns
/// is written straight into it.
#[inline(always)]
pub fn pinned_box<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_boxed_future_runs_as_made() {
        let n = 41;
        let f = pinned_box(move || async move { n + 1 });
        assert_eq!(f.await, 42);
    }
}
