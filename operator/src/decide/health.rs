//! A MediaCluster's `Ready` and `Degraded` conditions from what its pods show.
//!
//! ```text
//!  Ready    = a call can be placed now:
//!             a media-node that is ready, answers its status poll, is not draining and
//!             has room for one more room  (and, in Gateway mode, a turn-node that is
//!             ready and answers: every client's media goes through it)
//!  Degraded = something needs a human: a pod that cannot start (crash loop, image pull,
//!             config error: the kubelet's reason and the container's last words), a
//!             ready pod whose status endpoint does not answer, fewer ready pods than
//!             replicas.min
//! ```
//!
//! "All replicas ready" is not Ready: a cluster scaling from 2 to 3 pods takes calls,
//! and one whose every node crash-loops at start does not, whatever the replica counts
//! say. How far the fleets are from their desired size is `Progressing`'s business.

/// One pod as the controller observed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodHealth {
    /// Pod name.
    pub name: String,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// Its `GET /internal/status` answered this poll.
    pub answered: bool,
    /// Draining or being deleted: takes no new rooms or allocations.
    pub draining: bool,
    /// media-node only: at a capacity limit, counting every room placed on it.
    pub full: bool,
    /// Why it cannot start, from the pod's container status (`CrashLoopBackOff,
    /// restarted 4 times, last exit 1: …`); `None` when nothing is known to be wrong.
    pub problem: Option<String>,
}

impl PodHealth {
    fn serving(&self) -> bool {
        self.ready && self.answered && !self.draining
    }
}

/// What the conditions are computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The media-node pods.
    pub sfu: Vec<PodHealth>,
    /// The turn-node pods.
    pub turn: Vec<PodHealth>,
    /// `sfu.replicas.max`.
    pub sfu_max: i32,
    /// Gateway mode: media needs TURN.
    pub gateway: bool,
    /// Ready pods below `replicas.min` in either fleet (and the workloads exist).
    pub below_min: bool,
}

/// One condition's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `status: "True"`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What a human reads.
    pub message: String,
}

fn verdict(status: bool, reason: &'static str, message: String) -> Verdict {
    Verdict { status, reason, message }
}

/// The names and problems of the pods that have one, `; `-separated.
fn problems(pods: &[&PodHealth]) -> String {
    pods.iter()
        .filter_map(|p| p.problem.as_ref().map(|why| format!("{}: {why}", p.name)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `Ready` condition.
pub fn ready(f: &Facts) -> Verdict {
    let sfu_serving: Vec<&PodHealth> = f.sfu.iter().filter(|p| p.serving()).collect();
    let placeable = sfu_serving.iter().filter(|p| !p.full).count();
    let turn_serving = f.turn.iter().filter(|p| p.serving()).count();
    let sfu_problems: Vec<&PodHealth> = f.sfu.iter().filter(|p| p.problem.is_some()).collect();
    let turn_problems: Vec<&PodHealth> = f.turn.iter().filter(|p| p.problem.is_some()).collect();
    if f.sfu_max == 0 {
        return verdict(false, "NoMediaNodes", "sfu.replicas.max is 0: no room can be placed".into());
    }
    if placeable == 0 {
        if !sfu_serving.is_empty() {
            let n = sfu_serving.len();
            return verdict(false, "NoCapacity", format!("every media-node is full ({n} serving, 0 can take a room)"));
        }
        if !sfu_problems.is_empty() {
            return verdict(false, "NodesNotStarting", format!("no media-node can start: {}", problems(&sfu_problems)));
        }
        let message = match f.sfu.len() {
            0 => "no media-node pod exists yet".to_owned(),
            n => format!("no media-node of {n} is ready, answering its status endpoint and not draining"),
        };
        return verdict(false, "NoReadyMediaNode", message);
    }
    if f.gateway && turn_serving == 0 {
        if !turn_problems.is_empty() {
            return verdict(
                false,
                "NodesNotStarting",
                format!(
                    "Gateway mode relays every call through TURN, and no turn-node can start: {}",
                    problems(&turn_problems)
                ),
            );
        }
        return verdict(
            false,
            "NoReadyTurnNode",
            format!(
                "Gateway mode relays every call through TURN, and no turn-node of {} is ready and answering",
                f.turn.len()
            ),
        );
    }
    let turn = if f.gateway || !f.turn.is_empty() {
        format!(", turn-node {turn_serving}/{} serving", f.turn.len())
    } else {
        String::new()
    };
    verdict(
        true,
        "CallsCanBePlaced",
        format!("media-node {}/{} serving, {placeable} can take rooms{turn}", sfu_serving.len(), f.sfu.len()),
    )
}

/// The `Degraded` condition.
pub fn degraded(f: &Facts) -> Verdict {
    let all: Vec<&PodHealth> = f.sfu.iter().chain(&f.turn).collect();
    let failing: Vec<&PodHealth> = all.iter().copied().filter(|p| p.problem.is_some()).collect();
    if !failing.is_empty() {
        return verdict(true, "NodesNotStarting", problems(&failing));
    }
    let silent: Vec<&str> = all.iter().filter(|p| p.ready && !p.answered).map(|p| p.name.as_str()).collect();
    if !silent.is_empty() {
        return verdict(
            true,
            "NodeStatusUnavailable",
            format!(
                "{} ready pod(s) did not answer GET /internal/status (not started, or not our image?): {}",
                silent.len(),
                silent.join(", ")
            ),
        );
    }
    if f.below_min {
        return verdict(true, "BelowMinimum", "fewer ready pods than replicas.min".into());
    }
    verdict(false, "Healthy", "all nodes report status".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(name: &str) -> PodHealth {
        PodHealth { name: name.into(), ready: true, answered: true, ..PodHealth::default() }
    }

    fn crashing(name: &str) -> PodHealth {
        PodHealth {
            name: name.into(),
            problem: Some("CrashLoopBackOff, restarted 4 times, last exit 1: webhook \"http://\": empty string".into()),
            ..PodHealth::default()
        }
    }

    fn facts(sfu: Vec<PodHealth>, turn: Vec<PodHealth>) -> Facts {
        Facts { sfu, turn, sfu_max: 2, gateway: true, below_min: false }
    }

    #[test]
    fn ready_means_a_call_can_be_placed_now() {
        let full = PodHealth { full: true, ..serving("edge-sfu-0") };
        let draining = PodHealth { draining: true, ..serving("edge-sfu-0") };
        let silent = PodHealth { answered: false, ..serving("edge-sfu-0") };
        let cases = [
            ("serving", facts(vec![serving("edge-sfu-0")], vec![serving("t")]), true, "CallsCanBePlaced"),
            ("SFU 0/0", Facts { sfu_max: 0, ..facts(vec![], vec![serving("t")]) }, false, "NoMediaNodes"),
            ("no pod yet", facts(vec![], vec![serving("t")]), false, "NoReadyMediaNode"),
            ("crash loop", facts(vec![crashing("edge-sfu-0")], vec![serving("t")]), false, "NodesNotStarting"),
            ("not answering", facts(vec![silent], vec![serving("t")]), false, "NoReadyMediaNode"),
            ("draining", facts(vec![draining], vec![serving("t")]), false, "NoReadyMediaNode"),
            ("full", facts(vec![full.clone()], vec![serving("t")]), false, "NoCapacity"),
            (
                "one full, one free",
                facts(vec![full, serving("edge-sfu-1")], vec![serving("t")]),
                true,
                "CallsCanBePlaced",
            ),
            ("Gateway without TURN", facts(vec![serving("edge-sfu-0")], vec![]), false, "NoReadyTurnNode"),
            (
                "Gateway, TURN crashing",
                facts(vec![serving("edge-sfu-0")], vec![crashing("t")]),
                false,
                "NodesNotStarting",
            ),
            (
                "Direct without TURN",
                Facts { gateway: false, ..facts(vec![serving("edge-sfu-0")], vec![]) },
                true,
                "CallsCanBePlaced",
            ),
        ];
        for (name, f, status, reason) in cases {
            let v = ready(&f);
            assert_eq!((v.status, v.reason), (status, reason), "{name}: {}", v.message);
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let f = facts(vec![crashing("edge-sfu-0"), serving("edge-sfu-1")], vec![serving("edge-turn-x")]);
        assert_eq!(ready(&f).message, "media-node 1/2 serving, 1 can take rooms, turn-node 1/1 serving");
        let d = degraded(&f);
        assert_eq!((d.status, d.reason), (true, "NodesNotStarting"));
        assert_eq!(
            d.message,
            "edge-sfu-0: CrashLoopBackOff, restarted 4 times, last exit 1: webhook \"http://\": empty string"
        );

        let f = facts(vec![crashing("edge-sfu-0")], vec![serving("t")]);
        assert_eq!(
            ready(&f).message,
            "no media-node can start: edge-sfu-0: CrashLoopBackOff, restarted 4 times, last exit 1: webhook \"http://\": empty string"
        );
        let silent = PodHealth { answered: false, ..serving("edge-sfu-0") };
        let d = degraded(&facts(vec![silent, serving("edge-sfu-1")], vec![serving("t")]));
        assert_eq!((d.status, d.reason), (true, "NodeStatusUnavailable"));
        assert_eq!(
            d.message,
            "1 ready pod(s) did not answer GET /internal/status (not started, or not our image?): edge-sfu-0"
        );
        let d = degraded(&Facts { below_min: true, ..facts(vec![serving("a")], vec![serving("t")]) });
        assert_eq!((d.status, d.reason), (true, "BelowMinimum"));
        let d = degraded(&facts(vec![serving("a")], vec![serving("t")]));
        assert_eq!((d.status, d.reason), (false, "Healthy"));
    }
}
