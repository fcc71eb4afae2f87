//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas exactly one
//! writes. The decision is pure ([`decide`]: time is an argument); [`LeaderElector`] does the
//! API calls and keeps the write [`Fence`].
//!
//! Safety comes from three rules:
//! - every lease call has a timeout well under the renew deadline, so a hung connection can
//!   never keep the loop from noticing that renewal failed;
//! - the fence opens only until `renew started + renew_deadline`, which is earlier than any
//!   other replica may take the lease (`lease_duration` after it *saw* that renewal), so the
//!   leader stops writing before another may start, even if it was frozen in between;
//! - a standby judges expiry from its own clock: how long the lease has gone unchanged since
//!   it last saw it change, never the holder's `renewTime`, which a skewed clock can make lie.
//!
//! On shutdown the leader closes its fence first and then releases the lease, so a rolling
//! update hands over at once instead of after a lease duration.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::fence::Fence;

/// What a replica should do with the lease it observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live lease: wait.
    Wait,
}

/// The lease as far as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub duration: Duration,
}

/// Decides from the observed lease (None when it does not exist yet) and how long it has gone
/// unchanged by this replica's own clock.
pub fn decide(lease: Option<&LeaseView>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(l) = lease else {
        return Decision::Acquire;
    };
    match l.holder.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) if unchanged_for >= l.duration => Decision::Acquire,
        Some(_) => Decision::Wait,
    }
}

/// Timings, after client-go's defaults scaled for a small operator.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub lease_duration: Duration,
    /// The leader stops writing when it has not renewed for this long.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// The longest one lease call may take.
    pub call_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            call_timeout: Duration::from_secs(2),
        }
    }
}

/// The lease's identity as last seen (its resourceVersion) and when this replica saw it
/// change.
struct Observed {
    version: Option<String>,
    changed_at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    me: String,
    timings: Timings,
    fence: Fence,
    observed: Mutex<Option<Observed>>,
}

fn micro(t: DateTime<Utc>) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
        .ok()
        .map(MicroTime)
}

fn view(lease: &Lease, fallback: Duration) -> LeaseView {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseView {
        holder: spec.holder_identity,
        duration: spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(fallback),
    }
}

/// Why a lease call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease call timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl LeaderElector {
    /// `client` must not be fenced: the lease is how the fence opens. `fence` is the one the
    /// operator's own client asks before every write.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        me: &str,
        timings: Timings,
        fence: Fence,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: me.to_string(),
            timings,
            fence,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.me
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(self.timings.call_timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LeaseError::Timeout(self.timings.call_timeout)),
        }
    }

    /// How long the lease has gone unchanged by our clock, noting a change now.
    fn unchanged_for(&self, version: Option<&str>, now: Instant) -> Duration {
        let Ok(mut observed) = self.observed.lock() else {
            return Duration::ZERO;
        };
        match observed.as_ref() {
            Some(o) if o.version.as_deref() == version => now.duration_since(o.changed_at),
            _ => {
                *observed = Some(Observed {
                    version: version.map(String::from),
                    changed_at: now,
                });
                Duration::ZERO
            }
        }
    }

    /// One round: observe, decide, write. Ok(true) when we hold the lease afterwards, in
    /// which case the fence is open until `renew_deadline` after this round started.
    async fn try_once(&self) -> Result<bool, LeaseError> {
        let started = Instant::now();
        let now = Utc::now();
        let current = self.call(self.api.get_opt(&self.name)).await?;
        let decision = decide(
            current
                .as_ref()
                .map(|l| view(l, self.timings.lease_duration))
                .as_ref(),
            &self.me,
            self.unchanged_for(
                current
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.as_deref()),
                started,
            ),
        );
        let spec = |previous: Option<&LeaseSpec>, acquiring: bool| LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(self.timings.lease_duration.as_secs() as i32),
            acquire_time: if acquiring {
                micro(now)
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: micro(now),
            lease_transitions: Some(
                previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                    + i32::from(acquiring && previous.is_some()),
            ),
            ..Default::default()
        };
        match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec(None, true)),
                };
                self.call(self.api.create(&PostParams::default(), &lease))
                    .await?;
            }
            (d, Some(mut lease)) => {
                // The resourceVersion from our read makes this a compare-and-swap: if another
                // replica wrote in between, the API server refuses ours.
                lease.spec = Some(spec(lease.spec.as_ref(), d == Decision::Acquire));
                self.call(self.api.replace(&self.name, &PostParams::default(), &lease))
                    .await?;
            }
        }
        // Others count the lease's life from when they see this write, which is after we
        // started it: measured from `started`, our deadline is the earlier of the two.
        self.fence.open_until(started + self.timings.renew_deadline);
        Ok(true)
    }

    /// Waits until this replica holds the lease. Wakes on every change to the lease (a watch)
    /// as well as every retry period, so a released lease is taken at once.
    pub async fn acquire(&self) {
        let mut changes = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", self.name)),
        )
        .default_backoff()
        .boxed();
        loop {
            match self.try_once().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.me, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                _ = changes.next() => {}
                _ = tokio::time::sleep(self.timings.retry_period) => {}
            }
        }
    }

    /// Renews for as long as it can; returns when the lease is lost or could not be renewed
    /// before the fence closed. The fence has closed by itself by then; it is closed for good
    /// here too.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            match self.try_once().await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(lease = %self.name, "another replica holds the lease");
                    break;
                }
                Err(e) => warn!(error = %e, "renewing the lease failed"),
            }
            if !self.fence.may_write() {
                warn!(lease = %self.name, "could not renew the lease in time");
                break;
            }
        }
        self.fence.close();
    }

    /// Closes the fence, then gives the lease up if we still hold it, so a standby takes it at
    /// once. Best effort: if it fails, the lease simply expires.
    pub async fn release(&self) {
        self.fence.close();
        let result = async {
            let Some(mut lease) = self.call(self.api.get_opt(&self.name)).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = micro(Utc::now());
            self.call(self.api.replace(&self.name, &PostParams::default(), &lease))
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) => info!(lease = %self.name, "released the leader lease"),
            Err(e) => warn!(error = %e, "could not release the leader lease; it will expire"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            duration: Duration::from_secs(15),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_missing_or_released_lease_is_taken_at_once() {
        assert_eq!(decide(None, "a", secs(0)), Decision::Acquire);
        let released = LeaseView {
            holder: Some(String::new()),
            duration: secs(1),
        };
        assert_eq!(decide(Some(&released), "a", secs(0)), Decision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(decide(Some(&held_by("a")), "a", secs(60)), Decision::Renew);
    }

    #[test]
    fn a_live_lease_is_respected_until_it_goes_unchanged_for_its_duration() {
        assert_eq!(decide(Some(&held_by("b")), "a", secs(14)), Decision::Wait);
        assert_eq!(
            decide(Some(&held_by("b")), "a", secs(15)),
            Decision::Acquire,
            "unchanged for a whole duration by our own clock: the holder is gone"
        );
    }

    #[test]
    fn the_fence_closes_before_a_standby_may_take_over() {
        let t = Timings::default();
        assert!(
            t.renew_deadline + t.call_timeout < t.lease_duration,
            "a write cut off at the renew deadline must end before another replica may start"
        );
        assert!(
            t.call_timeout * 2 < t.renew_deadline,
            "a lease round (read and write) must fit several times in the renew deadline"
        );
    }
}
