//! Replica recommendations for the TURN fleet (relayed bandwidth) and the SFU fleet
//! (participants), modelled on the Horizontal Pod Autoscaler's algorithm:
//!
//! ```text
//!  poll ──► raw = ceil(total / targetPerPod)   (or current, while within ±tolerance)
//!       ──► clamp to [min, max]                ──► history of (time, recommendation)
//!       ──► up:   min of the up-window, at most +max(100 %, 4 pods) per step
//!           down: only once every recommendation in the whole down-window is below
//!                 current; then to the highest of them
//! ```
//!
//! Scaling up is cheap and late scaling up drops calls, so it happens at once; scaling
//! down means draining a pod that carries live media, so it waits for the load to have
//! stayed low for the whole stabilization window. The step limit reads the issue's
//! "+100 % or +4 pods, whichever is larger" exactly as the HPA's default scale-up policy
//! (`Percent 100` and `Pods 4`, `selectPolicy: Max`): from `c` pods one step may reach
//! `c + max(c, 4)`. Below `min` or above `max` (the user edited the range) the fleet moves
//! to the range at once: that is configuration, not load.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The knobs of one fleet's autoscaler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Fewest pods.
    pub min: u32,
    /// Most pods.
    pub max: u32,
    /// No change while per-pod load is within this percentage of the target.
    pub tolerance_percent: u32,
    /// Load must have stayed above target this long before scaling up (0: at once).
    pub scale_up_window: Duration,
    /// Load must have stayed below target this long before scaling down.
    pub scale_down_window: Duration,
}

impl Policy {
    /// The defaults of the issue: ±10 %, scale up at once, scale down after 300 s.
    pub fn new(min: u32, max: u32) -> Self {
        Self {
            min,
            max,
            tolerance_percent: 10,
            scale_up_window: Duration::ZERO,
            scale_down_window: Duration::from_secs(300),
        }
    }

    /// The largest replica count one scale-up step may reach from `current`.
    pub fn max_step_up(current: u32) -> u32 {
        current.saturating_add(current.max(4))
    }
}

/// What to do with a fleet now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Keep `current` replicas.
    Hold,
    /// Raise replicas to this count now.
    Up(u32),
    /// Lower replicas to this count, draining one victim at a time.
    Down(u32),
}

/// One evaluation's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// ceil(total / target), before tolerance and clamping (for metrics and status).
    pub raw: u32,
    /// The replica count the fleet should have now.
    pub desired: u32,
    /// The action that gets from `current` to `desired`.
    pub scale: Scale,
}

/// The per-fleet memory the HPA keeps: past recommendations, so a scale-down can check
/// that the load stayed low for the whole window.
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    history: VecDeque<(Instant, u32)>,
    first_seen: Option<Instant>,
}

impl Autoscaler {
    /// A fresh autoscaler with no history (after an operator restart the window starts
    /// again, which errs on the side of keeping pods).
    pub fn new() -> Self {
        Self::default()
    }

    /// Evaluate one sample: `total` load across the fleet, the per-pod `target` (0: no
    /// load-based scaling) and `current` replicas, at time `now`.
    pub fn recommend(
        &mut self,
        policy: &Policy,
        current: u32,
        total: u64,
        target: u64,
        now: Instant,
    ) -> Recommendation {
        let raw = raw_desired(current, total, target);
        // Integer arithmetic: 880M over 4 × 200M is exactly +10 %, which floats get wrong.
        let within_tolerance = target > 0 && current > 0 && {
            let capacity = u128::from(current) * u128::from(target);
            u128::from(total).abs_diff(capacity) * 100 <= capacity * u128::from(policy.tolerance_percent)
        };
        let unclamped = if target == 0 || within_tolerance { current } else { raw };
        let rec = unclamped.clamp(policy.min, policy.max.max(policy.min));

        self.first_seen.get_or_insert(now);
        self.history.push_back((now, rec));
        let keep = policy.scale_up_window.max(policy.scale_down_window);
        while self.history.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > keep) {
            self.history.pop_front();
        }

        let in_window = |w: Duration| self.history.iter().filter(move |(t, _)| now.saturating_duration_since(*t) <= w);
        let (desired, scale) = if current < policy.min {
            (policy.min, Scale::Up(policy.min))
        } else if current > policy.max.max(policy.min) {
            let to = policy.max.max(policy.min);
            (to, Scale::Down(to))
        } else if rec > current {
            // Every recommendation in the up-window must be above current; scale to the
            // lowest of them, limited to one step.
            let floor = in_window(policy.scale_up_window).map(|(_, r)| *r).min().unwrap_or(rec);
            let covered = self.covers(policy.scale_up_window, now);
            if floor > current && covered {
                let to = floor.min(Policy::max_step_up(current));
                (to, Scale::Up(to))
            } else {
                (current, Scale::Hold)
            }
        } else if rec < current {
            let ceiling = in_window(policy.scale_down_window).map(|(_, r)| *r).max().unwrap_or(rec);
            let covered = self.covers(policy.scale_down_window, now);
            if ceiling < current && covered { (ceiling, Scale::Down(ceiling)) } else { (current, Scale::Hold) }
        } else {
            (current, Scale::Hold)
        };
        Recommendation { raw, desired, scale }
    }

    /// True when samples have been recorded for at least `window` (the history spans it).
    fn covers(&self, window: Duration, now: Instant) -> bool {
        self.first_seen.is_some_and(|t| now.saturating_duration_since(t) >= window)
    }
}

/// ceil(total / target); with no target the count stays.
fn raw_desired(current: u32, total: u64, target: u64) -> u32 {
    if target == 0 {
        return current;
    }
    u32::try_from(total.div_ceil(target)).unwrap_or(u32::MAX)
}

/// One pod as the victim choice sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLoad {
    /// The pod name.
    pub name: String,
    /// Live TURN allocations (TURN) or participants (SFU).
    pub load: u64,
    /// Already draining (a victim chosen earlier).
    pub draining: bool,
}

/// The TURN pod to remove: one already draining if any (finish what was started), else
/// the one with the fewest live allocations, so the fewest calls have to move. Ties go
/// to the lexically last name so the choice is stable across polls.
pub fn turn_victim(pods: &[PodLoad]) -> Option<&PodLoad> {
    if let Some(p) = pods.iter().find(|p| p.draining) {
        return Some(p);
    }
    pods.iter().min_by(|a, b| a.load.cmp(&b.load).then_with(|| b.name.cmp(&a.name)))
}

/// The SFU pod to remove: a StatefulSet always deletes its highest ordinal when scaled
/// down, so that is the pod to drain first, whatever its load.
pub fn sfu_victim(pods: &[PodLoad]) -> Option<&PodLoad> {
    pods.iter().filter_map(|p| ordinal(&p.name).map(|o| (o, p))).max_by_key(|(o, _)| *o).map(|(_, p)| p)
}

/// The StatefulSet ordinal at the end of a pod name (`edge-sfu-3` → 3).
pub fn ordinal(pod: &str) -> Option<u32> {
    pod.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1_000_000;

    struct Clock(Instant);
    impl Clock {
        fn at(&self, secs: u64) -> Instant {
            self.0 + Duration::from_secs(secs)
        }
    }

    fn clock() -> Clock {
        Clock(Instant::now())
    }

    #[test]
    fn raw_desired_table() {
        // (current, total, target, want)
        for (current, total, target, want) in
            [(1, 0, 200 * M, 0), (1, 1, 200 * M, 1), (3, 400 * M, 200 * M, 2), (3, 401 * M, 200 * M, 3), (2, 5, 0, 2)]
        {
            assert_eq!(raw_desired(current, total, target), want, "{current} {total} {target}");
        }
    }

    #[test]
    fn tolerance_holds_within_ten_percent() {
        let c = clock();
        let policy = Policy::new(1, 20);
        // 4 pods at 200M each: 880M is +10 %, 720M is -10 %: both hold.
        for total in [720 * M, 800 * M, 880 * M] {
            let mut a = Autoscaler::new();
            let r = a.recommend(&policy, 4, total, 200 * M, c.at(0));
            assert_eq!((r.desired, r.scale), (4, Scale::Hold), "total {total}");
        }
        // 881M is beyond +10 %: scale up to ceil(881/200) = 5.
        let r = Autoscaler::new().recommend(&policy, 4, 881 * M, 200 * M, c.at(0));
        assert_eq!((r.raw, r.desired, r.scale), (5, 5, Scale::Up(5)));
    }

    #[test]
    fn scale_up_is_immediate_but_step_limited() {
        let c = clock();
        let policy = Policy::new(1, 100);
        // (current, wanted, reached in one step)
        for (current, total_pods, want) in [(1, 50, 5), (2, 50, 6), (4, 50, 8), (10, 50, 20), (30, 50, 50), (3, 4, 4)] {
            let r = Autoscaler::new().recommend(&policy, current, total_pods * 200 * M, 200 * M, c.at(0));
            assert_eq!(r.scale, Scale::Up(want), "from {current} toward {total_pods}");
        }
        assert_eq!(Policy::max_step_up(0), 4);
        assert_eq!(Policy::max_step_up(7), 14);
    }

    #[test]
    fn clamped_to_min_and_max() {
        let c = clock();
        let policy = Policy::new(2, 6);
        let r = Autoscaler::new().recommend(&policy, 6, 10_000 * M, 200 * M, c.at(0));
        assert_eq!((r.raw, r.desired, r.scale), (50, 6, Scale::Hold));
        // Below min: straight to min, no window.
        let r = Autoscaler::new().recommend(&policy, 0, 0, 200 * M, c.at(0));
        assert_eq!(r.scale, Scale::Up(2));
        // Above max (range edited): straight to max.
        let r = Autoscaler::new().recommend(&policy, 9, 9 * 200 * M, 200 * M, c.at(0));
        assert_eq!(r.scale, Scale::Down(6));
    }

    #[test]
    fn scale_down_waits_for_the_whole_window() {
        let c = clock();
        let policy = Policy::new(1, 10);
        let mut a = Autoscaler::new();
        // Load falls from 5 pods' worth to 2 pods' worth at t=0 and stays there.
        for t in (0..300).step_by(10) {
            let r = a.recommend(&policy, 5, 400 * M, 200 * M, c.at(t));
            assert_eq!((r.raw, r.scale), (2, Scale::Hold), "t={t}");
        }
        let r = a.recommend(&policy, 5, 400 * M, 200 * M, c.at(300));
        assert_eq!(r.scale, Scale::Down(2));
    }

    #[test]
    fn a_spike_inside_the_window_postpones_and_bounds_the_scale_down() {
        let c = clock();
        let policy = Policy::new(1, 10);
        let mut a = Autoscaler::new();
        for t in (0..=100).step_by(10) {
            a.recommend(&policy, 5, 400 * M, 200 * M, c.at(t));
        }
        // One sample at 4 pods' worth (still below 5, so no scale-up).
        a.recommend(&policy, 5, 800 * M, 200 * M, c.at(110));
        for t in (120..=400).step_by(10) {
            let r = a.recommend(&policy, 5, 400 * M, 200 * M, c.at(t));
            // The window still holds the 4: scale only to 4, never to 2.
            assert_eq!(r.scale, if t >= 300 { Scale::Down(4) } else { Scale::Hold }, "t={t}");
        }
        // Once the spike leaves the window (110 + 300 < 420), the full drop is allowed.
        let r = a.recommend(&policy, 4, 400 * M, 200 * M, c.at(420));
        assert_eq!(r.scale, Scale::Down(2));
    }

    #[test]
    fn load_back_above_current_cancels_a_pending_scale_down() {
        let c = clock();
        let policy = Policy::new(1, 10);
        let mut a = Autoscaler::new();
        for t in (0..290).step_by(10) {
            a.recommend(&policy, 5, 200 * M, 200 * M, c.at(t));
        }
        let r = a.recommend(&policy, 5, 1_000 * M, 200 * M, c.at(290));
        assert_eq!(r.scale, Scale::Hold);
        let r = a.recommend(&policy, 5, 200 * M, 200 * M, c.at(300));
        assert_eq!(r.scale, Scale::Hold, "the 5 recommended at t=290 keeps the fleet at 5");
    }

    #[test]
    fn scale_up_window_when_configured() {
        let c = clock();
        let policy = Policy { scale_up_window: Duration::from_secs(60), ..Policy::new(1, 10) };
        let mut a = Autoscaler::new();
        assert_eq!(a.recommend(&policy, 2, 1_000 * M, 200 * M, c.at(0)).scale, Scale::Hold);
        assert_eq!(a.recommend(&policy, 2, 1_000 * M, 200 * M, c.at(30)).scale, Scale::Hold);
        // The lowest recommendation of the last 60 s decides: 3 (600M) at t=50.
        a.recommend(&policy, 2, 600 * M, 200 * M, c.at(50));
        assert_eq!(a.recommend(&policy, 2, 1_000 * M, 200 * M, c.at(60)).scale, Scale::Up(3));
    }

    #[test]
    fn zero_target_never_scales_on_load() {
        let c = clock();
        let r = Autoscaler::new().recommend(&Policy::new(1, 10), 3, 1_000_000, 0, c.at(0));
        assert_eq!((r.desired, r.scale), (3, Scale::Hold));
    }

    #[test]
    fn invariants_over_random_load() {
        use rand::{Rng, SeedableRng};
        let c = clock();
        let policy = Policy::new(2, 30);
        for seed in 0..20 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut a = Autoscaler::new();
            let mut current = 2u32;
            let mut samples: Vec<(u64, u32)> = Vec::new();
            let (mut ups, mut downs) = (0, 0);
            for step in 0..600u64 {
                let t = step * 10;
                // Bursty load: long calm stretches and sudden peaks.
                let total =
                    if rng.random_bool(0.1) { rng.random_range(0..6_000) } else { rng.random_range(0..800) } * M;
                let r = a.recommend(&policy, current, total, 200 * M, c.at(t));
                samples.push((t, r.raw));
                assert!((policy.min..=policy.max).contains(&r.desired), "seed {seed} t {t}: {r:?}");
                match r.scale {
                    Scale::Up(n) => {
                        assert!(n > current && n <= Policy::max_step_up(current), "seed {seed} t {t}: {current} → {n}");
                        ups += 1;
                        current = n;
                    }
                    Scale::Down(n) => {
                        assert!(t >= 300, "seed {seed}: scaled down before a whole window was seen");
                        for (ts, raw) in samples.iter().filter(|(ts, _)| t - ts <= 300) {
                            let rec = (*raw).clamp(policy.min, policy.max);
                            assert!(rec < current, "seed {seed} t {t}: sample at {ts} wanted {rec} ≥ {current}");
                            assert!(n >= rec, "seed {seed} t {t}: went to {n}, below the window's {rec}");
                        }
                        downs += 1;
                        current = n;
                    }
                    Scale::Hold => assert_eq!(r.desired, current),
                }
            }
            assert!(ups > 0 && downs > 0, "seed {seed}: the load should exercise both directions");
        }
    }

    fn pod(name: &str, load: u64, draining: bool) -> PodLoad {
        PodLoad { name: name.into(), load, draining }
    }

    #[test]
    fn turn_victim_has_fewest_allocations() {
        let pods = [pod("t-a", 30, false), pod("t-b", 2, false), pod("t-c", 9, false)];
        assert_eq!(turn_victim(&pods).unwrap().name, "t-b");
        let tie = [pod("t-a", 2, false), pod("t-b", 2, false)];
        assert_eq!(turn_victim(&tie).unwrap().name, "t-b");
        let draining = [pod("t-a", 0, false), pod("t-b", 50, true)];
        assert_eq!(turn_victim(&draining).unwrap().name, "t-b", "finish the drain already started");
        assert_eq!(turn_victim(&[]), None);
    }

    #[test]
    fn sfu_victim_is_the_highest_ordinal() {
        let pods = [pod("edge-sfu-0", 0, false), pod("edge-sfu-10", 900, false), pod("edge-sfu-9", 1, false)];
        assert_eq!(sfu_victim(&pods).unwrap().name, "edge-sfu-10");
        assert_eq!(ordinal("edge-sfu-3"), Some(3));
        assert_eq!(ordinal("edge"), None);
    }
}
