//! Rampart: a Kubernetes operator that keeps namespaces hardened.
//!
//! `reconcile` (in [`controller`]) only sequences: observe (API) → desired objects and drift
//! ([`selection`], [`controls`], pure) → apply ([`apply`], API) → status ([`status`], pure
//! compute, then one API write when it changed).
#![forbid(unsafe_code)]
// Errors carry the kube::Error that caused them; they are rare and on the slow path, so their
// size is not worth a box at every construction site.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod apply;
pub mod controller;
pub mod controls;
pub mod fence;
pub mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod schedule;
pub mod selection;
pub mod status;
pub mod trim;
pub mod workloads;

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

    #[error("reading {kind}: {source}")]
    Read {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },

    #[error("{count} of {total} writes failed for profile {profile}; first: {first}")]
    PartialApply {
        profile: String,
        count: usize,
        total: usize,
        first: String,
    },

    #[error("profile has no name or uid")]
    MissingIdentity,

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
            Error::Read { .. } => "ReadFailed",
            Error::PartialApply { .. } => "ApplyFailed",
            Error::MissingIdentity => "InvalidObject",
            Error::Encode { .. } => "EncodeFailed",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
