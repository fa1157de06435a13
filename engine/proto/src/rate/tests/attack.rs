//! Adversarial tests of the tier planner's moves up (`climbs`) and near-duplicate merges
//! (session 8): hostile validated members whose reports lie, and plans whose moves interact.

use super::*;

/// A member with one lossy report after clean ones: it just lost (not yet congested).
fn just_lost(config: &RateConfig, rate: u64) -> PathEstimate {
    let mut estimate = settled_reports(config, rate, 0.0, 3);
    let per_report = rate as f64 * STEP.as_secs_f64() / DATAGRAM_BITS as f64;
    estimate.observe(
        config,
        (0.7 * per_report) as u32,
        (0.3 * per_report) as u32,
        STEP,
        DATAGRAM_BITS,
        rate,
        None,
        Counts::Settled,
    );
    assert_eq!(estimate.congested_streak, 1);
    estimate
}

/// Every tier a move in `moves` sends a member to keeps at least one member once all of them
/// are carried out (the endpoint closes a tier when its last member leaves, and a move to a
/// closed tier has nowhere to go).
fn destinations_stay_open(members_of: &[usize], moves: &[Move]) {
    for m in moves {
        if let Target::Tier(to) = m.to {
            let leaving = moves.iter().filter(|n| n.from == to).count();
            assert!(
                members_of[to] > leaving,
                "a move to tier {to}, which every member leaves in the same plan: {moves:?}"
            );
        }
    }
}

#[test]
fn a_move_up_never_goes_to_a_tier_that_a_merge_empties_in_the_same_plan() {
    let config = RateConfig::default();
    // Tier 0, 40 Mbit/s: a member that just lost (the tier is held) and one that keeps up
    // (it may go faster). Tier 1, 90 Mbit/s, settled and holding (its member has not
    // reported since it settled): it merges into tier 2, 100 Mbit/s.
    let rates = [40_000_000, 90_000_000, 100_000_000];
    let mut controls: Vec<TierControl> = rates
        .iter()
        .map(|&rate| TierControl::new_known(&config, at(0), rate))
        .collect();
    let held = just_lost(&config, rates[0]);
    let keeps_up = settled_reports(&config, rates[0], 0.0, 3);
    let quiet = PathEstimate::default();
    let fast = PathEstimate::default();
    let moves = {
        let mut plans = memberless_plans(&mut controls);
        plans[0].members = vec![
            MemberPlan {
                id: 1,
                estimate: &held,
                moved_at: None,
            },
            MemberPlan {
                id: 2,
                estimate: &keeps_up,
                moved_at: None,
            },
        ];
        plans[1].members = vec![MemberPlan {
            id: 3,
            estimate: &quiet,
            moved_at: None,
        }];
        plans[2].members = vec![MemberPlan {
            id: 4,
            estimate: &fast,
            moved_at: None,
        }];
        plan(&config, at(1_000), &mut plans)
    };
    assert!(
        moves
            .iter()
            .any(|m| m.member == 3 && m.to == Target::Tier(2)),
        "tier 1 merges into tier 2: {moves:?}"
    );
    destinations_stay_open(&[2, 1, 1], &moves);
}
