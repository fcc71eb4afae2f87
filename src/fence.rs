//! Write fencing: the one switch every write of this process passes, so a replica that may have
//! lost its lease writes nothing. Pure state plus a tower layer on the kube client; the lease
//! itself is kept by [`crate::leader`].
//!
//! The fence is judged from the monotonic clock at the moment a request is made, never by a
//! task that must get to run first: a process that was frozen (SIGSTOP, a stalled VM, a long
//! GC-like pause) and wakes after its lease ran out finds the fence closed before any queued
//! reconcile can send a write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Method, Request};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// May this process write now? Shared by the leader elector (which opens and closes it) and
/// the kube client (which asks it before every mutating request).
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Arc<FenceState>,
}

#[derive(Debug)]
struct FenceState {
    /// Without leader election the fence is always open.
    always_open: bool,
    closed_for_good: AtomicBool,
    /// The fence is open until this instant (lease renewed at `t` opens it until
    /// `t + renew_deadline`, well before any other replica may take the lease over).
    open_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// Open for good: a single replica without leader election.
    pub fn always_open() -> Self {
        Self::with(true)
    }

    /// Closed until [`Fence::open_until`] is called by the leader elector.
    pub fn closed() -> Self {
        Self::with(false)
    }

    fn with(always_open: bool) -> Self {
        Self {
            inner: Arc::new(FenceState {
                always_open,
                closed_for_good: AtomicBool::new(false),
                open_until: Mutex::new(None),
            }),
        }
    }

    /// Opens (or keeps open) the fence until `deadline`; never moves an earlier-set deadline
    /// backwards, so a slow renewal that completes late cannot shorten a later one.
    pub fn open_until(&self, deadline: Instant) {
        if let Ok(mut until) = self.inner.open_until.lock() {
            *until = Some(until.map_or(deadline, |u| u.max(deadline)));
        }
    }

    /// Closes the fence for the rest of the process (shutdown, lease lost).
    pub fn close(&self) {
        self.inner.closed_for_good.store(true, Ordering::SeqCst);
        if let Ok(mut until) = self.inner.open_until.lock() {
            *until = None;
        }
    }

    /// Whether a write may be sent at `now`.
    pub fn may_write_at(&self, now: Instant) -> bool {
        if self.inner.closed_for_good.load(Ordering::SeqCst) {
            return false;
        }
        if self.inner.always_open {
            return true;
        }
        self.deadline().is_some_and(|d| now < d)
    }

    /// Whether a write may be sent now.
    pub fn may_write(&self) -> bool {
        self.may_write_at(Instant::now())
    }

    /// When the fence closes unless renewed; `None` when it is closed or always open.
    fn deadline(&self) -> Option<Instant> {
        self.inner.open_until.lock().ok().and_then(|u| *u)
    }
}

/// The error a fenced write fails with.
#[derive(Debug, thiserror::Error)]
#[error("write refused: this replica does not hold the leader lease (fenced)")]
pub struct Fenced;

/// Reads pass; mutating requests pass only while the fence is open, and are cut off (the
/// request dropped) if they are still in flight when it closes.
#[derive(Clone)]
pub struct FenceLayer(pub Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = FencedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FencedService {
            inner,
            fence: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct FencedService<S> {
    inner: S,
    fence: Fence,
}

fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl<S, B> Service<Request<B>> for FencedService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !mutating(req.method()) {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        if !self.fence.may_write() {
            return Box::pin(async { Err(Box::new(Fenced) as BoxError) });
        }
        let fut = self.inner.call(req);
        match self.fence.deadline() {
            // A write still waiting for its answer when the fence closes is dropped, so the
            // process stops sending the moment it may no longer be the only writer.
            Some(deadline) => Box::pin(async move {
                match tokio::time::timeout_at(deadline.into(), fut).await {
                    Ok(r) => r.map_err(Into::into),
                    Err(_) => Err(Box::new(Fenced) as BoxError),
                }
            }),
            None => Box::pin(async move { fut.await.map_err(Into::into) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_closed_fence_opens_only_until_its_deadline() {
        let f = Fence::closed();
        let t0 = Instant::now();
        assert!(!f.may_write_at(t0), "closed until a lease is held");
        f.open_until(t0 + Duration::from_secs(10));
        assert!(f.may_write_at(t0 + Duration::from_secs(9)));
        assert!(
            !f.may_write_at(t0 + Duration::from_secs(10)),
            "no write once the deadline passed, whether or not anyone noticed"
        );
    }

    #[test]
    fn a_late_renewal_never_shortens_the_deadline() {
        let f = Fence::closed();
        let t0 = Instant::now();
        f.open_until(t0 + Duration::from_secs(10));
        f.open_until(t0 + Duration::from_secs(4));
        assert!(f.may_write_at(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn close_is_for_good_even_when_always_open() {
        let f = Fence::always_open();
        assert!(f.may_write());
        f.close();
        assert!(!f.may_write());
        f.open_until(Instant::now() + Duration::from_secs(60));
        assert!(!f.may_write(), "a closed fence stays closed");
    }

    #[test]
    fn only_mutating_methods_are_fenced() {
        assert!(!mutating(&Method::GET));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(mutating(&m));
        }
    }
}
