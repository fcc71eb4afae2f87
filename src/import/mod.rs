//! `rampart import`: turns another tool's policies into one HardeningProfile. Pure apart from
//! [`run`], which reads the files and prints; nothing here calls the API.
//!
//! Kyverno's generate rules are deprecated (1.17) and due for removal, so the shops that make
//! default-deny NetworkPolicies and default PDBs with them must move anyway; the import gives
//! them the profile that makes the same objects, and says, rule by rule, what it could not
//! carry over and why, rather than dropping it silently.

pub mod cel;
pub mod kyverno;
pub mod profile;

use std::fmt;
use std::path::PathBuf;

/// Where a finding comes from: a policy and one of its rules.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// `ClusterPolicy add-networkpolicy`, `GeneratingPolicy ns/name`, or a document's kind and
    /// name when it is no policy at all.
    pub policy: String,
    /// The rule's name (for a GeneratingPolicy, `generate[i]`); empty for the whole policy.
    pub rule: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rule.is_empty() {
            write!(f, "{}", self.policy)
        } else {
            write!(f, "{}, rule {}", self.policy, self.rule)
        }
    }
}

/// How much of a rule made it into the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing of it (or of the named part) is in the profile.
    NotMapped,
    /// In the profile, but the profile does not do exactly what the rule did.
    Differs,
}

/// One thing the import could not carry over exactly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub origin: Origin,
    pub severity: Severity,
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.severity {
            Severity::NotMapped => "not mapped",
            Severity::Differs => "mapped with a difference",
        };
        write!(f, "{}: {what}: {}", self.origin, self.reason)
    }
}

/// What can go wrong before any mapping: the input itself.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path} as YAML: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("no Kyverno generate rule mapped to anything Rampart makes; see the findings above")]
    NothingMapped,
    #[error("encoding the profile: {0}")]
    Encode(#[from] serde_yaml::Error),
}

/// `rampart import ...`: the tools it reads.
#[derive(clap::Subcommand, Debug)]
pub enum ImportCommand {
    /// Read Kyverno generate ClusterPolicies/Policies (kyverno.io) and GeneratingPolicies
    /// (policies.kyverno.io) that make NetworkPolicies and PodDisruptionBudgets, and print one
    /// HardeningProfile that makes the same objects. Every rule that cannot be mapped, or maps
    /// with a difference, is listed on stderr and in the profile's comment header.
    Kyverno(KyvernoArgs),
}

#[derive(clap::Args, Debug)]
pub struct KyvernoArgs {
    /// A YAML file of policies (several documents allowed); repeat for more files. NetworkPolicies
    /// in these files serve as the sources of `clone` rules.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Name of the HardeningProfile.
    #[arg(long, default_value = "imported-from-kyverno")]
    pub name: String,
    /// Mode of the profile. Audit (the default) reports what it would change and writes
    /// nothing: read its drift, then switch to Enforce.
    #[arg(long, value_enum, default_value_t = ImportMode::Audit)]
    pub mode: ImportMode,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    Audit,
    Enforce,
}

/// Runs an import: reads the files, prints the profile on stdout and the findings on stderr.
pub fn run(command: ImportCommand) -> Result<(), ImportError> {
    match command {
        ImportCommand::Kyverno(args) => {
            let mut documents = Vec::new();
            for path in &args.files {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
                    path: shown.clone(),
                    source,
                })?;
                documents.extend(kyverno::documents(&text).map_err(|source| {
                    ImportError::Parse {
                        path: shown,
                        source,
                    }
                })?);
            }
            let mode = match args.mode {
                ImportMode::Audit => crate::api::Mode::Audit,
                ImportMode::Enforce => crate::api::Mode::Enforce,
            };
            let imported = profile::import(&documents, &args.name, mode);
            for line in imported.report_lines() {
                eprintln!("{line}");
            }
            if imported.spec.is_none() {
                return Err(ImportError::NothingMapped);
            }
            print!("{}", imported.to_yaml()?);
            Ok(())
        }
    }
}
