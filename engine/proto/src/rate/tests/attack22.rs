//! Attack review of the "awaited" wait (54e7c52) and the "join" of a near slower tier
//! (8f55a28) (hx_attack22).

use super::*;

/// Two tiers planned together: `controls[i]` with the members `members[i]` (id, estimate,
/// moved_at). Returns the moves.
fn plan_tiers(
    config: &RateConfig,
    now: Instant,
    controls: &mut [TierControl],
    members: &[Vec<(u64, &PathEstimate, Option<Instant>)>],
) -> Vec<Move> {
    let mut plans = memberless_plans(controls);
    for (plan, members) in plans.iter_mut().zip(members) {
        plan.members = members
            .iter()
            .map(|&(id, estimate, moved_at)| MemberPlan {
                id,
                host: id,
                estimate,
                moved_at,
            })
            .collect();
    }
    plan(config, now, &mut plans)
}

/// R1. The join reads every tier's rate as it was before the plan (`rates`), but the tier it
/// joins may change in the same plan. A liar alone on a tier at 45 Mbit/s claims it got 5 and
/// lost the rest: its tier falls to 4.5 Mbit/s in this plan. Two honest members behind
/// 49 Mbit/s links, all losing on their tier at 55, would fall to 44.1: the 45 Mbit/s tier is
/// "near", they join it, and land on 4.5 Mbit/s (a tenth of their path; moved down, they may
/// not climb back to 55 for 5 s, and climb in doubling steps of a dwell each). Either order of
/// the tiers. The same with a tier in slow start that doubles in the plan (a member keeping up):
/// they land on 90 Mbit/s, 1.8x their path.
/// Measured on 8f55a28: joined at 4.5 Mbit/s (either order) and at 90 Mbit/s.
#[test]
fn attack22_members_join_no_tier_that_moves_away_from_near_in_the_same_plan() {
    let config = RateConfig::default();
    let path = 49e6;
    let honest = settled_reports(&config, 55_000_000, 1.0 - path / 55e6, 2);
    // The liar on the tier at 45: claims 5 Mbit/s got through.
    let liar_falls = settled_reports(&config, 45_000_000, 1.0 - 5.0 / 45.0, 2);
    // A member keeping up on a tier in slow start at 45: it doubles.
    let keeps = settled_reports(&config, 45_000_000, 0.0, 2);
    let mut failures = Vec::new();
    for (case, near_first, slow_start) in [
        ("falls, planned first", true, false),
        ("falls, planned after", false, false),
        ("doubles", true, true),
    ] {
        let near = if slow_start {
            TierControl::new(&config, at(0), 45_000_000)
        } else {
            TierControl::new_known(&config, at(0), 45_000_000)
        };
        let losing = TierControl::new_known(&config, at(0), 55_000_000);
        let near_member = if slow_start { &keeps } else { &liar_falls };
        let (mut controls, members, near_index) = if near_first {
            (
                vec![near, losing],
                vec![
                    vec![(1, near_member, None)],
                    vec![(2, &honest, None), (3, &honest, None)],
                ],
                0,
            )
        } else {
            (
                vec![losing, near],
                vec![
                    vec![(2, &honest, None), (3, &honest, None)],
                    vec![(1, near_member, None)],
                ],
                1,
            )
        };
        let moves = plan_tiers(&config, at(300), &mut controls, &members);
        destinations_stay_open(&[1, 2], &moves);
        let target = 0.9 * path;
        for m in &moves {
            if m.to == Target::Tier(near_index) {
                let landed = controls[near_index].rate() as f64;
                if (landed / target).ln().abs() > NEAR_DUPLICATE.ln() + 1e-9 {
                    failures.push(format!(
                        "{case}: member {} behind {:.1} Mbit/s joined a tier now at {:.1} \
                         Mbit/s (it was near {:.1} before the plan)",
                        m.member,
                        path / MBIT,
                        landed / MBIT,
                        target / MBIT
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// R2. Everyone on a tier loses, and the best of them sets the rate: a liar that says it lost
/// but got all of the rate (received the rate, lost a tenth more) is the best, and 90 % of the
/// rate... is not below the rate's `capacity < rate` check: the rate never falls, and it joins
/// nothing. Honest members behind links at 0.9 of the rate lose a tenth of everything for good:
/// not movable (0.9 >= `MOVE_BELOW_SHARE` of the reference, the liar's full rate), and the
/// `HELD_LOSS_REPORTS` rule that moves a held member applies only beside a member keeping up.
/// Pre-existing (not from the two new rules), found while probing "the rate does not fall".
/// Measured on 8f55a28: 50 Mbit/s held for the whole 30 s, honest members losing 10 %.
#[test]
fn attack22_a_liar_claiming_the_whole_rate_while_losing_does_not_hold_honest_members_in_loss() {
    let config = RateConfig::default();
    let rate = 50_000_000;
    let per_report = rate as f64 * STEP.as_secs_f64() / DATAGRAM_BITS as f64;
    let mut control = TierControl::new_known(&config, at(0), rate);
    let mut members = vec![PathEstimate::default(); 3];
    let mut now = 0;
    let mut relieved_at = None;
    while now < 30_000 && relieved_at.is_none() {
        now += 200;
        let rate_now = control.rate();
        for (id, member) in members.iter_mut().enumerate() {
            if id == 2 {
                // All of the rate received, and a tenth more lost.
                settled_report_over(
                    member,
                    &config,
                    (per_report as u32 + 1, (0.1 * per_report) as u32),
                    STEP,
                    rate_now,
                );
            } else {
                settled_report(
                    member,
                    &config,
                    rate_now,
                    1.0 - (45e6 / rate_now as f64).min(1.0),
                );
            }
            member.note_report_at(at(now));
        }
        let moves = plan_one_tier(&config, at(now), &mut control, &mut members);
        if control.rate() <= 45_000_000 || moves.iter().any(|m| m.member != 2) {
            relieved_at = Some(now);
        }
    }
    assert!(
        relieved_at.is_some_and(|t| t <= 3_000),
        "honest members behind 45 Mbit/s on a {:.1} Mbit/s tier, relieved at {relieved_at:?} ms",
        control.rate() as f64 / MBIT
    );
}

/// R3. A member fresh on its tier whose last counted report lost, and which then sends only
/// reports that do not count (or none), sits among those "keeping up" (`clear`: not
/// `holds_congestion` once `CONGESTION_STALE` passed) and holds the rate as one that "only just
/// lost" for good; beside it nobody keeps up, so the held honest members never move
/// (`settled_clear` is false). The awaited rule gives up on a quiet member after
/// `CONGESTION_STALE`; this one is never given up.
/// Measured on 8f55a28: 50 Mbit/s held for the whole 30 s, honest members losing 10 %.
#[test]
fn attack22_a_member_that_lost_once_and_went_quiet_does_not_hold_a_losing_tier() {
    let config = RateConfig::default();
    let rate = 50_000_000;
    let mut control = TierControl::new_known(&config, at(0), rate);
    let mut members = vec![PathEstimate::default(); 3];
    // The liar: one counted lossy report at 300 ms (just lost), then nothing that counts.
    settled_report(&mut members[2], &config, rate, 0.2);
    members[2].note_report_at(at(300));
    let mut now = 200;
    let mut relieved_at = None;
    while now < 30_000 && relieved_at.is_none() {
        now += 200;
        let rate_now = control.rate();
        for member in &mut members[..2] {
            settled_report(
                member,
                &config,
                rate_now,
                1.0 - (45e6 / rate_now as f64).min(1.0),
            );
            member.note_report_at(at(now));
        }
        let moves = plan_one_tier(&config, at(now), &mut control, &mut members);
        if control.rate() <= 45_000_000 || moves.iter().any(|m| m.member != 2) {
            relieved_at = Some(now);
        }
    }
    assert!(
        relieved_at.is_some_and(|t| t <= 300 + CONGESTION_STALE.as_millis() as u64 + 1_000),
        "honest members behind 45 Mbit/s on a {:.1} Mbit/s tier, relieved at {relieved_at:?} ms",
        control.rate() as f64 / MBIT
    );
}

/// R4. A member moved down into a tier because it lost elsewhere: the move reset its streak,
/// and its last counted report (congested, on the old tier) is under `CONGESTION_STALE` old, so
/// it reads as one that kept up (`may_yet_keep_up`): the tier it joined, whose own members all
/// lose 15 %, is held for it. Bounded by `CONGESTION_STALE` per move (low).
/// Measured on 8f55a28: the tier fell at 1500 ms instead of 500 (five reports of 15 % loss).
#[test]
fn attack22_a_member_moved_in_because_it_lost_is_not_awaited_as_one_that_kept_up() {
    let config = RateConfig::default();
    let rate = 20_000_000;
    let mut control = TierControl::new_known(&config, at(0), rate);
    let mut members = vec![PathEstimate::default(); 3];
    for ms in [300, 500] {
        for member in &mut members[..2] {
            settled_report(member, &config, rate, 0.15);
            member.note_report_at(at(ms));
        }
    }
    members[2] = settled_reports(&config, 100_000_000, 0.5, 2);
    members[2].note_report_at(at(500));
    members[2].moved(at(500), 100_000_000, rate, true);
    let mut now = 500;
    while now < 5_000 {
        plan_one_tier(&config, at(now), &mut control, &mut members);
        if control.rate() != rate {
            break;
        }
        now += 200;
        for member in &mut members[..2] {
            settled_report(member, &config, rate, 0.15);
            member.note_report_at(at(now));
        }
    }
    assert!(
        now <= 700,
        "the tier fell at {now} ms to {:.1} Mbit/s",
        control.rate() as f64 / MBIT
    );
}
