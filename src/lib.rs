//! Rampart: a Kubernetes operator that keeps namespaces hardened.
//!
//! `reconcile` (in [`controller`]) only sequences: observe ([`observe`], the watch caches) →
//! plan each control ([`selection`], [`controls`], pure: an `Outcome` of writes, drift,
//! findings and events) → execute ([`apply::Writer`], the only place that writes, or in Audit
//! mode does not) → status ([`status`], pure, then one API write when it changed), with
//! [`events`] about what happened and [`incremental`] keeping the work to what changed.
#![forbid(unsafe_code)]
// Errors carry the kube::Error that caused them; they are rare and on the slow path, so their
// size is not worth a box at every construction site.
#![allow(clippy::result_large_err)]

pub mod admission_policy;
pub mod api;
pub mod apply;
pub mod cli;
pub mod coalesce;
pub mod controller;
pub mod controls;
pub mod events;
pub mod fence;
pub mod http;
pub mod import;
pub mod incremental;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod ownership;
pub mod pass;
pub mod quantity;
pub mod reports;
pub mod request_metrics;
pub mod schedule;
pub mod selection;
pub mod status;
pub mod written_status;

/// Everything that can go wrong in a reconcile, each with a fixed [`Error::category`] used as a
/// metric label and event reason, never a free-form string.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} {kind} {namespace}/{name}: {source}")]
    Write {
        verb: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("writing status of profile {profile}: {source}")]
    StatusWrite {
        profile: String,
        #[source]
        source: kube::Error,
    },

    #[error("finalizer of profile {profile}: {source}")]
    Finalizer {
        profile: String,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },

    #[error("{count} of {total} writes failed for profile {profile}; first: {first}")]
    PartialApply {
        profile: String,
        count: usize,
        total: usize,
        first: String,
    },

    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("profile has no name or uid")]
    MissingIdentity,

    #[error("profile {profile} waits for {count} rotation hook Job(s) still running before it goes, first {first}")]
    HooksRunning {
        profile: String,
        count: usize,
        first: String,
    },

    #[error("encoding {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A fixed label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Write { .. } => "ApplyFailed",
            Error::StatusWrite { .. } => "StatusWriteFailed",
            Error::Finalizer { .. } => "CleanupFailed",
            Error::PartialApply { .. } => "ApplyFailed",
            Error::Read { .. } => "ReadFailed",
            Error::MissingIdentity => "InvalidObject",
            Error::HooksRunning { .. } => "HooksRunning",
            Error::Encode { .. } => "EncodeFailed",
        }
    }

    /// A [`Error::PartialApply`] when any of a pass's writes failed: every write was
    /// attempted, and the first failure says what and where.
    pub fn if_any_failed(profile: &str, applied: &[apply::Applied]) -> Result<(), Error> {
        let failures: Vec<&Error> = applied
            .iter()
            .filter_map(|a| a.effect.as_ref().err())
            .collect();
        match failures.first() {
            None => Ok(()),
            Some(first) => Err(Error::PartialApply {
                profile: profile.to_string(),
                count: failures.len(),
                total: applied.len(),
                first: first.to_string(),
            }),
        }
    }

    /// The category of what failed inside the finalizer's apply or cleanup, or this one's.
    pub fn root_category(&self) -> &'static str {
        match self {
            Error::Finalizer { source, .. } => match source.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => self.category(),
            },
            _ => self.category(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
