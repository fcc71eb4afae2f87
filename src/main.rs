//! The `rampart` binary: flags, logging and wiring; the work is in the library.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use rampart::metrics::Metrics;

/// jemalloc rather than the system allocator: a reconcile at a thousand namespaces allocates
/// and frees tens of megabytes of short-lived values across worker threads, and glibc's
/// per-thread arenas kept that as resident memory (measured in BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One arena (the work is I/O-bound and a reconcile runs on one thread at a time) and freed
/// pages handed back to the kernel at once, so resident
/// memory follows the live heap after a large reconcile instead of staying at its peak.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"narenas:1,background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "Keeps Kubernetes namespaces hardened"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the HardeningProfile CustomResourceDefinition as YAML.
    Crd,
    /// Print the ValidatingAdmissionPolicy (and its binding) that holds Rampart's
    /// ServiceAccount to what Rampart writes, as YAML.
    AdmissionPolicy {
        /// Namespace of the operator's ServiceAccount.
        #[arg(long, default_value = "rampart-system")]
        namespace: String,
        /// Name of the operator's ServiceAccount.
        #[arg(long, default_value = "rampart")]
        service_account: String,
    },
    /// Run the controller against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Turn another tool's policies into a HardeningProfile (printed; nothing is applied).
    #[command(subcommand)]
    Import(rampart::import::ImportCommand),
    /// Show what applying a profile would create, change, delete, adopt, rotate, restart and
    /// snapshot, per namespace, from the live cluster (reads only, never writes). Exits 0
    /// when nothing would change, 2 when something would, 1 on error (as `kubectl diff`).
    Plan(PlanArgs),
    /// Show a profile's status readably: conditions, drift, rotation, backups and restore
    /// verification (every profile when none is named).
    Status {
        /// The profile's name.
        profile: Option<String>,
    },
}

#[derive(Parser)]
struct PlanArgs {
    /// The HardeningProfile manifest (YAML or JSON), `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanOutput::Text)]
    output: PlanOutput,
    /// As the operator's flag: namespaces no profile selects by label (names, or prefixes
    /// ending in `*`), comma separated. Default: `kube-*` and `--operator-namespace`.
    #[arg(long, env = "RAMPART_EXCLUDED_NAMESPACES", value_delimiter = ',')]
    excluded_namespaces: Option<Vec<String>>,
    /// The operator's namespace, excluded from selection by default.
    #[arg(long, default_value = "rampart-system")]
    operator_namespace: String,
    /// As the operator's flag: accept schedules that fire more than once a minute.
    #[arg(long, env = "RAMPART_ALLOW_SUB_MINUTE_SCHEDULES")]
    allow_sub_minute_schedules: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanOutput {
    Text,
    Json,
}

#[derive(Parser)]
struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "RAMPART_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Log line format.
    #[arg(long, env = "RAMPART_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Name of this replica in events; defaults to the pod or host name.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only profiles whose labels match this selector (for example to run a
    /// canary operator beside the main one). Conflicts are judged among these profiles only.
    #[arg(long, env = "RAMPART_PROFILE_SELECTOR")]
    profile_selector: Option<String>,
    /// Run only while holding a coordination.k8s.io Lease, so one of several replicas acts.
    #[arg(long, env = "RAMPART_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_elect_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "rampart-leader")]
    leader_elect_lease: String,
    /// Writes in flight at once for one profile. Higher converges a large estate faster on an
    /// API server with seats to spare; priority and fairness queue the excess either way.
    #[arg(long, env = "RAMPART_MAX_CONCURRENT_WRITES", default_value_t = rampart::apply::WRITE_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    max_concurrent_writes: u16,
    /// The operator's own namespace, excluded from selection by default.
    #[arg(long, env = "POD_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Namespaces no profile selects by label (names, or prefixes ending in `*`), comma
    /// separated; a profile still selects one it lists in `namespaces`. Default: `kube-*` and
    /// the operator's own namespace. An empty value excludes none.
    #[arg(long, env = "RAMPART_EXCLUDED_NAMESPACES", value_delimiter = ',')]
    excluded_namespaces: Option<Vec<String>>,
    /// Accept backup and verification schedules that fire more than once a minute (a seconds
    /// field other than a single second). For test clusters: the e2e suites need slots seconds
    /// apart; a real estate never does.
    #[arg(long, env = "RAMPART_ALLOW_SUB_MINUTE_SCHEDULES")]
    allow_sub_minute_schedules: bool,
    /// Write an OpenReports `Report` (openreports.io/v1alpha1) per profile and selected
    /// namespace, for Policy Reporter and Kyverno's UI. Waits quietly for the CRDs when the
    /// cluster does not serve them yet.
    #[arg(long, env = "RAMPART_REPORTS")]
    reports: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd_yaml()?);
            Ok(())
        }
        Command::AdmissionPolicy {
            namespace,
            service_account,
        } => {
            let identity = rampart::admission_policy::Identity {
                namespace,
                service_account,
            };
            print!(
                "{}",
                rampart::admission_policy::admission_policy_yaml(&identity)?
            );
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Import(command) => Ok(rampart::import::run(command)?),
        Command::Plan(args) => {
            let code = plan(args).await;
            std::process::exit(code)
        }
        Command::Status { profile } => {
            let client = kube::Client::try_default().await?;
            let profiles = rampart::cli::status::read(&client, profile.as_deref()).await?;
            if profiles.is_empty() {
                println!("No HardeningProfiles in the cluster.");
            }
            let pages: Vec<String> = profiles.iter().map(rampart::cli::status::render).collect();
            print!("{}", pages.join("\n"));
            Ok(())
        }
    }
}

/// `rampart plan`, as an exit code: 0 nothing would change, 2 something would, 1 error.
async fn plan(args: PlanArgs) -> i32 {
    use rampart::cli::plan::{plan_file, PlanOptions};
    let options = PlanOptions {
        excluded_namespaces: match args.excluded_namespaces {
            Some(patterns) => rampart::selection::ExcludedNamespaces::new(patterns),
            None => {
                rampart::selection::ExcludedNamespaces::default_for(Some(&args.operator_namespace))
            }
        },
        limits: rampart::api::validate::Limits {
            sub_minute_schedules: args.allow_sub_minute_schedules,
        },
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no cluster to read (KUBECONFIG, ~/.kube/config or in-cluster): {e}");
            return 1;
        }
    };
    match plan_file(&client, &args.file, &options).await {
        Ok(plan) => {
            let text = match args.output {
                PlanOutput::Text => plan.to_text(),
                PlanOutput::Json => format!("{}\n", plan.to_json()),
            };
            // A closed pipe (`| head`) is the reader's choice, not an error to panic over.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            plan.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn crd_yaml() -> anyhow::Result<String> {
    Ok(rampart::api::crd_yaml()?)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = kube::Config::infer().await?;
    let fence = if args.leader_elect {
        rampart::fence::Fence::closed()
    } else {
        rampart::fence::Fence::always_open()
    };
    // Every write the operator makes goes through the fence; the lease has its own client,
    // since renewing it is how the fence opens.
    let metrics = Arc::new(Metrics::new()?);
    // Requests are counted innermost, as sent: a write the fence refuses never left.
    let counted = rampart::request_metrics::RequestCountLayer(metrics.api_requests.clone());
    let client = kube::client::ClientBuilder::try_from(config.clone())?
        .with_layer(&counted)
        .with_layer(&rampart::fence::FenceLayer(fence.clone()))
        .build();
    let lease_client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counted)
        .build();
    let ready = Arc::new(AtomicBool::new(false));
    let instance = args
        .instance
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "rampart".into());
    let http = tokio::spawn(rampart::http::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
    ));
    tracing::info!(%instance, "starting controller");
    let options = rampart::controller::Options {
        instance: instance.clone(),
        profile_selector: args.profile_selector,
        max_concurrent_writes: usize::from(args.max_concurrent_writes),
        excluded_namespaces: match args.excluded_namespaces {
            Some(patterns) => rampart::selection::ExcludedNamespaces::new(patterns),
            None => rampart::selection::ExcludedNamespaces::default_for(
                args.operator_namespace.as_deref(),
            ),
        },
        limits: rampart::api::validate::Limits {
            sub_minute_schedules: args.allow_sub_minute_schedules,
        },
        reports: args.reports,
    };
    tracing::info!(excluded_namespaces = ?options.excluded_namespaces.patterns(), "namespaces excluded from selection by label");
    let (became_leader_tx, became_leader_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let became_leader = futures::stream::unfold(became_leader_rx, |mut rx| async move {
        rx.recv().await.map(|()| ((), rx))
    })
    .boxed();
    let leadership = rampart::controller::Leadership {
        fence: fence.clone(),
        became_leader,
    };
    // The controller runs on every replica: a standby keeps its caches warm (and so is ready)
    // but its reconciles do nothing until it leads.
    let controller = rampart::controller::run(client, metrics.clone(), ready, options, leadership);
    if args.leader_elect {
        let elector = rampart::leader::LeaderElector::new(
            lease_client,
            &args.leader_elect_namespace,
            &args.leader_elect_lease,
            // Unique per process: two replicas on one host (or a restarted container under the
            // same pod name racing its predecessor) must never share an identity.
            &format!("{instance}_{}", std::process::id()),
            rampart::leader::Timings::default(),
            fence.clone(),
        );
        let leading = async {
            tracing::info!(lease = %args.leader_elect_lease, namespace = %args.leader_elect_namespace, identity = %elector.identity(), "waiting to become the leader");
            elector.acquire().await;
            metrics.leader.set(1);
            let _ = became_leader_tx.send(());
            elector.hold().await;
        };
        tokio::select! {
            _ = controller => {}
            _ = leading => {
                // The fence is already closed: nothing this process still has in flight can
                // write. Exit so the pod restarts as a clean standby.
                tracing::error!("lost the leader lease; exiting");
                std::process::exit(1);
            }
            _ = shutdown_signal() => {
                tracing::info!("shutting down: closing the write fence and releasing the lease");
                elector.release().await;
            }
        }
    } else {
        metrics.leader.set(1);
        tokio::select! {
            _ = controller => {}
            _ = shutdown_signal() => {
                fence.close();
                tracing::info!("shutting down");
            }
        }
    }
    http.abort();
    Ok(())
}

/// SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
