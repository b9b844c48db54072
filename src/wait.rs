//! Waiting for the device, natively and in a browser, with one implementation.
//!
//! Everything that waits on a GPU (adapter and device creation, reading results back) is written
//! once as an `async fn`. Natively a GPU future finishes on its first poll, because it polls the
//! device until the work is done, and the blocking calls (`Model::train_step`, ...) are
//! [`block_on`] over the async ones (`Model::train_step_async`, ...). In a browser nothing can
//! block: the GPU's promises resolve only once control returns to the event loop, so the page
//! awaits the async calls, and a blocking call whose future is not ready at once is an error that
//! names the async call to use. The CPU devices are never pending, so their blocking calls work
//! in a browser too.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::Result;

/// Runs `future` to its end. Natively this blocks; in a browser (wasm32) a future that is still
/// pending after one poll is an error: `what` names the call, whose `_async` twin the page must
/// await instead.
pub fn block_on<T>(what: &'static str, future: impl Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = what;
        pollster::block_on(future)
    }
    #[cfg(target_arch = "wasm32")]
    {
        match std::pin::pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(crate::error::Error::invalid(
                what,
                "a browser cannot block until the GPU is done: await the _async version of this call",
            )),
        }
    }
}

/// A value that a callback delivers later (a buffer mapped, an adapter found), as a future.
pub(crate) struct Promise<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender went away without a value (its callback was dropped uncalled).
    abandoned: bool,
}

/// The callback's end of a [`Promise`].
pub(crate) struct Resolver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

pub(crate) fn promise<T>() -> (Resolver<T>, Promise<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None, abandoned: false }));
    (Resolver { slot: slot.clone() }, Promise { slot })
}

impl<T> Resolver<T> {
    pub fn resolve(self, value: T) {
        let waker = {
            let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Resolver<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            s.abandoned = s.value.is_none();
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Promise<T> {
    /// `None` when the callback was dropped without being called.
    type Output = Option<T>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.abandoned {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promise_resolves_and_block_on_returns_its_value() {
        let (tx, rx) = promise();
        let t = std::thread::spawn(move || tx.resolve(7));
        let got = block_on("test", async { Ok(rx.await) }).unwrap();
        t.join().unwrap();
        assert_eq!(got, Some(7));
    }

    #[test]
    fn a_dropped_resolver_ends_the_wait_with_none() {
        let (tx, rx) = promise::<u32>();
        drop(tx);
        assert_eq!(block_on("test", async { Ok(rx.await) }).unwrap(), None);
    }
}
