//! Attack review of session 18's rate changes (hx_attack20): the floor ramp that stops where
//! members get less than was sent, the no-merge into a ramping tier, the overcounted report
//! that teaches no noise, and the noise floor that follows the loss. Each test failed before
//! its fix.

use super::*;

/// Four members behind 100 Mbit/s links on a tier ramping from a 20 Mbit/s floor, and one
/// that claims, every report, a quarter of the rate and no loss. The ramp stops where members
/// get under 93 % of what was sent; judged by their mean, the one claim pulled it under that
/// every step, and each step fell to the mean: the honest members ended at 0.57 of the floor
/// they started from, on paths five times faster. By the upper median, the ramp finds their
/// links.
#[test]
fn one_member_claiming_a_quarter_of_the_rate_does_not_stop_a_floor_ramp_for_the_rest() {
    let config = RateConfig::default();
    let link = 100.0 * MBIT;
    let (control, rates, _) = floor_ramp(&config, 20.0 * MBIT, 5, |id, rate| {
        if id == 4 {
            0.26 * rate
        } else {
            rate.min(link)
        }
    });
    let highest = rates.iter().copied().fold(0.0, f64::max);
    let end = control.rate() as f64;
    assert!(
        (0.85 * link..=1.02 * link).contains(&end) && highest <= FLOOR_STEP * link,
        "the honest members' tier ends at {:.1} Mbit/s on 100 Mbit/s links (highest {:.1})",
        end / MBIT,
        highest / MBIT
    );
}

/// The same liar beside one honest member (two members: the upper median is the larger) and,
/// with three liars of five, the liars decide (a majority sets any median): the ramp then stops
/// where they say, no lower than 90 % of that.
#[test]
fn a_floor_ramp_is_judged_by_what_most_members_get() {
    let config = RateConfig::default();
    let link = 100.0 * MBIT;
    let ramp = |members: usize, liars: usize| {
        let (control, rates, _) = floor_ramp(&config, 20.0 * MBIT, members, |id, rate| {
            if id < liars {
                0.26 * rate
            } else {
                rate.min(link)
            }
        });
        // The lowest it ran at, after the first step's.
        let lowest = rates[1..]
            .iter()
            .copied()
            .chain([control.rate() as f64])
            .fold(f64::MAX, f64::min);
        (control.rate() as f64, lowest)
    };
    let (two, _) = ramp(2, 1);
    assert!(two >= 0.8 * link, "{:.1} Mbit/s", two / MBIT);
    let (_, lowest) = ramp(5, 3);
    assert!(
        lowest >= config.rate_min as f64,
        "a majority of liars lowers the tier, within the bounds"
    );
}

/// A tier opened from a floor for a member that then sends no report that counts never steps
/// again and stays "in slow start" for good. A slower tier that holds near it merges into it
/// once its last step is older than the dwell: before, the no-merge rule for ramping tiers kept
/// the two streams going for good.
#[test]
fn a_floor_tier_that_stopped_stepping_takes_a_slower_one_after_the_dwell() {
    let config = RateConfig::default();
    let (slow, fast) = (48_300_000u64, 54_800_000u64);
    let members = [PathEstimate::default(), PathEstimate::default()];
    let merges = |faster: TierControl, now: Instant| {
        let mut controls = vec![TierControl::new_known(&config, at(0), slow), faster];
        let mut plans = memberless_plans(&mut controls);
        for (index, estimate) in members.iter().enumerate() {
            plans[index].members.push(MemberPlan {
                id: index as u64,
                host: index as u64,
                estimate,
                moved_at: None,
            });
        }
        plan(&config, now, &mut plans)
            .into_iter()
            .filter(|m| m.from == 0 && m.to == Target::Tier(1))
            .count()
    };
    let silent = TierControl::new_floor(&config, at(0), fast);
    assert!(silent.in_slow_start());
    assert_eq!(
        merges(silent.clone(), at(500)),
        0,
        "within the dwell it is still a probe"
    );
    assert_eq!(
        merges(silent, at(5_000)),
        1,
        "a floor tier silent for 5 s is no probe: the slower tier joins it"
    );
}

/// Relieved from a flood, a member's next two reports place the flood's gaps, each a little
/// over what its new tier sent, on top of everything it received. Each counted under 1.5x
/// what was sent as lost, so neither read as overcounted, and the first taught a 0.55 noise
/// floor. Counted on everything a report places, both say nothing of the path's own loss.
#[test]
fn a_floods_gaps_placed_over_two_reports_teach_no_noise() {
    let config = RateConfig::default();
    let Relieved {
        mut flooded,
        interval,
        rate: relieved,
        sent,
    } = relieved_from_a_flood(&config);
    for _ in 0..2 {
        settled_report_over(
            &mut flooded,
            &config,
            (sent, sent * 6 / 5),
            interval,
            relieved,
        );
        assert_eq!(
            flooded.noise_loss(),
            0.0,
            "the flood's gaps are not the path's noise"
        );
    }
    settled_report_over(&mut flooded, &config, (sent, 0), interval, relieved);
    assert_eq!(flooded.noise_loss(), 0.0);
    assert!(!flooded.is_congested(&config));
}

/// A member learnt a 10 % noise floor at 20 Mbit/s (its path drops a tenth at random). Put on
/// a tier twice as fast, its reports lose a little more, just under what reads as congestion.
/// Followed there, each such report raised the floor by a tenth of the margin, and the margin
/// with it: a member held on a tier a little past its path read as noisier and noisier (and
/// noisy members stay where they are). Near the rate it was learnt at, the floor still follows
/// the path both ways.
#[test]
fn a_noise_floor_follows_a_higher_loss_only_near_the_rate_it_was_learnt_at() {
    let config = RateConfig::default();
    let interval = Duration::from_millis(200);
    let per_interval = |rate: u64| rate as f64 * interval.as_secs_f64() / DATAGRAM_BITS as f64;
    let learnt = |rate_learnt: u64| {
        let mut estimate = PathEstimate::default();
        let congested_at = rate_learnt * 5 / 4;
        for _ in 0..2 {
            let sent = per_interval(congested_at);
            settled_report_over(
                &mut estimate,
                &config,
                ((0.9 * sent) as u32, (0.1 * sent) as u32),
                interval,
                congested_at,
            );
        }
        estimate.new_epoch(Some(rate_learnt));
        let sent = per_interval(rate_learnt);
        settled_report_over(
            &mut estimate,
            &config,
            ((0.9 * sent) as u32, (0.1 * sent) as u32),
            interval,
            rate_learnt,
        );
        assert!(
            (estimate.noise_loss() - 0.1).abs() < 0.01,
            "{}",
            estimate.noise_loss()
        );
        estimate
    };
    let creep = |estimate: &mut PathEstimate, rate: u64, reports: u32| {
        for _ in 0..reports {
            let sent = per_interval(rate);
            // 2.4 points over a 10 % floor (the margin there: 2.5 plus the spread).
            let lost = 0.124 * sent;
            settled_report_over(
                estimate,
                &config,
                ((sent - lost) as u32, lost as u32),
                interval,
                rate,
            );
            assert!(!estimate.is_congested(&config), "{}", estimate.noise_loss());
        }
    };
    let mut faster = learnt(20_000_000);
    creep(&mut faster, 40_000_000, 100);
    assert!(
        faster.noise_loss() < 0.101,
        "at twice the rate it was learnt at, the floor stays: {:.3}",
        faster.noise_loss()
    );
    let mut near = learnt(20_000_000);
    creep(&mut near, 20_500_000, 100);
    assert!(
        near.noise_loss() > 0.12,
        "near it, the floor follows the path: {:.3}",
        near.noise_loss()
    );
    // Down it follows at any rate.
    let mut cleaner = learnt(20_000_000);
    for _ in 0..50 {
        settled_report_over(
            &mut cleaner,
            &config,
            (per_interval(40_000_000) as u32, 0),
            interval,
            40_000_000,
        );
    }
    assert!(cleaner.noise_loss() < 0.01, "{}", cleaner.noise_loss());
}
