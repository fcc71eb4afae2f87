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

pub mod apps;
pub mod csi;
pub mod identity;
pub mod second_plane;

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
    client_from(&kubeconfig_path()).await
}

/// A client for the identity of the kubeconfig at `path`.
pub async fn client_from(path: &std::path::Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| {
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

/// Server-side applies a HardeningProfile manifest as field manager `e2e`; returns its name.
pub async fn apply_profile(client: &Client, profile: serde_json::Value) -> Result<String> {
    use kube::api::{Patch, PatchParams};
    let name = profile["metadata"]["name"]
        .as_str()
        .context("the profile manifest has no metadata.name")?
        .to_string();
    Api::<rampart::api::HardeningProfile>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile),
        )
        .await
        .with_context(|| format!("applying profile {name}"))?;
    Ok(name)
}

/// A profile condition's status (`True`, `False`) and reason.
pub fn condition_of(p: &rampart::api::HardeningProfile, type_: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str().to_string(), c.reason.clone()))
}

/// The named profile's condition, read now.
pub async fn condition(
    client: &Client,
    profile: &str,
    type_: &str,
) -> Result<Option<(String, String)>> {
    let p = Api::<rampart::api::HardeningProfile>::all(client.clone())
        .get(profile)
        .await
        .with_context(|| format!("reading profile {profile}"))?;
    Ok(condition_of(&p, type_))
}

/// Waits until the profile's condition `type_` has `status`; returns the profile as it was then.
pub async fn wait_condition(
    client: &Client,
    profile: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Result<rampart::api::HardeningProfile> {
    let api = Api::<rampart::api::HardeningProfile>::all(client.clone());
    wait_for(
        &format!("profile {profile} to have {type_}={status}"),
        timeout,
        || {
            let api = api.clone();
            async move {
                match api.get(profile).await {
                    Ok(p) if condition_of(&p, type_).is_some_and(|c| c.0 == status) => Ok(Some(p)),
                    Ok(p) => Err(format!(
                        "conditions {:?}",
                        p.status.map(|s| s.conditions).unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
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

/// GETs `path` from an operator at `addr` (host:port) over plain HTTP on loopback: the
/// status code and the body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    let response = tokio::task::spawn_blocking(move || -> Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr)
            .with_context(|| format!("connecting to the operator at {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .await??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from the operator"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status code in {head:?}"))?;
    Ok((code, body.to_string()))
}

/// Fetches `/metrics` from an operator at `addr` (host:port).
pub async fn scrape(addr: &str) -> Result<String> {
    let (code, body) = http_get(addr, "/metrics").await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    Ok(body)
}

/// Whether the operator at `addr` answers /readyz with 200.
pub async fn is_ready(addr: &str) -> bool {
    matches!(http_get(addr, "/readyz").await, Ok((200, _)))
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

/// The operator binary the tests start: `target/debug/rampart`, or `RAMPART_E2E_OPERATOR_BIN`
/// (a build of an earlier commit, to show a test fails there).
pub fn operator_bin() -> PathBuf {
    std::env::var_os("RAMPART_E2E_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/rampart"))
}

/// How to start an operator process: which binary, which profiles (a label selector), with
/// which extra flags, identity (kubeconfig) and environment.
pub struct OperatorLaunch {
    pub bin: PathBuf,
    /// `--profile-selector`, for example `e2e.rampart.dev/dedicated=<tag>`.
    pub selector: String,
    pub extra: Vec<String>,
    pub kubeconfig: PathBuf,
    /// The log goes to `.local/logs/<log_name>-<metrics port>.log`.
    pub log_name: String,
    pub env: Vec<(String, String)>,
}

impl OperatorProcess {
    /// Starts `target/debug/rampart run` (built by `make test`) for profiles labelled with
    /// `tag`, waiting until it serves /healthz.
    pub async fn start(tag: &str) -> Result<Self> {
        Self::start_with(tag, &[]).await
    }

    /// Like [`OperatorProcess::start`], with extra `rampart run` flags. As the admin, or,
    /// when `RAMPART_E2E_OPERATOR_KUBECONFIG` names one (run-tests.sh sets it to
    /// the shipped ServiceAccount's), as the account that kubeconfig acts as.
    pub async fn start_with(tag: &str, extra: &[&str]) -> Result<Self> {
        let kubeconfig = std::env::var_os("RAMPART_E2E_OPERATOR_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(kubeconfig_path);
        Self::start_as(tag, extra, &kubeconfig).await
    }

    /// Like [`OperatorProcess::start_with`], talking to the API server with `kubeconfig`
    /// (for example one that impersonates a ServiceAccount).
    pub async fn start_as(tag: &str, extra: &[&str], kubeconfig: &std::path::Path) -> Result<Self> {
        Self::launch(&OperatorLaunch {
            bin: operator_bin(),
            selector: format!("{DEDICATED_LABEL}={tag}"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            kubeconfig: kubeconfig.to_path_buf(),
            log_name: format!("operator-{tag}"),
            env: vec![],
        })
        .await
    }

    /// Starts the operator as `launch` says, waiting until it serves /healthz.
    pub async fn launch(launch: &OperatorLaunch) -> Result<Self> {
        let bin = &launch.bin;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let logs = repo_root().join(".local/logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{}-{port}.log", launch.log_name));
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(bin)
            .args([
                "run",
                "--metrics-addr",
                &metrics_addr,
                "--profile-selector",
                &launch.selector,
            ])
            .args(&launch.extra)
            .env("KUBECONFIG", &launch.kubeconfig)
            // The suites use schedules seconds apart; an env var rather than a flag, so older
            // builds (the snapshot survival tests run some) ignore it.
            .env("RAMPART_ALLOW_SUB_MINUTE_SCHEDULES", "true")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
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

    /// The process id (for `/proc/<pid>` figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (by name, for example `STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status, if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// A client identity of its own for an operator process: a certificate signed by the local
/// plane's CA, in `system:masters` and in `rampart:audited`, whose writes the API server's
/// audit log records (see `e2e/controlplane/audit-policy.yaml`). The kubeconfig is removed on
/// drop.
pub struct AuditedIdentity {
    pub user: String,
    pub kubeconfig: PathBuf,
}

impl AuditedIdentity {
    pub fn new(user: &str) -> Result<Self> {
        Self::in_groups(user, &["system:masters", "rampart:audited"])
    }

    /// Like [`AuditedIdentity::new`], with reads logged too (group `rampart:audited-reads`),
    /// so [`AuditedIdentity::writes`] returns every request it made.
    pub fn with_reads(user: &str) -> Result<Self> {
        Self::in_groups(
            user,
            &["system:masters", "rampart:audited", "rampart:audited-reads"],
        )
    }

    fn in_groups(user: &str, groups: &[&str]) -> Result<Self> {
        let root = repo_root();
        let pki = root.join(".local/pki");
        let dir = root.join(format!(".local/audited-{user}"));
        std::fs::create_dir_all(&dir)?;
        let run = |args: &[&str]| -> Result<()> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .context("running openssl")?;
            anyhow::ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let orgs: String = groups.iter().map(|g| format!("/O={g}")).collect();
        let subject = format!("{orgs}/CN={user}");
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
        ])?;
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        let ca = pki.join("ca.crt");
        let ca_key = pki.join("ca.key");
        run(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            &ca.to_string_lossy(),
            "-CAkey",
            &ca_key.to_string_lossy(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.ext",
            "-out",
            "client.crt",
        ])?;
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
        let user_entry = kc
            .get_mut("users")
            .and_then(|u| u.get_mut(0))
            .and_then(|u| u.get_mut("user"))
            .context("kubeconfig user")?;
        *user_entry = serde_yaml::to_value(BTreeMap::from([
            (
                "client-certificate-data",
                b64(&std::fs::read(dir.join("client.crt"))?),
            ),
            (
                "client-key-data",
                b64(&std::fs::read(dir.join("client.key"))?),
            ),
        ]))?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, serde_yaml::to_string(&kc)?)?;
        Ok(Self {
            user: user.to_string(),
            kubeconfig,
        })
    }

    /// Every write (and, [`AuditedIdentity::with_reads`], every read) the API server recorded
    /// for this identity, oldest first, from the audit
    /// log and the files it was rotated into (`audit-<time>.log`, every 100 MB: a long bench
    /// window spans several).
    pub fn writes(&self) -> Result<Vec<AuditedWrite>> {
        let logs = repo_root().join(".local/logs");
        let mut text = String::new();
        for entry in std::fs::read_dir(&logs).with_context(|| {
            format!(
                "reading {} (made by e2e/controlplane/up.sh)",
                logs.display()
            )
        })? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("audit") && name.ends_with(".log") {
                text.push_str(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                );
            }
        }
        let mut out = Vec::new();
        for line in text.lines().filter(|l| l.contains(self.user.as_str())) {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if e["user"]["username"].as_str() != Some(self.user.as_str()) {
                continue;
            }
            let Some(at) = e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            out.push(AuditedWrite {
                at: at.with_timezone(&chrono::Utc),
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                resource: e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: e["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                code: e["responseStatus"]["code"].as_i64().unwrap_or(0),
            });
        }
        out.sort_by_key(|w| w.at);
        Ok(out)
    }
}

impl Drop for AuditedIdentity {
    fn drop(&mut self) {
        if let Some(dir) = self.kubeconfig.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One write as the API server's audit log recorded it.
#[derive(Clone, Debug)]
pub struct AuditedWrite {
    pub at: chrono::DateTime<chrono::Utc>,
    pub verb: String,
    pub resource: String,
    pub name: String,
    /// The HTTP status the API server answered with.
    pub code: i64,
}

impl AuditedWrite {
    /// The API server carried it out (a refused compare-and-swap is not a write).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
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
