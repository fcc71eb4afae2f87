//! The operator under test: the harness's `OperatorProcess` running the release binary for
//! the bench's profiles, and the figures read from it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use rampart_e2e::{metric_sum, scrape, OperatorLaunch, OperatorProcess};

use crate::common::{proc_stats, ProcStats};
use crate::estate::RUN_LABEL;

pub struct Operator {
    process: OperatorProcess,
}

impl Operator {
    /// Starts `bin` for the profiles labelled `RUN_LABEL=<run>`, as the identity of
    /// `kubeconfig`, logging at warn (a bench should not measure its own logging).
    pub async fn start(bin: &Path, run: &str, log_name: &str, kubeconfig: &Path) -> Result<Self> {
        let process = OperatorProcess::launch(&OperatorLaunch {
            bin: bin.to_path_buf(),
            selector: format!("{RUN_LABEL}={run}"),
            extra: vec![],
            kubeconfig: kubeconfig.to_path_buf(),
            log_name: log_name.to_string(),
            env: vec![("RUST_LOG".into(), "warn".into())],
        })
        .await?;
        Ok(Self { process })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn stats(&self) -> ProcStats {
        proc_stats(self.pid())
    }

    /// `rampart_api_writes_total` for `profile`: every create, apply, delete, status write
    /// and event.
    pub async fn writes(&self, profile: &str) -> f64 {
        scrape(&self.process.metrics_addr)
            .await
            // `+ 0.0` turns the empty sum's -0 (no series yet) into 0 for the report.
            .map(|m| metric_sum(&m, "rampart_api_writes_total", &[("profile", profile)]) + 0.0)
            .unwrap_or(f64::NAN)
    }

    /// Waits until `rampart_profile_ready` is 1 for `profile` (at most `timeout`); how long.
    pub async fn wait_ready_metric(&self, profile: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let m = scrape(&self.process.metrics_addr).await.unwrap_or_default();
            if metric_sum(&m, "rampart_profile_ready", &[("profile", profile)]) == 1.0
                || t.elapsed() > timeout
            {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The release binary `make bench` builds, or `BENCH_OPERATOR`.
pub fn operator_binary() -> PathBuf {
    std::env::var("BENCH_OPERATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| rampart_e2e::repo_root().join("target/release/rampart"))
}

/// The operator's writes in flight per profile: `RAMPART_MAX_CONCURRENT_WRITES`, which the
/// operator process inherits from the bench, or the operator's default.
pub fn max_concurrent_writes() -> String {
    std::env::var("RAMPART_MAX_CONCURRENT_WRITES")
        .unwrap_or_else(|_| format!("{} (default)", rampart::apply::WRITE_CONCURRENCY))
}
