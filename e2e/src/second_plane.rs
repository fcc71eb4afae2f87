//! A second local control plane, for the tests that need a cluster in a state the shared
//! plane is not in (an API not yet installed when the operator starts).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::repo_root;

/// A second control plane, started for one test and stopped when dropped.
pub struct SecondPlane {
    dir: PathBuf,
}

impl SecondPlane {
    /// `make up`'s plane in `.local/planes/<name>`.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_with(name, &[])
    }

    /// `make up`'s plane in `.local/planes/<name>`, with `RAMPART_SNAPSHOT_API=later`: no
    /// VolumeSnapshot CRDs, class or snapshot sidecars.
    pub fn start_without_snapshot_api(name: &str) -> Result<Self> {
        Self::start_with(name, &[("RAMPART_SNAPSHOT_API", "later")])
    }

    fn start_with(name: &str, env: &[(&str, &str)]) -> Result<Self> {
        let dir = repo_root().join(".local/planes").join(name);
        let plane = Self { dir };
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("e2e/controlplane/up.sh"))
            .env("RAMPART_PLANE_DIR", &plane.dir)
            .envs(env.iter().copied())
            .current_dir(repo_root())
            .output()?;
        if !out.status.success() {
            bail!(
                "starting a second plane: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(plane)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The control-plane binaries' directory (`e2e/tools/build.sh` prints it, building
    /// nothing when cached).
    pub fn bin_dir() -> Result<PathBuf> {
        let built = std::process::Command::new("bash")
            .arg(repo_root().join("e2e/tools/build.sh"))
            .current_dir(repo_root())
            .output()?;
        if !built.status.success() {
            bail!(
                "e2e/tools/build.sh: {}",
                String::from_utf8_lossy(&built.stderr)
            );
        }
        Ok(PathBuf::from(String::from_utf8(built.stdout)?.trim()))
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<()> {
        let out = std::process::Command::new(Self::bin_dir()?.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .current_dir(repo_root())
            .output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Rampart's CRD, as `make test` installs it on the shared plane.
    pub fn install_rampart_crd(&self) -> Result<()> {
        self.kubectl(&["apply", "--server-side", "-f", "crds/"])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/hardeningprofiles.rampart.dev",
            "--timeout=30s",
        ])
    }

    /// Installs the VolumeSnapshot CRDs `up.sh` left out, and the class the profile names.
    pub fn install_snapshot_api(&self) -> Result<()> {
        // Beside the binaries, where up.sh installs them from.
        let crds = Self::bin_dir()?
            .parent()
            .context("the control-plane build directory")?
            .join("snapshot-crds");
        self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().context("path")?,
        ])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/volumesnapshots.snapshot.storage.k8s.io",
            "crd/volumesnapshotclasses.snapshot.storage.k8s.io",
            "--timeout=30s",
        ])?;
        self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            "e2e/controlplane/volumesnapshotclass.yaml",
        ])
    }
}

impl Drop for SecondPlane {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(repo_root().join("e2e/controlplane/down.sh"))
            .env("RAMPART_PLANE_DIR", &self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
