//! The end-to-end test harness: a `kube::Client` for the local control plane (`make up`),
//! unique namespaces per test that clean themselves up, waiting with a timeout and a clear
//! message, and the running operator's metrics.
//!
//! Tests run in parallel: each one works in namespaces and profiles named after a random run
//! id, and selects namespaces by a label carrying that id, so no two tests see each other's
//! objects.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The repository root (the workspace that holds `e2e/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The kubeconfig the tests use: `$KUBECONFIG`, else the one `make up` writes.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local/kubeconfig"))
}

/// A client for the local control plane, with a message that says how to start it.
pub async fn client() -> Result<Client> {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).with_context(|| {
        format!(
            "no kubeconfig at {}: start the local control plane with `make up` (or run `make test`, which does)",
            path.display()
        )
    })?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("reading the kubeconfig")?;
    Client::try_from(config).context("building the client")
}

/// A short random id for names and labels, unique per test.
pub fn unique_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}{n}", std::process::id() % 4096, nanos % 65536)
}

/// A namespace made for one test, deleted when dropped (waiting for nothing, so a failing
/// test still cleans up).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<id>` with the given labels.
    pub async fn create(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> Result<Self> {
        let name = format!("e2e-{prefix}-{}", unique_id());
        Self::create_named(client, &name, labels).await
    }

    pub async fn create_named(
        client: &Client,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Self> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self {
            name: name.to_string(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup_from_drop(move |client| async move {
            let _ = Api::<Namespace>::all(client)
                .delete(&name, &DeleteParams::background())
                .await;
        });
    }
}

/// Runs an async cleanup from a `Drop`, and waits for it. Drop cannot await, and the test's
/// runtime is blocked while we wait, so the test's client (whose worker task lives on that
/// runtime) cannot be used: the cleanup gets a client of its own, on a runtime of its own, on
/// a helper thread.
pub fn cleanup_from_drop<F, Fut>(cleanup: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(c) = client().await {
                cleanup(c).await;
            }
        });
    })
    .join();
}

/// Polls `probe` every 200 ms until it returns `Some`, or fails after `timeout` with
/// `what` and the last thing `probe` saw.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut last;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "condition not met yet".into(),
            Err(seen) => last = seen,
        }
        if start.elapsed() > timeout {
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what}; last seen: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Like [`wait_for`], for a probe that returns a description of what it saw and whether the
/// condition holds.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, String)>,
{
    wait_for(what, timeout, || {
        let fut = probe();
        async move {
            let (ok, seen) = fut.await;
            if ok {
                Ok(Some(()))
            } else {
                Err(seen)
            }
        }
    })
    .await
}

/// Formats anything for a failure message.
pub fn seen<T: Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// The running operator's metrics endpoint, from `RAMPART_METRICS_URL` (set by `make test`).
pub fn metrics_url() -> Result<String> {
    std::env::var("RAMPART_METRICS_URL").map_err(|_| anyhow!("RAMPART_METRICS_URL is not set: run the operator e2e tests through `make test` (e2e/run-tests.sh), which starts the operator"))
}

/// Fetches `/metrics` from the shared operator that `make test` runs.
pub async fn scrape_metrics() -> Result<String> {
    let url = metrics_url()?;
    scrape(
        url.trim_start_matches("http://")
            .trim_end_matches("/metrics"),
    )
    .await
}

/// Fetches `/metrics` from an operator at `addr` (host:port) over plain HTTP on loopback.
pub async fn scrape(addr: &str) -> Result<String> {
    let addr = addr.to_string();
    let body = tokio::task::spawn_blocking(move || -> Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr)
            .with_context(|| format!("connecting to the operator at {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .await??;
    let (_, body) = body
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from the operator"))?;
    Ok(body.to_string())
}

/// Sums every sample of `metric` whose labels include all of `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = match series.split_once('{') {
                Some((n, r)) => (n, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if name != metric {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if all {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

/// Deletes a profile and waits until it is gone, that is until the operator that handles it
/// ran its finalizer (so that operator must still be running).
pub async fn delete_profile_and_wait(client: &Client, name: &str) -> Result<()> {
    let api = Api::<rampart::api::HardeningProfile>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_until(
        &format!("profile {name} to be gone"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let got = api.get_opt(name).await;
                (
                    matches!(got, Ok(None)),
                    format!("{:?}", got.map(|p| p.map(|p| p.metadata.finalizers))),
                )
            }
        },
    )
    .await
}

/// The label that sends a profile to a test's own operator process instead of the shared one
/// that `make test` runs (which watches only profiles without it).
pub const DEDICATED_LABEL: &str = "e2e.rampart.dev/dedicated";

/// An operator process a test starts, kills and restarts itself, reconciling only the
/// profiles labelled `DEDICATED_LABEL=<tag>`.
pub struct OperatorProcess {
    child: std::process::Child,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts `target/debug/rampart run` (built by `make test`) for profiles labelled with
    /// `tag`, waiting until it serves /healthz.
    pub async fn start(tag: &str) -> Result<Self> {
        Self::start_with(tag, &[]).await
    }

    /// Like [`OperatorProcess::start`], with extra `rampart run` flags.
    pub async fn start_with(tag: &str, extra: &[&str]) -> Result<Self> {
        Self::start_as(tag, extra, &kubeconfig_path()).await
    }

    /// Like [`OperatorProcess::start_with`], talking to the API server with `kubeconfig`
    /// (for example one that impersonates a ServiceAccount).
    pub async fn start_as(tag: &str, extra: &[&str], kubeconfig: &std::path::Path) -> Result<Self> {
        let root = repo_root();
        let bin = root.join("target/debug/rampart");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let logs = root.join(".local/logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("operator-{tag}-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(&bin)
            .args([
                "run",
                "--metrics-addr",
                &metrics_addr,
                "--profile-selector",
                &format!("{DEDICATED_LABEL}={tag}"),
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run `cargo build --workspace` first)",
                    bin.display()
                )
            })?;
        let op = Self {
            child,
            metrics_addr,
            log,
        };
        let addr = op.metrics_addr.clone();
        wait_for(
            "the operator to serve /healthz",
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    match tokio::net::TcpStream::connect(&addr).await {
                        Ok(_) => Ok(Some(())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
        Ok(op)
    }

    /// SIGKILL: no graceful shutdown, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sum_filters_by_labels() {
        let text = "# HELP x\nrampart_api_writes_total{profile=\"a\",kind=\"NetworkPolicy\",verb=\"create\"} 3\nrampart_api_writes_total{profile=\"b\",kind=\"NetworkPolicy\",verb=\"create\"} 5\nother 1\n";
        assert_eq!(
            metric_sum(text, "rampart_api_writes_total", &[("profile", "a")]),
            3.0
        );
        assert_eq!(metric_sum(text, "rampart_api_writes_total", &[]), 8.0);
    }
}
