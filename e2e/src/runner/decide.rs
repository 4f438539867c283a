//! The runner's decisions as pure functions: which pods to run, how long a stopping pod
//! gets, how long to wait before a restart.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::image::BinaryMap;

/// The annotation kwok's `--manage-nodes-with-annotation-selector` matches.
pub const FAKE_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// What to do with a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run `binary` for it.
    Run(PathBuf),
    /// Not ours (another node, not running yet, being deleted): nothing to do, nothing to say.
    Skip,
    /// On a fake node and running, but the runner cannot play it: say so once.
    Ignore(String),
}

/// Decide for `pod`; `fake_node` tells whether a node is a kwok node.
pub fn decide(pod: &Pod, fake_node: impl Fn(&str) -> bool, binaries: &BinaryMap) -> Decision {
    let Some(spec) = &pod.spec else { return Decision::Skip };
    let Some(node) = spec.node_name.as_deref() else { return Decision::Skip };
    if !fake_node(node) || pod.metadata.deletion_timestamp.is_some() {
        return Decision::Skip;
    }
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let has_ip = status.and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty());
    if !running || !has_ip {
        return Decision::Skip;
    }
    let Some(first) = spec.containers.first() else { return Decision::Skip };
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Decision::Ignore("init containers are not supported".into());
    }
    let image = first.image.as_deref().unwrap_or_default();
    match binaries.binary_for(image) {
        Some(binary) => Decision::Run(binary.to_owned()),
        None => Decision::Ignore(format!("no binary for image {image:?}")),
    }
}

/// How long a pod that is being deleted gets between SIGTERM and SIGKILL:
/// `metadata.deletionGracePeriodSeconds` (0 for `--grace-period=0 --force`), else
/// `spec.terminationGracePeriodSeconds`, else 30 s.
pub fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Whether the pod's `restartPolicy` restarts a container that exited with `success`.
pub fn restarts(pod: &Pod, success: bool) -> bool {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => false,
        Some("OnFailure") => !success,
        _ => true,
    }
}

/// Restart backoff: 1 s doubling to 10 s; a process that ran for 10 s starts over at 1 s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Backoff {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10);

    /// The delay before the next restart of a process that ran for `ran`.
    pub fn delay(&mut self, ran: Duration) -> Duration {
        if ran >= Self::MAX {
            self.next = Self::MIN;
        }
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn pod(patch: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "c", "image": "ghcr.io/x/media-node:1"}]},
            "status": {"phase": "Running", "podIP": "127.1.0.4"}
        });
        crate::support::merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn decisions() {
        let bins = BinaryMap::new(Path::new("/b"), &[]).unwrap();
        let fake = |n: &str| n.starts_with("kwok-");
        assert_eq!(decide(&pod(json!({})), fake, &bins), Decision::Run("/b/media-node".into()));
        assert_eq!(decide(&pod(json!({"spec": {"nodeName": "real"}})), fake, &bins), Decision::Skip);
        assert_eq!(decide(&pod(json!({"status": {"phase": "Pending"}})), fake, &bins), Decision::Skip);
        assert_eq!(decide(&pod(json!({"status": {"podIP": null}})), fake, &bins), Decision::Skip);
        assert_eq!(
            decide(&pod(json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}})), fake, &bins),
            Decision::Skip
        );
        assert!(matches!(
            decide(&pod(json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}})), fake, &bins),
            Decision::Ignore(m) if m.contains("nginx")
        ));
        // the first container decides (the runner warns that the others do not run)
        assert_eq!(
            decide(
                &pod(
                    json!({"spec": {"containers": [{"name": "a", "image": "turn-node"}, {"name": "b", "image": "x"}]}})
                ),
                fake,
                &bins
            ),
            Decision::Run("/b/turn-node".into())
        );
        assert!(matches!(
            decide(&pod(json!({"spec": {"initContainers": [{"name": "i", "image": "media-node"}]}})), fake, &bins),
            Decision::Ignore(m) if m.contains("init containers")
        ));
    }

    #[test]
    fn grace_periods() {
        assert_eq!(grace_period(&pod(json!({}))), Duration::from_secs(30));
        assert_eq!(
            grace_period(&pod(json!({"spec": {"terminationGracePeriodSeconds": 3630}}))),
            Duration::from_secs(3630)
        );
        assert_eq!(
            grace_period(&pod(
                json!({"spec": {"terminationGracePeriodSeconds": 3630}, "metadata": {"deletionGracePeriodSeconds": 0}})
            )),
            Duration::ZERO
        );
    }

    #[test]
    fn restart_policy() {
        assert!(restarts(&pod(json!({})), true));
        assert!(!restarts(&pod(json!({"spec": {"restartPolicy": "Never"}})), false));
        assert!(restarts(&pod(json!({"spec": {"restartPolicy": "OnFailure"}})), false));
        assert!(!restarts(&pod(json!({"spec": {"restartPolicy": "OnFailure"}})), true));
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(100);
        let got: Vec<u64> = (0..6).map(|_| b.delay(quick).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(Duration::from_secs(11)).as_secs(), 1);
        assert_eq!(b.delay(quick).as_secs(), 2);
    }
}
