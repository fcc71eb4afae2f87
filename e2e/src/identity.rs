//! Rampart's ServiceAccount as the shipped manifests make it: a ServiceAccount bound to the
//! ClusterRoles in `config/rbac/` (restore verification's only when asked), optionally held
//! by the admission policy in `config/admission/`, and a kubeconfig that impersonates it. Used
//! by the rbac suite and the bench; everything it creates is removed when it is dropped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::{cleanup_from_drop, client_from, kubeconfig_path, repo_root, unique_id};

/// The account the shipped files name; the copies made here name the test's account instead.
const SHIPPED_USER: &str = "system:serviceaccount:rampart-system:rampart";

/// What the account is given.
#[derive(Clone, Copy, Debug, Default)]
pub struct Grants<'a> {
    /// Bind `config/rbac/verification_cluster_role.yaml` too (the chart's
    /// `verification.enabled`).
    pub verification: bool,
    /// Bind `config/rbac/rotation_hooks_cluster_role.yaml` too (the chart's
    /// `rotationHooks.enabled`).
    pub rotation_hooks: bool,
    /// Install `config/admission/admission_policy.yaml` for this account (the chart's
    /// `admissionPolicy.enabled`).
    pub policy: bool,
    /// A (resource, verb) taken out of every role, to show it was needed.
    pub drop: Option<(&'a str, &'a str)>,
}

/// A ServiceAccount `rampart` in `namespace` with the shipped roles (and policy), removed with
/// all its roles, bindings and policy when dropped.
pub struct ServiceAccountIdentity {
    /// `system:serviceaccount:<namespace>:rampart`.
    pub username: String,
    /// A kubeconfig that impersonates the account.
    pub kubeconfig: PathBuf,
    roles: Vec<String>,
    policy: Option<String>,
}

impl ServiceAccountIdentity {
    pub async fn new(client: &Client, namespace: &str, grants: Grants<'_>) -> Result<Self> {
        let id = format!("rampart-e2e-{}", unique_id());
        let username = format!("system:serviceaccount:{namespace}:rampart");
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "rampart"}}))?,
            )
            .await?;
        let mut files = vec![("config/rbac/cluster_role.yaml", id.clone())];
        if grants.verification {
            files.push((
                "config/rbac/verification_cluster_role.yaml",
                format!("{id}-verification"),
            ));
        }
        if grants.rotation_hooks {
            files.push((
                "config/rbac/rotation_hooks_cluster_role.yaml",
                format!("{id}-rotation-hooks"),
            ));
        }
        let mut this = Self {
            username: username.clone(),
            kubeconfig: repo_root().join(format!(".local/kubeconfig-{id}")),
            roles: vec![],
            policy: None,
        };
        for (file, name) in files {
            let mut role: ClusterRole =
                serde_yaml::from_str(&std::fs::read_to_string(repo_root().join(file))?)?;
            role.metadata.name = Some(name.clone());
            if let Some((resource, verb)) = grants.drop {
                for rule in role.rules.iter_mut().flatten() {
                    if rule.resources.iter().flatten().any(|r| r == resource) {
                        rule.verbs.retain(|v| v != verb);
                    }
                }
            }
            Api::<ClusterRole>::all(client.clone())
                .create(&PostParams::default(), &role)
                .await?;
            this.roles.push(name.clone());
            let binding: ClusterRoleBinding = serde_json::from_value(json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "rampart", "namespace": namespace}]
            }))?;
            Api::<ClusterRoleBinding>::all(client.clone())
                .create(&PostParams::default(), &binding)
                .await?;
        }
        if grants.policy {
            install_policy(client, &id, &username).await?;
            this.policy = Some(id.clone());
        }

        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
        let user = kc["users"][0]["user"]
            .as_mapping_mut()
            .context("kubeconfig user")?;
        user.insert("as".into(), username.clone().into());
        std::fs::write(&this.kubeconfig, serde_yaml::to_string(&kc)?)?;
        if grants.policy {
            this.wait_policy_active().await?;
        }
        Ok(this)
    }

    /// A client that acts as the account.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// The API server loads a new policy from a watch: until it has, requests pass unchecked.
    /// Waits until a create the policy refuses (an unlabelled NetworkPolicy, dry run, which
    /// the main role allows) is refused by it.
    async fn wait_policy_active(&self) -> Result<()> {
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let c = self.client().await?;
        let ns = self
            .username
            .split(':')
            .nth(2)
            .context("account namespace")?
            .to_string();
        let probe: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "policy-probe"},
            "spec": {"podSelector": {}}
        }))?;
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let start = std::time::Instant::now();
        loop {
            match Api::<NetworkPolicy>::namespaced(c.clone(), &ns)
                .create(&dry, &probe)
                .await
            {
                Err(e) if refused_by_policy(&e).is_some() => return Ok(()),
                other => {
                    if start.elapsed() > Duration::from_secs(30) {
                        bail!("the admission policy did not take effect in 30 s: {other:?}");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The shipped policy and binding, matching `username` instead of rampart-system's account,
/// named `name`.
async fn install_policy(client: &Client, name: &str, username: &str) -> Result<()> {
    let text = std::fs::read_to_string(repo_root().join("config/admission/admission_policy.yaml"))?
        .replace(SHIPPED_USER, username);
    let mut docs = serde_yaml::Deserializer::from_str(&text);
    let mut policy: ValidatingAdmissionPolicy =
        serde::Deserialize::deserialize(docs.next().context("no policy in the file")?)?;
    let mut binding: ValidatingAdmissionPolicyBinding =
        serde::Deserialize::deserialize(docs.next().context("no binding in the file")?)?;
    policy.metadata.name = Some(name.to_string());
    binding.metadata.name = Some(name.to_string());
    binding.spec.policy_name = name.to_string();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// The policy's message when `e` is a refusal by a ValidatingAdmissionPolicy (not by RBAC,
/// which also answers 403).
pub fn refused_by_policy(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.message.contains("ValidatingAdmissionPolicy") => {
            Some(s.message.clone())
        }
        _ => None,
    }
}

/// Whether `e` is RBAC's refusal (403 without a policy's name).
pub fn refused_by_rbac(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && !s.message.contains("ValidatingAdmissionPolicy"))
}

impl Drop for ServiceAccountIdentity {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let roles = std::mem::take(&mut self.roles);
        let policy = self.policy.take();
        cleanup_from_drop(move |c| async move {
            for role in roles {
                let _ = Api::<ClusterRoleBinding>::all(c.clone())
                    .delete(&role, &DeleteParams::default())
                    .await;
                let _ = Api::<ClusterRole>::all(c.clone())
                    .delete(&role, &DeleteParams::default())
                    .await;
            }
            if let Some(p) = policy {
                let _ = Api::<ValidatingAdmissionPolicyBinding>::all(c.clone())
                    .delete(&p, &DeleteParams::default())
                    .await;
                let _ = Api::<ValidatingAdmissionPolicy>::all(c)
                    .delete(&p, &DeleteParams::default())
                    .await;
            }
        });
    }
}
