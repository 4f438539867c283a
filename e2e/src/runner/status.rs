//! What the runner writes into a pod's status, as a kubelet does: the `Ready` and
//! `ContainersReady` conditions (from the readiness probe) and the container's status
//! (running or waiting, restarts, the last termination).
//!
//! kwok marks a pod Running and Ready when it first starts it; from then on the runner
//! owns those fields (kwok's pod-ready stage only acts on Pending pods). The patch is
//! pure ([`Report::patch`]); the worker sends reports to one writer task, which always
//! writes the newest.

use serde_json::{Value, json};

/// How the container last ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code (128 + signal for a signal, as runtimes report it).
    pub exit_code: i32,
    /// The signal, if it died of one.
    pub signal: Option<i32>,
    /// `Completed` (exit 0) or `Error`.
    pub reason: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
}

/// The container's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet (or cannot start): the reason and message.
    Waiting {
        /// `ContainerCreating`, `CrashLoopBackOff`, `CreateContainerConfigError`, …
        reason: String,
        /// Why, for a human.
        message: String,
    },
    /// Running since (RFC 3339).
    Running {
        /// RFC 3339.
        started_at: String,
    },
    /// Ended and not restarted (restartPolicy).
    Terminated(Terminated),
}

/// One snapshot of what the pod's status should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The container's name and image, and the image's digest (image mode).
    pub container: String,
    /// `spec.containers[0].image`.
    pub image: String,
    /// `<name>@sha256:…` in image mode, empty otherwise.
    pub image_id: String,
    /// The container's state.
    pub state: State,
    /// Ready (readiness probe passing, or none and running).
    pub ready: bool,
    /// When `ready` last changed (RFC 3339).
    pub ready_since: String,
    /// Restarts so far.
    pub restart_count: u32,
    /// The previous run's end.
    pub last: Option<Terminated>,
}

impl Report {
    /// The strategic merge patch for `pods/<name>/status` (conditions merge by type).
    pub fn patch(&self) -> Value {
        let cond = |kind: &str| {
            let mut c = json!({
                "type": kind,
                "status": if self.ready { "True" } else { "False" },
                "lastTransitionTime": self.ready_since,
                "lastProbeTime": null,
            });
            if !self.ready {
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(format!("containers with unready status: [{}]", self.container));
            } else {
                c["reason"] = Value::Null;
                c["message"] = Value::Null;
            }
            c
        };
        let state = match &self.state {
            State::Waiting { reason, message } => json!({ "waiting": { "reason": reason, "message": message } }),
            State::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
            State::Terminated(t) => json!({ "terminated": terminated_json(t) }),
        };
        let last = match &self.last {
            Some(t) => json!({ "terminated": terminated_json(t) }),
            None => json!({}),
        };
        json!({
            "status": {
                "conditions": [cond("Ready"), cond("ContainersReady")],
                "containerStatuses": [{
                    "name": self.container,
                    "image": self.image,
                    "imageID": self.image_id,
                    "ready": self.ready,
                    "started": matches!(self.state, State::Running { .. }),
                    "restartCount": self.restart_count,
                    "state": state,
                    "lastState": last,
                }],
            }
        })
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut term = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": t.started_at,
        "finishedAt": t.finished_at,
    });
    if let Some(s) = t.signal {
        term["signal"] = json!(s);
    }
    term
}

/// How a finished process is reported: its exit code (128 + signal for a signal) and
/// reason.
pub fn terminated(code: Option<i32>, signal: Option<i32>, started_at: String, finished_at: String) -> Terminated {
    let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
    Terminated {
        exit_code,
        signal: if code.is_none() { signal } else { None },
        reason: if exit_code == 0 { "Completed".into() } else { "Error".into() },
        started_at,
        finished_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            container: "media-node".into(),
            image: "ghcr.io/switchyard-dev/media-node:0.1.0".into(),
            image_id: "ghcr.io/switchyard-dev/media-node@sha256:ab".into(),
            state: State::Running { started_at: "2026-01-01T00:00:00Z".into() },
            ready: false,
            ready_since: "2026-01-01T00:00:01Z".into(),
            restart_count: 2,
            last: Some(terminated(None, Some(9), "2026-01-01T00:00:00Z".into(), "2026-01-01T00:00:00Z".into())),
        }
    }

    #[test]
    fn an_unready_container_makes_both_conditions_false_with_the_kubelets_reason() {
        let p = report().patch();
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        for (c, kind) in conds.iter().zip(["Ready", "ContainersReady"]) {
            assert_eq!(c["type"], kind);
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "ContainersNotReady");
            assert_eq!(c["message"], "containers with unready status: [media-node]");
            assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:01Z");
        }
        let cs = &p["status"]["containerStatuses"][0];
        assert_eq!(cs["ready"], false);
        assert_eq!(cs["started"], true);
        assert_eq!(cs["restartCount"], 2);
        assert_eq!(cs["state"]["running"]["startedAt"], "2026-01-01T00:00:00Z");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 137, "128 + SIGKILL");
        assert_eq!(cs["lastState"]["terminated"]["signal"], 9);
        assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    }

    #[test]
    fn a_ready_container_clears_the_reason_and_a_waiting_one_says_why() {
        let mut r = report();
        r.ready = true;
        let p = r.patch();
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
        assert!(p["status"]["conditions"][0]["reason"].is_null(), "null removes it in a merge patch");
        r.ready = false;
        r.state = State::Waiting { reason: "CrashLoopBackOff".into(), message: "back-off 4s".into() };
        r.last = None;
        let cs = &r.patch()["status"]["containerStatuses"][0];
        assert_eq!(cs["started"], false);
        assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(cs["lastState"], json!({}));
        assert_eq!(terminated(Some(0), None, String::new(), String::new()).reason, "Completed");
        assert_eq!(terminated(Some(3), None, String::new(), String::new()).signal, None);
    }
}
