//! Attack review of session 19's rate changes (hx_attack21): the floor ramp judged by its
//! upper-median member, merges into a slow-start tier only after a dwell without a step, the
//! overcounted report counted on everything it places, and the noise floor that follows a
//! higher loss only near the rate it was learnt at.

use super::*;

/// What a lone honest member behind `link` bits/s that drops `noise` (per mille) of everything
/// at random sees of its tier over `reports` reports of 200 ms, from a tier opened at `start`.
struct LossyRun {
    /// Mean tier rate over the last `late` reports, as a share of the link.
    mean_late: f64,
    /// Lowest tier rate over the last `late` reports, as a share of the link.
    lowest_late: f64,
    /// Decreases of the tier's rate over the last `late` reports.
    decreases_late: u32,
    /// Of them, decreases from a rate within the link (no congestion: the path's own noise
    /// read as congestion).
    false_decreases_late: u32,
    /// The noise floor at the end.
    noise: f64,
    /// Reports over the last `late` that lost more than was sent beyond the noise (rate past
    /// the link), as a share.
    over_link_late: f64,
}

fn lossy_run(seed: u64, link: f64, noise: u64, start: f64, reports: u64, late: u64) -> LossyRun {
    lossy_run_capped(
        seed,
        link,
        noise,
        start,
        reports,
        late,
        RateConfig::default(),
    )
}

fn lossy_run_capped(
    seed: u64,
    link: f64,
    noise: u64,
    start: f64,
    reports: u64,
    late: u64,
    config: RateConfig,
) -> LossyRun {
    let interval = Duration::from_millis(200);
    let mut rng = crate::rng::SeededRng::from_u64(seed);
    let mut control = TierControl::new_known(&config, at(0), start as u64);
    let mut member = [PathEstimate::default()];
    let (mut sum, mut lowest, mut decreases, mut over, mut false_decreases) =
        (0.0, f64::MAX, 0, 0, 0);
    for step in 1..=reports {
        let rate = control.rate();
        let per_bit = interval.as_secs_f64() / DATAGRAM_BITS as f64;
        let sent = (rate as f64 * per_bit) as u32;
        let through = ((rate as f64).min(link) * per_bit) as u32;
        let received = (0..through).filter(|_| rng.below(1000) >= noise).count() as u32;
        settled_report_over(
            &mut member[0],
            &config,
            (received, sent - received),
            interval,
            rate,
        );
        plan_one_tier(&config, at(200 * step), &mut control, &mut member);
        if step > reports - late {
            let now = control.rate() as f64;
            sum += now;
            lowest = lowest.min(now);
            if (now as u64) < rate {
                decreases += 1;
                if rate as f64 <= link.min(config.rate_max as f64) {
                    false_decreases += 1;
                }
            }
            if rate as f64 > link {
                over += 1;
            }
        }
    }
    LossyRun {
        mean_late: sum / late as f64 / link,
        lowest_late: lowest / link,
        decreases_late: decreases,
        false_decreases_late: false_decreases,
        noise: member[0].noise_loss(),
        over_link_late: f64::from(over) / late as f64,
    }
}

/// R1. A lone member behind a fast path that drops 5-10 % of everything at random, on a tier
/// capped by the operator at a few Mbit/s (a report holds 35-90 datagrams, its loss a sample
/// several points wide). Its noise floor is learnt after its first decrease, at 81 % of the
/// cap; its tier then goes back up to the cap and stays there, more than 5 % above the rate the
/// floor was learnt at. There the floor follows only the samples below it, and ratchets down to
/// the low end of their spread: the path's own loss then reads as congestion, the tier falls to
/// 90 % of what reached it, and the member relearns its floor there, again and again. Before
/// (the floor following both ways at any rate) a capped lossy member's tier held at the cap.
#[test]

fn a_capped_lossy_members_tier_is_not_cut_again_and_again_by_its_own_noise() {
    for &(cap, noise) in &[(5.0 * MBIT, 100u64), (2.0 * MBIT, 50), (10.0 * MBIT, 100)] {
        for seed in 0..3 {
            let config = RateConfig {
                rate_max: cap as u64,
                ..RateConfig::default()
            };
            let run = lossy_run_capped(seed, 10.0 * cap, noise, cap, 1500, 1200, config);
            assert!(
                run.false_decreases_late <= 3 && run.lowest_late * 10.0 >= 0.7,
                "cap {:.0} Mbit/s, {} % loss, seed {seed}: {} decreases in 240 s below the \
                 path's rate, lowest {:.2} of the cap, floor {:.3}",
                cap / MBIT,
                noise / 10,
                run.false_decreases_late,
                run.lowest_late * 10.0,
                run.noise
            );
        }
    }
}

/// R1, uncapped: a lone lossy member whose tier finds its link. Its floor is relearnt at each
/// decrease (every ~5 s, where the tier passes the link), so the downward bias stays small:
/// measured over 240 s, the tier's mean is 0.85-0.95 of the link, as before (0.87-0.96). At
/// 5 Mbit/s with 10-20 % loss the tier fell 1-3 times below the link (lowest 0.48-0.71 of it,
/// 0.63-0.80 before).
#[test]
fn a_lossy_member_alone_on_its_tier_is_held_near_its_link() {
    for &(link, noise) in &[(50.0 * MBIT, 200u64), (50.0 * MBIT, 50), (10.0 * MBIT, 100)] {
        for seed in 0..2 {
            let run = lossy_run(seed, link, noise, 4.0 * MBIT, 1500, 1200);
            assert!(
                run.mean_late >= 0.8 && run.false_decreases_late <= 2,
                "{:.0} Mbit/s, {} %, seed {seed}: mean {:.2} of the link, {} decreases below it \
                 (of {}), {:.2} of its reports past the link",
                link / MBIT,
                noise / 10,
                run.mean_late,
                run.false_decreases_late,
                run.decreases_late,
                run.over_link_late
            );
        }
    }
}

/// R2. A hostile member alone on a tier in slow start (not from a floor: one opened by a climb,
/// or whose slow start resumed after three clean increases) parks it just above an honest
/// tier: it reports 30 % of the rate and no loss, so the tier neither doubles (its mean is
/// under half the rate) nor falls (only a floor ramp falls to what its members get). A dwell
/// after its last step, the honest tier that holds at 0.9 of its path merges into it. The
/// honest member's first report there keeps up, the mean passes half the rate, and the tier
/// doubles: to 1.8x the honest path. (Before, merges into a tier in slow start not from a floor
/// were not held at all: the same happens, without the dwell.) Now a tier that takes a merge
/// while its slow start stalled ends it: it rises by steps from there.
#[test]
fn a_tier_merged_into_a_stalled_slow_start_one_is_not_doubled_past_its_path() {
    let config = RateConfig::default();
    let path = 50.0 * MBIT;
    let slow = (0.9 * path) as u64;
    let fast = (0.97 * path) as u64;
    let per_bit = STEP.as_secs_f64() / DATAGRAM_BITS as f64;
    // The liar's reports on its tier: 30 % of the rate, nothing lost.
    let parked = |estimate: &mut PathEstimate, rate: u64| {
        settled_report_over(
            estimate,
            &config,
            ((0.3 * rate as f64 * per_bit) as u32, 0),
            STEP,
            rate,
        );
    };
    let mut controls = vec![
        TierControl::new_known(&config, at(0), slow),
        TierControl::new(&config, at(0), fast),
    ];
    let mut honest = PathEstimate::default();
    let mut liar = PathEstimate::default();
    parked(&mut liar, fast);
    // The liar's tier neither rises nor falls; the honest tier holds (no new report).
    let mut now = 0;
    let mut merged = false;
    while now < 3_000 && !merged {
        now += 50;
        parked(&mut liar, controls[1].rate());
        let moves = {
            let mut plans = memberless_plans(&mut controls);
            plans[0].members.push(MemberPlan {
                id: 0,
                host: 0,
                estimate: &honest,
                moved_at: None,
            });
            plans[1].members.push(MemberPlan {
                id: 1,
                host: 1,
                estimate: &liar,
                moved_at: None,
            });
            plan(&config, at(now), &mut plans)
        };
        merged = moves
            .iter()
            .any(|m| m.member == 0 && m.to == Target::Tier(1));
    }
    assert_eq!(controls[1].rate(), fast, "parked");
    if !merged {
        return;
    }
    // Merged: the honest member's reports on the liar's tier, what its path lets through.
    honest.moved(at(now), slow, fast, false);
    liar.new_epoch(None);
    let mut tier = controls.remove(1);
    let mut highest = tier.rate() as f64;
    for step in 1..=10u64 {
        let rate = tier.rate();
        let sent = rate as f64 * per_bit;
        let got = (rate as f64).min(path) * per_bit;
        settled_report_over(
            &mut honest,
            &config,
            (got as u32, (sent - got) as u32),
            STEP,
            rate,
        );
        parked(&mut liar, rate);
        let mut members = [honest.clone(), liar.clone()];
        plan_one_tier(&config, at(now + 200 * step), &mut tier, &mut members);
        [honest, liar] = members;
        highest = highest.max(tier.rate() as f64);
    }
    assert!(
        highest <= 1.2 * path,
        "merged at {:.1} Mbit/s, the tier reached {:.1} on a {:.0} Mbit/s path",
        fast as f64 / MBIT,
        highest / MBIT,
        path / MBIT
    );
}

/// R3. A floor ramp of two members, one honest behind a 50 Mbit/s link and one hostile that
/// claims all of every step and no loss; the link's queue hides the honest member's loss (as in
/// `a_floor_ramp_stops_where_members_get_less_than_was_sent_before_any_loss_shows`). The upper
/// median of two is the larger: the hostile member alone decides, and the ramp steps on past
/// the honest member's link until what reaches it is under a quarter of what is sent (judged
/// by the mean it stopped two steps past it, at 61.4 Mbit/s). With members of even count,
/// half of them keep it ramping (as members behind faster paths would, except that these claim
/// no path at all). No fix proposed: the tie of an even count goes one way or the other, and
/// the other way one member stopped the ramp for all (hx_attack20 R1).
#[test]
#[ignore = "hx_attack21 R3: half the members (1 of 2, 2 of 4, 4 of 8) claiming every step keep a floor ramp stepping past the others' 50 Mbit/s links to 213.6 Mbit/s (4.3x), until the honest ones get under a quarter of what is sent and read as lost (by the mean: highest 61.4, settled at 56.1, out of slow start)"]
fn half_the_members_claiming_every_step_do_not_ramp_a_floor_tier_far_past_the_others() {
    let config = RateConfig::default();
    let link = 50.0 * MBIT;
    for members in [2usize, 4, 8] {
        let liars = members / 2;
        let (_, rates, _) = floor_ramp(&config, 43.7 * MBIT, members, |id, rate| {
            if id < liars {
                rate
            } else {
                rate.min(link)
            }
        });
        let highest = rates.iter().copied().fold(0.0, f64::max);
        assert!(
            highest <= FLOOR_STEP * FLOOR_STEP * link,
            "{liars} of {members} claiming every step: the tier reached {:.1} Mbit/s",
            highest / MBIT
        );
    }
}
