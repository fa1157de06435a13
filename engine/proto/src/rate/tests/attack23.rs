//! Attack review of session 23's rate change (hx_attack23 for rate): a tier opened for members
//! that lost remembers what reached them (`TierStart::Known`, rate / `LOSS_FALL_SHARE`), and one
//! opened for members that got under half of the rate out of slow start remembers its own rate
//! (`TierStart::Short`). A liar that claims a mild loss, an overload, or flips between them.

use super::*;

/// (d) No panic, NaN or out-of-bounds rate from `rate / LOSS_FALL_SHARE` or the clamps, at
/// rates 0, 1, the bounds and u64::MAX, under degenerate configs, through increases,
/// decreases to 0/NaN/inf capacity and a plan moving a member at those rates.
#[test]
fn atk23_held_known_and_short_starts_at_degenerate_rates_stay_in_bounds() {
    let configs = [
        RateConfig::default(),
        RateConfig {
            rate_min: 0,
            ..RateConfig::default()
        },
        RateConfig {
            rate_min: 0,
            rate_max: u64::MAX,
            ..RateConfig::default()
        },
        RateConfig {
            rate_min: 5_000_000,
            rate_max: 1_000_000,
            ..RateConfig::default()
        },
        RateConfig {
            rate_min: 1,
            rate_max: 1,
            ..RateConfig::default()
        },
    ];
    for config in &configs {
        let (lo, hi) = (config.rate_min, config.rate_max.max(config.rate_min));
        for rate in [
            0u64,
            1,
            9,
            10,
            config.rate_min,
            config.rate_max,
            u64::MAX - 1,
            u64::MAX,
        ] {
            for start in [
                TierStart::Known,
                TierStart::Short,
                TierStart::Floor,
                TierStart::SlowStart,
            ] {
                let mut c = start.control(config, at(0), rate);
                assert!(
                    (lo..=hi).contains(&c.rate()),
                    "{start:?} {rate}: {}",
                    c.rate()
                );
                // (The memory is taken from the rate as given, before the clamp: 0 for a
                // Known tier asked at 0 under rate_min 1 Mbit/s. `plan` only asks clamped
                // rates, so only those are held to it.)
                if let Some((lost_at, _)) = c.loss_rate.filter(|_| (lo..=hi).contains(&rate)) {
                    assert!(
                        lost_at as f64 >= 0.999 * c.rate() as f64,
                        "{start:?} {rate}"
                    );
                }
                for step in 1..=200u32 {
                    let now = at(0) + config.settle * step;
                    match step % 50 {
                        10 => c.decrease_to(config, now, 0.0, false, 0.0),
                        20 => c.decrease_to(config, now, f64::NAN, true, f64::NAN),
                        30 => c.decrease_to(config, now, f64::INFINITY, false, f64::INFINITY),
                        _ => {
                            c.increase_from(config, now, if step % 7 == 0 { 0.0 } else { f64::NAN })
                        }
                    }
                    assert!(
                        (lo..=hi).contains(&c.rate()),
                        "{start:?} {rate} step {step}: {}",
                        c.rate()
                    );
                }
            }
            // A plan moving a member that got nothing / everything / a NaN-free extreme.
            for (received, lost) in [(0u32, u32::MAX), (u32::MAX, 0), (1, 1), (0, 0)] {
                let mut controls = [
                    TierControl::new_known(config, at(0), rate),
                    TierControl::new_known(config, at(0), rate / 3),
                ];
                let (mut fast, mut member) = (PathEstimate::default(), PathEstimate::default());
                for _ in 0..3 {
                    let rate = controls[0].rate();
                    report_50ms(&mut fast, config, 1000, 0, rate, Counts::Settled);
                    report_50ms(&mut member, config, received, lost, rate, Counts::Settled);
                }
                let moves = plan_members(
                    config,
                    at(5_000),
                    &mut controls,
                    &[(6, &fast), (7, &member)],
                );
                for m in moves {
                    if let Target::New { rate, start, .. } = m.to {
                        let c = start.control(config, at(5_000), rate);
                        assert!((lo..=hi).contains(&c.rate()), "{m:?}");
                    }
                }
                assert!(controls.iter().all(|c| (lo..=hi).contains(&c.rate())));
            }
        }
    }
}

/// Per step: (rate of each of `watch`'s tiers, bits/s). `who` as [`Fluid::with`]; tier 0
/// opened as `first` at `rate`.
fn atk23_run(
    config: &RateConfig,
    first: TierStart,
    rate: u64,
    who: Vec<Who>,
    watch: &[u64],
    steps: usize,
) -> Vec<Vec<f64>> {
    let mut fluid = Fluid::with(config.clone(), who);
    fluid.tiers[0] = first.control(config, at(0), rate);
    let mut trace = Vec::new();
    for _ in 0..steps {
        fluid.step();
        trace.push(watch.iter().map(|&id| fluid.rate_of(id)).collect());
        if std::env::var("ATK23_TRACE").is_ok() {
            eprintln!("{} {:?}", fluid.steps, fluid.layout());
        }
    }
    trace
}

/// Honest figures over a trace of their tier's rates: (share of what was sent lost, steps on
/// a tier above the path, mean rate / path).
fn atk23_figures(trace: &[Vec<f64>], path: f64) -> (f64, usize, f64) {
    let (mut sent, mut lost, mut above, mut sum, mut n) = (0.0, 0.0, 0, 0.0, 0.0);
    for row in trace {
        for &r in row {
            sent += r;
            lost += (r - path).max(0.0);
            above += usize::from(r > 1.001 * path);
            sum += r.min(path) / path;
            n += 1.0;
        }
    }
    (lost / sent, above / trace[0].len(), sum / n)
}

fn atk23_mild_then_keeps(_: u64, rate: f64) -> (f64, f64) {
    if rate > 90.0 * MBIT {
        (0.84, 0.16)
    } else {
        (1.0, 0.0)
    }
}
fn atk23_overloaded_then_keeps(_: u64, rate: f64) -> (f64, f64) {
    if rate > 90.0 * MBIT {
        (0.49, 0.51)
    } else {
        (1.0, 0.0)
    }
}
/// Alternates, every 2 s, a mild loss (Known) and an overload (Short) on tiers above 90 Mbit/s.
fn atk23_flips(steps: u64, rate: f64) -> (f64, f64) {
    match (rate > 90.0 * MBIT, steps % 20 < 10) {
        (true, true) => (0.84, 0.16),
        (true, false) => (0.45, 0.55),
        (false, _) => (1.0, 0.0),
    }
}

/// Tier 0 opened Known at 100 Mbit/s (out of slow start) with one 1 Gbit/s honest member, four
/// honest members on `path` Mbit/s and a sixth: the liar, or another 1 Gbit/s honest member.
/// Each row with a liar is followed by its row without. Fails where the liar costs the four
/// more than 3 points of loss or 15 steps (3 s) more above their path over 30 s.
fn atk23_liar_rows(rows: &[(&str, f64, Option<Lie>, usize)]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    for &(name, path, liar, tiers_max) in rows {
        let config = RateConfig {
            initial_rate: 100_000_000,
            tiers_max,
            ..RateConfig::default()
        };
        let mut who = vec![Who::Honest(clean(1000.0))];
        who.extend((0..4).map(|_| Who::Honest(clean(path))));
        who.push(match liar {
            Some(lie) => Who::Liar(lie),
            None => Who::Honest(clean(1000.0)),
        });
        let trace = atk23_run(
            &config,
            TierStart::Known,
            100_000_000,
            who,
            &[1, 2, 3, 4],
            150,
        );
        let (loss, above, mean) = atk23_figures(&trace, path * MBIT);
        let at_s = |s: usize| trace[s * 5 - 1][0] / MBIT;
        eprintln!(
            "{name}: honest loss {:.2} %, {above} steps (x200 ms) above path, mean got/path {:.3}; tier at 1/2/3/5/10/30 s: {:.1} {:.1} {:.1} {:.1} {:.1} {:.1}",
            100.0 * loss, mean, at_s(1), at_s(2), at_s(3), at_s(5), at_s(10), at_s(30)
        );
        if liar.is_none() {
            let baseline = (loss, above);
            for (name, loss, above) in pending.drain(..) {
                if above > baseline.1 + 15 || loss > baseline.0 + 0.03 {
                    failed.push(format!(
                        "{name}: loss {:.1} % ({:.1} without the liar), {above} steps above path ({})",
                        100.0 * loss, 100.0 * baseline.0, baseline.1
                    ));
                }
            }
        } else {
            pending.push((name, loss, above));
        }
    }
    failed
}

/// (b, c) Held: with room for a tier of their own, honest members the liar's Known (mild claim,
/// moved first, its claim remembered) or Short (overload claim) tier takes in, or that it
/// flips between the two, leave it within a dwell or never join it (the liar moves first only
/// when it claims more than they get, and a tier opened above them they leave after a dwell):
/// their loss and time above their path within 0.15 points / 8 steps (1.6 s) of the run
/// without it over 30 s.
#[test]
fn atk23_held_with_room_a_liars_known_or_short_tier_costs_honest_joiners_little() {
    let failed = atk23_liar_rows(&[
        (
            "mild/Known, honest 60",
            60.0,
            Some(Lie::Script(atk23_mild_then_keeps)),
            4,
        ),
        (
            "flips Known/Short, honest 60",
            60.0,
            Some(Lie::Script(atk23_flips)),
            4,
        ),
        ("none, honest 60", 60.0, None, 4),
        (
            "overloaded/Short, honest 40",
            40.0,
            Some(Lie::Script(atk23_overloaded_then_keeps)),
            4,
        ),
        (
            "mild/Known, honest 40",
            40.0,
            Some(Lie::Script(atk23_mild_then_keeps)),
            4,
        ),
        ("none, honest 40", 40.0, None, 4),
    ]);
    assert!(failed.is_empty(), "{failed:?}");
}

/// (a, b) A finding of this review, older than 211d5bf/67a6334, fixed in s24: with no room for
/// another tier (tiers_max 2), the liar claims most of the rate and a mild loss (or under half,
/// Short) on the shared tier while a fast honest member keeps up; it is moved first and opens
/// the last tier at 0.9x its claim; the four honest members, whose target is within
/// SAME_TIER_RATIO of it, join it above their path. There the liar reported clean: the tier
/// neither rose nor fell (settled_clear), the four were movable but had nowhere slower
/// (`choose_slower` -> None). They stayed 30 s, 1.26x their path, losing 21 % (1.8 % without
/// the liar). Now a tier whose members that keep losing with nowhere to go are most of it
/// falls for them: 3.0 % lost (60 Mbit/s members), within 1.2 points of the run without the
/// liar, and 1.4 s more above their path.
#[test]
fn atk23_no_room_a_liars_new_tier_does_not_hold_honest_joiners_above_their_path() {
    let failed = atk23_liar_rows(&[
        (
            "mild/Known, honest 60, 2 tiers",
            60.0,
            Some(Lie::Script(atk23_mild_then_keeps)),
            2,
        ),
        (
            "flips Known/Short, honest 60, 2 tiers",
            60.0,
            Some(Lie::Script(atk23_flips)),
            2,
        ),
        ("none, honest 60, 2 tiers", 60.0, None, 2),
        (
            "overloaded/Short, honest 40, 2 tiers",
            40.0,
            Some(Lie::Script(atk23_overloaded_then_keeps)),
            2,
        ),
        ("none, honest 40, 2 tiers", 40.0, None, 2),
        (
            "mild/Known, honest 72, 2 tiers",
            72.0,
            Some(Lie::Script(atk23_mild_then_keeps)),
            2,
        ),
        ("none, honest 72, 2 tiers", 72.0, None, 2),
        (
            "mild/Known, honest 78, 2 tiers",
            78.0,
            Some(Lie::Script(atk23_mild_then_keeps)),
            2,
        ),
        ("none, honest 78, 2 tiers", 78.0, None, 2),
    ]);
    assert!(failed.is_empty(), "{failed:?}");
}
