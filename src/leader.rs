//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas exactly one
//! reconciles. The decision is pure (`decide`, time is an argument); `LeaderElector` does the
//! API calls.
//!
//! Safety comes from timing: the leader must renew within `renew_deadline`, which is shorter
//! than the lease duration. A leader that cannot renew in time exits the process at once,
//! before any other replica may take the lease, so two replicas never write together.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

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
    pub renewed: Option<DateTime<Utc>>,
    pub duration: Duration,
}

/// Decides from the observed lease (None when it does not exist yet).
pub fn decide(lease: Option<&LeaseView>, me: &str, now: DateTime<Utc>) -> Decision {
    let Some(l) = lease else {
        return Decision::Acquire;
    };
    match l.holder.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let expired = match l.renewed {
                Some(t) => chrono::Duration::from_std(l.duration)
                    .map(|d| t + d < now)
                    .unwrap_or(true),
                None => true,
            };
            if expired {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

/// Timings, after client-go's defaults scaled for a small operator.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    me: String,
    timings: Timings,
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
        renewed: spec
            .renew_time
            .and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond())),
        duration: spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(fallback),
    }
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, me: &str, timings: Timings) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: me.to_string(),
            timings,
        }
    }

    /// One round: observe, decide, write. Ok(true) when we hold the lease afterwards.
    async fn try_once(&self) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current
                .as_ref()
                .map(|l| view(l, self.timings.lease_duration))
                .as_ref(),
            &self.me,
            now,
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
            (Decision::Wait, _) => Ok(false),
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec(None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await?;
                Ok(true)
            }
            (d, Some(mut lease)) => {
                // The resourceVersion from our read makes this a compare-and-swap: if another
                // replica wrote in between, the API server refuses ours.
                lease.spec = Some(spec(lease.spec.as_ref(), d == Decision::Acquire));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
                Ok(true)
            }
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_once().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.me, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews for as long as it can; returns when renewal failed for `renew_deadline`, at
    /// which point the caller must stop writing at once.
    pub async fn hold(&self) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            match self.try_once().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.name, "another replica holds the lease");
                    return;
                }
                Err(e) => warn!(error = %e, "renewing the lease failed"),
            }
            if last_ok.elapsed() >= self.timings.renew_deadline {
                warn!(lease = %self.name, "could not renew the lease in time");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            renewed: Some(at(renewed)),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn lease_decisions() {
        assert_eq!(decide(None, "a", at(0)), Decision::Acquire);
        assert_eq!(decide(Some(&held_by("a", 0)), "a", at(5)), Decision::Renew);
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", at(14)),
            Decision::Wait,
            "a live lease is respected"
        );
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", at(16)),
            Decision::Acquire,
            "an expired lease is taken"
        );
        let released = LeaseView {
            holder: Some(String::new()),
            renewed: None,
            duration: Duration::from_secs(15),
        };
        assert_eq!(decide(Some(&released), "a", at(0)), Decision::Acquire);
    }
}
