//! What to do when a workload's process ends: restart after a delay, give
//! up, or leave it ended. Pure: the caller passes the run's length and the
//! jitter, so every case is a row in a table test.

use std::time::Duration;

use crate::model::{Exit, Restart, RestartPolicy};

/// The shortest time from one run's start to the next one's: a workload
/// that exits at once with `backoff = "0s"` restarts at most ten times a
/// second (unbounded, 70 restarts a second took 42 % of a core). A run
/// longer than this restarts with no added delay.
pub const RESTART_FLOOR: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Start again after `delay`; `failures` consecutive failures so far.
    Restart { delay: Duration, failures: u32 },
    /// `max_retries` consecutive failures: state `failed` until the manifest
    /// changes or an operator restarts it.
    GiveUp { failures: u32 },
    /// Done: `never`, or `on-failure` after a success. State `exited`.
    Done,
}

/// Decides after a run of `ran_for` that ended with `exit`, following
/// `prior_failures` consecutive failures. `jitter` in [0, 1) stretches the
/// delay by up to 10% so that workloads failing together do not restart in
/// lockstep; the delay never exceeds `backoff_max`.
pub fn decide(restart: &Restart, exit: Exit, ran_for: Duration, prior_failures: u32, jitter: f64) -> Decision {
    let healthy_run = ran_for >= restart.reset_after.as_std();
    let failed = !exit.success();
    let failures = match (failed, healthy_run) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => prior_failures.saturating_add(1),
    };
    match restart.policy {
        RestartPolicy::Never => return Decision::Done,
        RestartPolicy::OnFailure if !failed => return Decision::Done,
        RestartPolicy::OnFailure if restart.max_retries > 0 && failures > restart.max_retries => {
            return Decision::GiveUp { failures };
        }
        _ => {}
    }
    let delay = delay(restart, failures, jitter).max(RESTART_FLOOR.saturating_sub(ran_for));
    Decision::Restart { delay, failures }
}

/// `backoff` doubled for each consecutive failure after the first, plus
/// jitter, capped at `backoff_max`. A success (failures 0) restarts after
/// `backoff` too (policy `always`).
fn delay(restart: &Restart, failures: u32, jitter: f64) -> Duration {
    let base = restart.backoff.as_std();
    let max = restart.backoff_max.as_std();
    let doublings = failures.saturating_sub(1).min(32);
    let grown = base.saturating_mul(1u32 << doublings.min(31)).min(max);
    let stretched = grown.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0));
    stretched.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Duration as D;

    fn restart(policy: RestartPolicy, max_retries: u32) -> Restart {
        Restart {
            policy,
            max_retries,
            backoff: D::from_millis(100),
            backoff_max: D::from_secs(30),
            reset_after: D::from_secs(60),
        }
    }

    const SHORT: Duration = Duration::from_secs(1);
    const LONG: Duration = Duration::from_secs(61);

    #[test]
    fn the_table() {
        use Decision::*;
        use Exit::*;
        use RestartPolicy::*;
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let rows: &[(RestartPolicy, u32, Exit, Duration, u32, Decision)] = &[
            // policy, max_retries, exit, ran for, prior failures => decision
            (Never, 10, Code(1), SHORT, 0, Done),
            (Never, 10, Code(0), SHORT, 0, Done),
            (OnFailure, 10, Code(0), SHORT, 5, Done),
            (OnFailure, 10, Code(1), SHORT, 0, Restart { delay: ms(100), failures: 1 }),
            (OnFailure, 10, Signal(9), SHORT, 1, Restart { delay: ms(200), failures: 2 }),
            (OnFailure, 10, OomKilled, SHORT, 2, Restart { delay: ms(400), failures: 3 }),
            (OnFailure, 10, Code(1), SHORT, 8, Restart { delay: ms(25600), failures: 9 }),
            (OnFailure, 10, Code(1), SHORT, 9, Restart { delay: Duration::from_secs(30), failures: 10 }),
            (OnFailure, 10, Code(1), SHORT, 10, GiveUp { failures: 11 }),
            (OnFailure, 0, Code(1), SHORT, 1000, Restart { delay: Duration::from_secs(30), failures: 1001 }),
            (OnFailure, 10, Code(1), LONG, 9, Restart { delay: ms(100), failures: 1 }),
            (OnFailure, 3, Code(1), SHORT, 3, GiveUp { failures: 4 }),
            (Always, 1, Code(0), SHORT, 0, Restart { delay: ms(100), failures: 0 }),
            (Always, 1, Code(1), SHORT, 50, Restart { delay: Duration::from_secs(30), failures: 51 }),
            (Always, 1, Code(0), SHORT, 7, Restart { delay: ms(100), failures: 0 }),
        ];
        for (policy, max, exit, ran, prior, expected) in rows {
            let got = decide(&restart(*policy, *max), *exit, *ran, *prior, 0.0);
            assert_eq!(got, *expected, "{policy:?} max={max} {exit:?} ran={ran:?} prior={prior}");
        }
    }

    #[test]
    fn jitter_stretches_by_at_most_a_tenth_and_never_past_the_cap() {
        let r = restart(RestartPolicy::OnFailure, 0);
        let Decision::Restart { delay, .. } = decide(&r, Exit::Code(1), SHORT, 0, 0.999) else { panic!() };
        assert!(delay > Duration::from_millis(100) && delay <= Duration::from_millis(110), "{delay:?}");
        let Decision::Restart { delay, .. } = decide(&r, Exit::Code(1), SHORT, 40, 0.999) else { panic!() };
        assert_eq!(delay, Duration::from_secs(30));
    }

    #[test]
    fn a_zero_backoff_restarts_at_once_but_never_more_than_ten_times_a_second() {
        let mut r = restart(RestartPolicy::Always, 0);
        r.backoff = D::from_millis(0);
        assert_eq!(decide(&r, Exit::Code(1), SHORT, 5, 0.5), Decision::Restart { delay: Duration::ZERO, failures: 6 });
        let quick = Duration::from_millis(30);
        assert_eq!(
            decide(&r, Exit::Code(0), quick, 0, 0.5),
            Decision::Restart { delay: Duration::from_millis(70), failures: 0 },
            "the floor: 100 ms from start to start"
        );
    }
}
