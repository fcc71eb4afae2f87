//! A real Prometheus (Debian's package, installed by .ci/run) scrapes the operator: PromQL over
//! `rampart_` series sees drift go up and back down, and `promtool check metrics` accepts the
//! exposition.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use rampart::api::HardeningProfile;
use rampart_e2e::{
    client, delete_profile_and_wait, repo_root, scrape, unique_id, wait_until, OperatorProcess,
    TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

struct Prometheus {
    child: std::process::Child,
    addr: String,
}

impl Prometheus {
    fn start(target: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = repo_root().join(format!(".local/prometheus-{port}"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rampart\n    static_configs:\n      - targets: ['{target}']\n"),
        )?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (apt-get install prometheus; .ci/run does)")?;
        Ok(Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }

    /// An instant PromQL query; the first sample's value, if any.
    async fn query(&self, promql: &str) -> Result<Option<f64>> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let addr = self.addr.clone();
        let body = tokio::task::spawn_blocking(move || -> Result<String> {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .await??;
        let json = body
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| anyhow!("malformed response"))?;
        let v: Value = serde_json::from_str(json)?;
        Ok(v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn prometheus_sees_drift_rise_and_fall_and_promtool_accepts_the_metrics() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let tag = format!("prom-{id}");
    let run = format!("prom-{id}");
    let ns =
        TestNamespace::create_named(&c, &format!("e2e-{run}"), &[("e2e.rampart.dev/run", &run)])
            .await?;
    let op = OperatorProcess::start(&tag).await?;
    let prom = Prometheus::start(&op.metrics_addr)?;

    let name = format!("prom-{id}");
    let profile = |mode: &str| {
        json!({
            "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
            "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
            "spec": {"mode": mode, "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}}, "networkPolicies": {}}
        })
    };
    let profiles = Api::<HardeningProfile>::all(c.clone());
    profiles
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile("Enforce")),
        )
        .await?;
    let managed =
        format!("rampart_managed_objects{{profile=\"{name}\",control=\"networkpolicy\"}}");
    wait_until(
        "Prometheus to see the managed policies",
        Duration::from_secs(60),
        || async {
            let v = prom.query(&managed).await;
            (matches!(v, Ok(Some(n)) if n == 3.0), format!("{v:?}"))
        },
    )
    .await?;

    // Audit mode, then a deletion: the drift stays (reported, not repaired) and the gauge rises.
    profiles
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile("Audit")),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Api::<NetworkPolicy>::namespaced(c.clone(), &ns.name)
        .delete("rampart-allow-dns", &DeleteParams::default())
        .await?;
    let drift = format!("rampart_drifted_objects{{profile=\"{name}\",control=\"networkpolicy\"}}");
    wait_until(
        "the drift gauge to rise in Prometheus",
        Duration::from_secs(60),
        || async {
            let v = prom.query(&drift).await;
            (matches!(v, Ok(Some(n)) if n == 1.0), format!("{v:?}"))
        },
    )
    .await?;
    // Back to Enforce: repaired, and the gauge falls.
    profiles
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile("Enforce")),
        )
        .await?;
    wait_until(
        "the drift gauge to fall back in Prometheus",
        Duration::from_secs(60),
        || async {
            let v = prom.query(&drift).await;
            (matches!(v, Ok(Some(n)) if n == 0.0), format!("{v:?}"))
        },
    )
    .await?;
    let peak = prom.query(&format!("max_over_time({drift}[5m])")).await?;
    assert_eq!(peak, Some(1.0), "the rise must be in Prometheus' history");

    let text = scrape(&op.metrics_addr).await?;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool")?;
    promtool
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    delete_profile_and_wait(&c, &name).await?;
    drop(op);
    Ok(())
}
