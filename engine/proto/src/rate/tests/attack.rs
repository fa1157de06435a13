//! Adversarial tests of the tier planner's moves up (`climbs`) and near-duplicate merges
//! (session 8): hostile validated members whose reports lie, and plans whose moves interact.

use super::*;

/// A member with one lossy report after clean ones: it just lost (not yet congested).
fn just_lost(config: &RateConfig, rate: u64) -> PathEstimate {
    let mut estimate = settled_reports(config, rate, 0.0, 3);
    settled_report(&mut estimate, config, rate, 0.3);
    assert_eq!(estimate.congested_streak, 1);
    estimate
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
                host: 1,
                estimate: &held,
                moved_at: None,
            },
            MemberPlan {
                id: 2,
                host: 2,
                estimate: &keeps_up,
                moved_at: None,
            },
        ];
        plans[1].members = vec![MemberPlan {
            id: 3,
            host: 3,
            estimate: &quiet,
            moved_at: None,
        }];
        plans[2].members = vec![MemberPlan {
            id: 4,
            host: 4,
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

/// Five honest members whose paths take 500 Mbit/s, and four hostile ones. With every tier
/// of the file taken (three by the hostile members alone), one hostile member's tier is
/// brought to just under the honest members' rate: the near-duplicate merge moves them all
/// down to it. There one hostile member holds the tier (it waits, someone just lost), the
/// others take another round. How slow can the honest members be made to go?
/// (`ARENA_TRACE=1` prints the tiers every second.)
#[test]
fn hostile_members_cannot_ratchet_honest_ones_down_with_near_duplicate_merges() {
    let config = RateConfig::default();
    let honest = 5;
    let liars = 4;
    let mut who: Vec<Who> = (0..honest).map(|_| Who::Honest(clean(500.0))).collect();
    who.extend((0..liars).map(|_| Who::Liar(Lie::Keeps)));
    let mut arena = Fluid::with(config, who);
    // 10 s: the honest members find their tier; the hostile ones keep theirs rising.
    for _ in 0..50 {
        arena.step();
    }
    let honest_rate = arena.rate_of(0);
    assert!(honest_rate > 400e6 && honest_rate <= 500e6, "{honest_rate}");
    let mut lowest = honest_rate;
    for _ in 0..300 {
        // The attacker's moves, knowing every tier (an upper bound on what it learns).
        let h = arena.rate_of(0);
        let honest_tier = arena.members[0].tier;
        let liar_ids: Vec<usize> = (honest..honest + liars).collect();
        // On each tier one hostile member stays (with the honest members: holding their
        // tier); the others leave for tiers of their own, far below (2, 8, 32, 128 Mbit/s).
        for &l in &liar_ids {
            let t = arena.members[l].tier;
            let first = liar_ids
                .iter()
                .copied()
                .find(|&m| arena.members[m].tier == t)
                .expect("itself");
            if first != l {
                arena.lie(l, Lie::Lowers(2e6 * 4f64.powi(l as i32 - honest as i32)));
            } else if t == honest_tier {
                arena.lie(l, Lie::Freezes);
            }
        }
        let free: Vec<usize> = liar_ids
            .iter()
            .copied()
            .filter(|&l| {
                let t = arena.members[l].tier;
                t != honest_tier && arena.members.iter().filter(|a| a.tier == t).count() == 1
            })
            .collect();
        // With no room left, one free member brings its tier just under the honest one.
        let room = arena.tiers.len() < arena.config.tiers_allowed();
        for (k, &l) in free.iter().enumerate() {
            let rate = arena.rate_of(l as u64);
            let lie = if k == 0 && !room {
                let want = h / 1.08;
                if rate > 1.01 * want {
                    Lie::Lowers(want / 0.9)
                } else if rate < want / 1.01 {
                    Lie::Keeps
                } else {
                    Lie::Freezes
                }
            } else {
                Lie::Freezes
            };
            arena.lie(l, lie);
        }
        arena.step();
        if arena.steps.is_multiple_of(5) && std::env::var("ARENA_TRACE").is_ok() {
            let tiers = arena.layout();
            let lies: Vec<Lie> = (honest..honest + liars)
                .map(|l| match arena.members[l].who {
                    Who::Liar(lie) => lie,
                    Who::Honest(_) => unreachable!(),
                })
                .collect();
            eprintln!("{} {tiers:?} {lies:?}", arena.steps);
        }
        lowest = lowest.min(arena.rate_of(0));
    }
    let end = arena.rate_of(0);
    eprintln!("honest: {honest_rate} at 10 s, lowest {lowest}, at 70 s {end}");
    // Measured at e8e3e45 with this attacker: 0.80 at the lowest, 0.89 at 70 s (the honest
    // tier rises again whenever the holding member leaves it): a dent, not a ratchet.
    assert!(
        lowest >= 0.7 * honest_rate && end >= 0.8 * honest_rate,
        "honest members pushed from {honest_rate} to {lowest} (at the end {end})"
    );
}

#[test]
fn a_try_that_fails_on_a_tier_lowered_meanwhile_still_doubles_the_bar() {
    let mut estimate = PathEstimate::default();
    let (slow, fast, lowered) = (50_000_000, 500_000_000, 400_000_000);
    // A first failed try: barred 5 s.
    estimate.moved(at(0), slow, fast, false);
    estimate.moved(at(1_000), fast, slow, true);
    assert!(estimate.may_climb_to(at(6_000), fast));
    // The second: everyone on the faster tier lost, so in the same plan its rate fell to
    // what the best of them took and this member moved down (the endpoint reads the tier's
    // rate after the plan set it: 400, not the 500 it tried). Still a failed try: 10 s.
    estimate.moved(at(6_000), slow, fast, false);
    estimate.moved(at(7_000), lowered, slow, true);
    assert!(
        !estimate.may_climb_to(at(16_999), fast),
        "barred 10 s after a second failed try"
    );
    assert!(!estimate.may_climb_to(at(16_999), lowered));
    assert!(estimate.may_climb_to(at(17_000), fast));
}

/// Hostile members saying anything (full goodput, every other report lossy, congested at any
/// rate between nothing and far above the cap), beside honest ones, under bounds from one
/// tier to five and caps from 1 Mbit/s up: every plan is one the endpoint can carry out (no
/// member moved twice, nobody sent to a tier emptied in the same plan, never more tiers than
/// allowed), and nothing panics.
#[test]
fn random_lies_under_any_bounds_always_make_plans_the_endpoint_can_carry_out() {
    use crate::rng::SeededRng;
    for seed in 0..400u64 {
        let mut rng = SeededRng::from_u64(0x5eed_0008 + seed);
        let rate_max = match rng.below(4) {
            0 => 1_000_000,
            1 => 2_000_000,
            2 => 1_000_000_000,
            _ => 40_000_000_000,
        };
        let config = RateConfig {
            tiers_max: rng.below(6) as usize,
            rate_max,
            initial_rate: rate_max.min(1_000_000_000),
            ..RateConfig::default()
        };
        let members = 2 + rng.below(8) as usize;
        let who: Vec<Who> = (0..members)
            .map(|_| match rng.below(3) {
                0 => Who::Honest(clean(1.0 + rng.below(2_000) as f64)),
                _ => Who::Liar(Lie::Keeps),
            })
            .collect();
        let mut arena = Fluid::with(config, who);
        for _ in 0..1_000 {
            for id in 0..members {
                if matches!(arena.members[id].who, Who::Liar(_)) {
                    let lie = match rng.below(4) {
                        0 => Lie::Keeps,
                        1 => Lie::Freezes,
                        2 => Lie::Lowers(rng.below(100_000_000_000) as f64),
                        _ => Lie::Lowers(
                            arena.rate_of(id as u64) * (0.5 + rng.below(60) as f64 / 100.0),
                        ),
                    };
                    if rng.below(5) == 0 {
                        arena.lie(id, lie);
                    }
                }
            }
            arena.step();
            for tier in &arena.tiers {
                assert!(tier.rate() <= arena.config.rate_max.max(arena.config.rate_min));
            }
        }
    }
}

/// Honest members only, in clusters of near capacities (5, 50-60, 100, 450-500 Mbit/s, some
/// with 3 % noise), 2-4 tiers, a path changing every 5 s: how often does anyone move? At
/// 1064f1f (with merges up barred like moves up): at most 16 moves in 60 s (2 of them up),
/// 1.27 a member a minute; without the near-duplicate merge 14 and 0.96. (`FLUID_MOVES=<seed>`
/// prints that seed's moves.)
/// And how much of what their tiers send is past their paths: since a tier falls for a
/// majority of members that keep losing with nowhere slower to go (s24), 4.2 % (7.9 % before: with
/// 2 tiers for 5, 50 and 500 Mbit/s classes, a 55 Mbit/s tier held for three 60-90 Mbit/s
/// members kept six slower ones in loss for the whole minute). The moves rose from 1.38 to
/// 2.00 a member a minute, almost all with 2 tiers: the few faster members left on a tier that
/// fell try the next faster one, lose there, and come back, each try barred longer (5, 10, 20
/// s). Their mean share of their path fell from 0.90 to 0.82: the tier serves the most.
#[test]
fn honest_members_whose_paths_change_do_not_move_every_second() {
    use crate::rng::SeededRng;
    let mut worst = (0, 0, 0u64, 0usize, 0.0);
    let mut total = (0u64, 0u64);
    // Bits sent to honest members, and of them past their paths.
    let (mut sent, mut past) = (0.0, 0.0);
    for seed in 0..200u64 {
        let mut rng = SeededRng::from_u64(0xc0de + seed);
        if std::env::var("FLUID_MOVES").is_ok_and(|s| s != seed.to_string()) {
            continue;
        }
        let config = RateConfig {
            tiers_max: 2 + rng.below(3) as usize,
            ..RateConfig::default()
        };
        let n = 3 + rng.below(10) as usize;
        let who: Vec<Who> = (0..n)
            .map(|_| {
                let cap = [5.0, 50.0, 500.0, 55.0, 60.0, 450.0, 5.5, 100.0][rng.below(8) as usize];
                Who::Honest(Path {
                    capacity: cap * MBIT * (0.95 + rng.below(10) as f64 / 100.0),
                    noise: if rng.below(6) == 0 { 0.03 } else { 0.0 },
                })
            })
            .collect();
        let mut arena = Fluid::with(config, who);
        for _ in 0..50 {
            arena.step();
        }
        for a in &mut arena.members {
            a.moves = 0;
            a.ups = 0;
        }
        for step in 0..300 {
            if step % 25 == 0 {
                let id = rng.below(n as u64) as usize;
                if let Who::Honest(ref mut p) = arena.members[id].who {
                    p.capacity *= [0.7, 1.4, 0.9, 1.1][rng.below(4) as usize];
                }
            }
            arena.step();
            for member in &arena.members {
                if let Who::Honest(path) = member.who {
                    let rate = arena.tiers[member.tier].rate() as f64;
                    sent += rate;
                    past += (rate - path.capacity).max(0.0);
                }
            }
            if std::env::var("FLUID_MOVES").is_ok() && step % 5 == 0 {
                let tiers = arena.layout();
                eprintln!("  {tiers:?}");
            }
        }
        for a in &arena.members {
            total.0 += u64::from(a.moves);
            total.1 += 1;
            if a.moves > worst.0 {
                let cap = match a.who {
                    Who::Honest(p) => p.capacity,
                    _ => 0.0,
                };
                worst = (a.moves, a.ups, seed, arena.config.tiers_max, cap);
            }
        }
    }
    eprintln!("total moves, members {total:?}");
    eprintln!("worst moves in 60 s (moves, ups, seed, tiers_max, capacity): {worst:?}");
    eprintln!("share of what was sent past the paths: {:.4}", past / sent);
    assert!(worst.0 <= 20, "{worst:?}");
    assert!(total.0 <= 5 * total.1 / 2, "{total:?} moves, members");
    assert!(
        past / sent <= 0.05,
        "{:.4} of what was sent past the paths",
        past / sent
    );
}

#[test]
fn a_failed_try_that_ends_two_tiers_down_keeps_its_longer_bar() {
    let mut estimate = PathEstimate::default();
    let (slow, middle, fast) = (5_000_000, 50_000_000, 500_000_000);
    estimate.moved(at(0), slow, fast, false);
    estimate.moved(at(1_000), fast, slow, true);
    // The second try fails (barred 10 s), and the member goes down in two steps: off the
    // tier it tried to one still too fast, then on to one it takes.
    estimate.moved(at(6_000), slow, fast, false);
    estimate.moved(at(7_000), fast, middle, true);
    estimate.moved(at(8_000), middle, slow, true);
    assert!(
        !estimate.may_climb_to(at(16_999), fast),
        "the 10 s bar stands"
    );
    assert!(
        !estimate.may_climb_to(at(12_999), middle),
        "and the tier it lost on next is barred too"
    );
    assert!(estimate.may_climb_to(at(17_000), fast));
}

#[test]
fn a_member_moved_down_from_a_tier_is_not_merged_back_up_into_it_while_barred() {
    let config = RateConfig::default();
    // Tier 1 at 480 Mbit/s; a member lost there and moved down to tier 0, opened at 90 % of
    // what reached it (432: above 85 % of 480, where a tier that holds merges up).
    let (slow, fast) = (432_000_000, 480_000_000);
    let mut controls = vec![
        TierControl::new_known(&config, at(0), slow),
        TierControl::new_known(&config, at(0), fast),
    ];
    let mut moved_down = PathEstimate::default();
    moved_down.moved(at(0), fast, slow, true);
    let mut keeps_up = settled_reports(&config, fast, 0.0, 3);
    keeps_up.new_epoch(None); // nothing fresh: the faster tier does not change
    let plan_at = |controls: &mut Vec<TierControl>, now: Instant| {
        let mut plans = memberless_plans(controls);
        plans[0].members.push(MemberPlan {
            id: 1,
            host: 1,
            estimate: &moved_down,
            moved_at: Some(at(0)),
        });
        plans[1].members.push(MemberPlan {
            id: 2,
            host: 2,
            estimate: &keeps_up,
            moved_at: None,
        });
        plan(&config, now, &mut plans)
    };
    // Before: merged back up after the dwell (1 s), to lose there again, every few seconds.
    assert_eq!(
        plan_at(&mut controls.clone(), at(1_000)),
        vec![],
        "barred 5 s"
    );
    assert_eq!(
        plan_at(&mut controls, at(5_000)),
        vec![Move {
            member: 1,
            from: 0,
            to: Target::Tier(1),
            relief: false
        }],
        "once the bar lapses, the tier that holds merges"
    );
}
