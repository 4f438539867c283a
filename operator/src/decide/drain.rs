//! Removing a pod without dropping calls: pick a victim, drain it, and only then take
//! the replica away.
//!
//! ```text
//!  Scale::Down, nothing draining ─► Start(victim)   (annotate, POST /drain)
//!  draining, load > 0, before deadline ─► Wait
//!  draining, load = 0 or deadline passed or pod gone
//!       ├─ still too many pods ─► Remove  (replicas − 1; the workload deletes the victim)
//!       └─ load came back       ─► Replace (delete the victim; a fresh pod takes its place)
//! ```
//!
//! One pod drains at a time per fleet: draining is slow (up to the grace period) and
//! removing capacity in parallel would overload the pods that stay.

use std::time::SystemTime;

use super::autoscale::Scale;

/// A drain in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draining {
    /// The victim pod.
    pub pod: String,
    /// When the operator stops waiting for it to empty.
    pub deadline: SystemTime,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Nothing to drain.
    Idle,
    /// Begin draining this pod.
    Start(String),
    /// The victim still carries load; keep the replica count.
    Wait,
    /// The victim is empty (or out of time): lower replicas by one.
    Remove(String),
    /// The victim is empty but the fleet no longer wants to shrink: delete the pod so the
    /// workload replaces it with a fresh, non-draining one.
    Replace(String),
}

/// Decide the next drain step. `victim_load` is the draining pod's live load (`None`
/// when the pod no longer exists); `candidate` is who would be drained next.
pub fn next_step(
    scale: Scale,
    current: u32,
    draining: Option<&Draining>,
    victim_load: Option<u64>,
    candidate: Option<&str>,
    now: SystemTime,
) -> DrainStep {
    let wants_fewer = matches!(scale, Scale::Down(to) if to < current);
    match draining {
        Some(d) => {
            let done = victim_load.is_none_or(|l| l == 0) || now >= d.deadline;
            match (done, wants_fewer) {
                (false, _) => DrainStep::Wait,
                (true, true) => DrainStep::Remove(d.pod.clone()),
                (true, false) => DrainStep::Replace(d.pod.clone()),
            }
        }
        None if wants_fewer => candidate.map_or(DrainStep::Idle, |c| DrainStep::Start(c.to_owned())),
        None => DrainStep::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn drain_table() {
        let d = Draining { pod: "edge-turn-x".into(), deadline: t(100) };
        let cases = [
            ("no scale-down", Scale::Hold, None, None, DrainStep::Idle),
            ("start", Scale::Down(2), None, None, DrainStep::Start("cand".into())),
            ("busy victim", Scale::Down(2), Some(&d), Some(5), DrainStep::Wait),
            ("empty victim", Scale::Down(2), Some(&d), Some(0), DrainStep::Remove("edge-turn-x".into())),
            ("victim vanished", Scale::Down(2), Some(&d), None, DrainStep::Remove("edge-turn-x".into())),
            ("load came back", Scale::Hold, Some(&d), Some(0), DrainStep::Replace("edge-turn-x".into())),
            ("scale up meanwhile", Scale::Up(5), Some(&d), Some(0), DrainStep::Replace("edge-turn-x".into())),
        ];
        for (name, scale, draining, load, want) in cases {
            assert_eq!(next_step(scale, 3, draining, load, Some("cand"), t(50)), want, "{name}");
        }
    }

    #[test]
    fn the_grace_deadline_ends_the_wait() {
        let d = Draining { pod: "p".into(), deadline: t(100) };
        assert_eq!(next_step(Scale::Down(1), 2, Some(&d), Some(9), None, t(99)), DrainStep::Wait);
        assert_eq!(next_step(Scale::Down(1), 2, Some(&d), Some(9), None, t(100)), DrainStep::Remove("p".into()));
    }

    #[test]
    fn no_candidate_means_idle() {
        assert_eq!(next_step(Scale::Down(1), 2, None, None, None, t(0)), DrainStep::Idle);
    }
}
