//! Attack review of s26 (cf0965d): the majority fall counted in hosts (`stranded_host_votes`,
//! `distinct_hosts`, `median_member`). The majority is taken over the tier's FRESH members
//! only, while `awaited` members (kept up in their last counted report, not heard since the
//! last change) let the branch be entered. After every change of a tier's rate, no member is
//! fresh until its first report wholly after the settle: an honest client reporting every
//! 200 ms is first fresh 200-400 ms after the settle, a client claiming 40 ms intervals 40 ms
//! after it. A few hosts that report first were the whole "majority" (F-A). Fixed in
//! 8a0b573: the members a tier waits for (`may_yet_keep_up`) are of the electorate too. F-B
//! (one IPv6 customer's /64s counted as many hosts) is fixed by keying IPv6 by /48
//! (`host_of`), F-C (a quadratic scan) by `moving_from`.
//!
//! (For the parent, cf0965d^, this file builds with the `host:` lines taken out.)

use super::attack25::{plan_lone_tier, timed_report};
use super::*;

/// Honest members' rate against their path over a run: the mean share of the path they got,
/// and the share of what was sent past it.
#[derive(Debug, Default)]
pub(super) struct PastPath {
    share_sum: f64,
    samples: f64,
    sent: f64,
    past: f64,
}

impl PastPath {
    /// One member's sample at tier `rate` on a path of `path` (bits/s).
    pub(super) fn add(&mut self, rate: f64, path: f64) {
        self.share_sum += rate.min(path) / path;
        self.samples += 1.0;
        self.sent += rate;
        self.past += (rate - path).max(0.0);
    }

    pub(super) fn share(&self) -> f64 {
        self.share_sum / self.samples
    }

    pub(super) fn past(&self) -> f64 {
        self.past / self.sent
    }
}

impl std::fmt::Display for PastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "honest mean rate/path {:.3}, honest loss {:.2} %",
            self.share(),
            100.0 * self.past()
        )
    }
}

/// What a member of the phased arena is.
#[derive(Clone, Copy, Debug)]
enum Atk26Role {
    /// Reports every 200 ms at `phase` ms in its cycle, what its clean `path` (bits/s) carries.
    Honest { path: f64, phase: u64 },
    /// Attacker: claims all of the rate and a 10 % loss (capacity = the rate: `rate_stays`).
    Anchor,
    /// Attacker: claims to receive `bits/s` and the rest lost.
    Low(f64),
}

struct Atk26Member {
    estimate: PathEstimate,
    host: u64,
    role: Atk26Role,
    last_ms: u64,
    /// Its next counted report is a clean one (after a fall: no noise learnt from it).
    clean_next: bool,
}

#[derive(Debug)]
struct Atk26Outcome {
    /// Honest members' rate against their paths.
    honest: PastPath,
    end: f64,
    min: f64,
    falls: u32,
    rises: u32,
}

/// Attackers say nothing before this (the honest members have settled in: at a tier's start,
/// before any honest report counted, the first reporters set the rate with or without s26).
const ATK26_START_MS: u64 = 3_000;

/// A cheap deterministic generator (phases).
fn atk26_lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// One tier, `tiers_max` 1 (no room, nothing slower), opened Known at 0.9 x the honest path, at
/// 10 ms resolution, planned every 50 ms (`control_interval`). Honest members report every
/// 200 ms in their own phase (random, `seed`); counts as the endpoint reads them (a report
/// counts if its interval, at least 40 ms, started after the settle; LossOnly while rising).
/// Attackers (at most one report per 40 ms each, `REPORTS_JUDGED_PER_S` 25) follow one plan:
/// (lossy) report lossy counted reports every 40 ms; once each has lost 5 in a row and the tier
/// is above `goal`, (quiet) send nothing, so their congestion goes stale after 1 s and the
/// honest members raise the tier; at the rise, back to lossy: their first counted report comes
/// 40 ms after the settle, before any honest one's, and for a moment they are the tier's only
/// fresh hosts. After a fall their first counted report is clean (so their loss is not learnt
/// as noise). At the goal they just keep reporting lossy: a congested member holds the tier
/// (no rise while anyone holds congestion).
fn atk26_phased(
    honest: usize,
    path_mbit: f64,
    attackers: &[(Atk26Role, u64)],
    goal: f64,
    seconds: u64,
    seed: u64,
) -> Atk26Outcome {
    let path = path_mbit * MBIT;
    let config = RateConfig {
        initial_rate: (0.9 * path) as u64,
        tiers_max: 1,
        ..RateConfig::default()
    };
    let mut control = TierStart::Known.control(&config, at(0), (0.9 * path) as u64);
    let mut seed = seed;
    let mut members: Vec<Atk26Member> = (0..honest)
        .map(|i| Atk26Member {
            estimate: PathEstimate::default(),
            host: 1000 + i as u64,
            role: Atk26Role::Honest {
                path,
                phase: atk26_lcg(&mut seed) % 20 * 10,
            },
            last_ms: 0,
            clean_next: false,
        })
        .chain(attackers.iter().map(|&(role, host)| Atk26Member {
            estimate: PathEstimate::default(),
            host,
            role,
            last_ms: 0,
            clean_next: false,
        }))
        .collect();
    let trace = std::env::var("ATK26_TRACE").is_ok();
    let mut quiet = false;
    let mut honest_paths = PastPath::default();
    let (mut falls, mut rises, mut min) = (0u32, 0u32, f64::MAX);
    for ms in (10..=seconds * 1000).step_by(10) {
        let now = at(ms);
        let rate = control.rate() as f64;
        let settled_ms = control.settled_at().saturating_since(at(0)).as_millis() as u64;
        for m in members.iter_mut() {
            // (received, lost, interval ms)
            let report: Option<(f64, f64, u64)> = match m.role {
                Atk26Role::Honest { path, phase } => (ms % 200 == phase).then(|| {
                    let sent = rate * 0.2 / DATAGRAM_BITS as f64;
                    let got = rate.min(path) * 0.2 / DATAGRAM_BITS as f64;
                    (got, sent - got, 200)
                }),
                _ if quiet
                    || ms < ATK26_START_MS
                    || ms < m.last_ms + 40
                    || ms < settled_ms + 40 =>
                {
                    None
                }
                role => {
                    let sent = rate * 0.04 / DATAGRAM_BITS as f64;
                    Some(if m.clean_next {
                        m.clean_next = false;
                        (sent, 0.0, 40)
                    } else if let Atk26Role::Low(bits) = role {
                        // (At least one datagram lost: at 1 Mbit/s a 40 ms report is 3-4.)
                        let got = (bits * 0.04 / DATAGRAM_BITS as f64).min(0.9 * sent).floor();
                        (got, (sent - got).max(1.0), 40)
                    } else {
                        (sent, (0.1 * sent).max(1.0), 40)
                    })
                }
            };
            if let Some(report) = report {
                m.last_ms = ms;
                timed_report(&mut m.estimate, &config, &control, now, report);
            }
        }
        let attackers_ready = members
            .iter()
            .filter(|m| !matches!(m.role, Atk26Role::Honest { .. }))
            .all(|m| m.estimate.congested_streak >= HELD_LOSS_REPORTS);
        if !attackers.is_empty() && !quiet && attackers_ready && rate > goal {
            quiet = true;
            if trace {
                eprintln!("{ms} ms: attackers quiet");
            }
        }
        if trace && ms % 1000 == 0 {
            let streaks: Vec<u32> = members
                .iter()
                .map(|m| m.estimate.congested_streak)
                .collect();
            let fresh: Vec<bool> = members.iter().map(|m| m.estimate.is_fresh()).collect();
            eprintln!("{ms} ms: streaks {streaks:?} fresh {fresh:?}");
        }
        if ms % 50 == 0 {
            let before = control.rate();
            let hosts_and_estimates = members.iter().map(|m| (m.host, &m.estimate));
            plan_lone_tier(&config, now, &mut control, hosts_and_estimates);
            let after = control.rate();
            if after != before {
                let relief = (after < before).then_some(after);
                if relief.is_some() {
                    falls += 1;
                    for m in members.iter_mut() {
                        if !matches!(m.role, Atk26Role::Honest { .. }) {
                            m.clean_next = true;
                        }
                    }
                } else {
                    rises += 1;
                }
                quiet = false;
                for m in members.iter_mut() {
                    m.estimate.new_epoch(relief);
                }
                if trace {
                    eprintln!(
                        "{ms} ms: {:.2} -> {:.2} Mbit/s",
                        before as f64 / MBIT,
                        after as f64 / MBIT
                    );
                }
            }
        }
        let rate = control.rate() as f64;
        min = min.min(rate);
        for _ in 0..honest {
            honest_paths.add(rate, path);
        }
    }
    Atk26Outcome {
        honest: honest_paths,
        end: control.rate() as f64,
        min,
        falls,
        rises,
    }
}

fn atk26_print(label: &str, o: &Atk26Outcome) {
    eprintln!(
        "{label}: {}, tier at end {:.2} Mbit/s (min {:.2}), falls {}, rises {}",
        o.honest,
        o.end / MBIT,
        o.min / MBIT,
        o.falls,
        o.rises
    );
}

/// F-A (high): three attacker hosts (one claiming all of the rate and a loss, two claiming
/// 1.2 Mbit/s), beside 4, 8 or 15 honest hosts on clean 60 Mbit/s paths, no room for another
/// tier. They go quiet until the honest members raise the tier, then report first after the
/// settle: the only fresh hosts, all stranded, 3 of 3: the tier falls to 0.9 x 1.2 Mbit/s.
/// Then they hold it there by staying congested (no rise while anyone holds congestion; a
/// minority of stranded hosts is outvoted, so the tier neither rises nor falls). Without the
/// rule (cf0965d^) the same attackers only hold the tier where it is (honest `awaited`).
/// Measured (30 s, seeds 1-3): honest mean rate/path 0.117-0.238 (0.947-0.948 with no
/// attacker), tier at the end 1.00-1.10 Mbit/s, honest loss 0-0.25 %; cf0965d^ with the
/// same attackers: 0.942-0.945, tier 54-62 Mbit/s. Fixed (8a0b573: honest members awaited
/// vote): 0.944-0.945.
#[test]
fn atk26_three_hosts_reporting_first_after_a_rise_drag_a_no_room_tier_down() {
    let attackers = [
        (Atk26Role::Anchor, 1),
        (Atk26Role::Low(1.2 * MBIT), 2),
        (Atk26Role::Low(1.2 * MBIT), 3),
    ];
    let mut worst: f64 = 1.0;
    for honest in [4, 8, 15] {
        for seed in [1, 2, 3] {
            let base = atk26_phased(honest, 60.0, &[], 2.0 * MBIT, 30, seed);
            atk26_print(&format!("{honest} honest, seed {seed}, no attacker"), &base);
            let o = atk26_phased(honest, 60.0, &attackers, 2.0 * MBIT, 30, seed);
            atk26_print(
                &format!("{honest} honest, seed {seed}, 3 attacker hosts (1 anchor)"),
                &o,
            );
            worst = worst.min(o.honest.share());
        }
    }
    assert!(worst > 0.85, "honest members at {worst:.3} of their path");
}

/// F-A with two attacker hosts (both claiming 1.2 Mbit/s, 16 sessions on one host do no
/// more): with only themselves fresh they are not both stranded (the one claiming less is
/// below 0.85 x the other, the other is not), but once the FIRST honest member's report
/// counts (`settled_clear`: the reference becomes the rate), they are 2 of 3 fresh hosts:
/// a plan (every 50 ms) before the second honest report makes it fall.
/// Measured (30 s): two single-session hosts got the tier to ~1 Mbit/s in 7 of 12 (honest
/// count, phase seed) runs (honest 0.117-0.507 of their path), depending on the honest
/// members' report phases against the 50 ms plan (an attacker retries at every rise; with
/// jitter the phases drift); 2 hosts x 16 sessions in 2 of 12 (the 16 stale sessions' low
/// capacities drag the clear members' MEAN under half the rate, so the tier rarely rises at
/// all: a hold, older than s26). One host (16 sessions, with or without an anchor): never
/// (0.945-0.983). cf0965d^: 0.942-0.983 in every case. Fixed with the three hosts' case:
/// 0.942-0.983 in every case.
#[test]
fn atk26_two_hosts_reporting_first_after_a_rise_drag_a_no_room_tier_down() {
    let mut worst: f64 = 1.0;
    for (label, attackers) in [
        (
            "2 hosts x 1 session",
            vec![
                (Atk26Role::Low(1.2 * MBIT), 1),
                (Atk26Role::Low(1.3 * MBIT), 2),
            ],
        ),
        (
            "2 hosts x 16 sessions",
            (0..32)
                .map(|i| (Atk26Role::Low(1.2 * MBIT), 1 + i % 2))
                .collect::<Vec<_>>(),
        ),
        (
            "1 host x 16 sessions",
            (0..16).map(|_| (Atk26Role::Low(1.2 * MBIT), 1)).collect(),
        ),
        (
            "1 host, 1 anchor + 15 low",
            std::iter::once((Atk26Role::Anchor, 1))
                .chain((0..15).map(|_| (Atk26Role::Low(1.2 * MBIT), 1)))
                .collect(),
        ),
    ] {
        for honest in [3, 4, 8, 15] {
            for seed in [1, 2, 3] {
                let o = atk26_phased(honest, 60.0, &attackers, 2.0 * MBIT, 30, seed);
                atk26_print(&format!("{label}, {honest} honest, seed {seed}"), &o);
                if label.starts_with('2') {
                    worst = worst.min(o.honest.share());
                }
            }
        }
    }
    assert!(worst > 0.85, "honest members at {worst:.3} of their path");
}

/// A run to trace (ATK26_TRACE=1): ATK26_CASE picks the attackers.
#[test]
#[ignore = "a trace, not a check"]
fn atk26_trace() {
    let case = std::env::var("ATK26_CASE").unwrap_or_default();
    let attackers: Vec<(Atk26Role, u64)> = match case.as_str() {
        "1x16" => (0..16).map(|_| (Atk26Role::Low(1.2 * MBIT), 1)).collect(),
        "2x1" => vec![
            (Atk26Role::Low(1.2 * MBIT), 1),
            (Atk26Role::Low(1.3 * MBIT), 2),
        ],
        "3" => vec![
            (Atk26Role::Anchor, 1),
            (Atk26Role::Low(1.2 * MBIT), 2),
            (Atk26Role::Low(1.2 * MBIT), 3),
        ],
        _ => vec![],
    };
    let honest = std::env::var("ATK26_HONEST").map_or(4, |s| s.parse().unwrap());
    let o = atk26_phased(honest, 60.0, &attackers, 2.0 * MBIT, 30, 1);
    atk26_print(&case, &o);
}

/// Claims to receive 1.2 Mbit/s and to lose the rest.
fn atk26_claims_little(_: u64, rate: f64) -> (f64, f64) {
    let got = (1.2 * MBIT / rate).min(0.9);
    (got, 1.0 - got)
}

/// F-B (design, medium): the host key of an IPv6 client was its /64, and an IPv6 customer is
/// usually given a /56 or a /48 (256 or 65,536 /64s; RFC 6177), a cloud VM often several.
/// 16 sessions from 16 /64s of one /56 beside 15 honest 60 Mbit/s hosts were a majority of
/// hosts: the tier fell to the floor (honest 0.052 of their path, tier at 1.00 Mbit/s, 15
/// honest + 16 /64s, and 4 + 5; cf0965d^: 0.900; no liars: 0.950). `host_of` now keys IPv6 by
/// /48: the 16 are one host, and the tier holds.
#[test]
fn atk26_one_ipv6_customers_prefixes_are_one_host() {
    // 2001:db8:0:ab00::/56 -> 16 of its /64s, as `host_of` keys them.
    let hosts: Vec<u64> = (0..16u128)
        .map(|i| host_of(format!("2001:db8:0:ab{i:02x}::1").parse().unwrap()))
        .collect();
    assert!(
        hosts.iter().all(|&h| h == hosts[0]),
        "16 /64s of one /56 are one host: {hosts:x?}"
    );
    let path = 60.0;
    for (honest, liars) in [(15, 0), (15, 16), (4, 5)] {
        let config = RateConfig {
            initial_rate: (0.9 * path * MBIT) as u64,
            tiers_max: 1,
            ..RateConfig::default()
        };
        let mut who: Vec<Who> = (0..honest).map(|_| Who::Honest(clean(path))).collect();
        who.extend((0..liars).map(|_| Who::Liar(Lie::Script(atk26_claims_little))));
        let mut fluid = Fluid::with(config.clone(), who);
        for (liar, &host) in fluid.members[honest..].iter_mut().zip(&hosts) {
            liar.host = host;
        }
        fluid.tiers[0] = TierStart::Known.control(&config, at(0), (0.9 * path * MBIT) as u64);
        let (mut sum, mut n) = (0.0, 0.0);
        for _ in 0..150 {
            fluid.step();
            for id in 0..honest as u64 {
                sum += fluid.rate_of(id).min(path * MBIT) / (path * MBIT);
                n += 1.0;
            }
        }
        eprintln!(
            "{honest} honest hosts {path} Mbit/s, {liars} liars on {liars} /64s of one /56: honest mean rate/path {:.3}, tier at 30 s {:.2} Mbit/s",
            sum / n,
            fluid.rate_of(0) / MBIT
        );
        assert!(
            sum / n > 0.85,
            "{liars} /64s: honest at {:.3} of their path",
            sum / n
        );
    }
}

/// What `host_of` counts as one host: an IPv4 address; an IPv6 /48 (what one subscriber is
/// usually given); an IPv4-mapped IPv6 address as its IPv4 host; IPv4 and IPv6 keys apart.
#[test]
fn a_host_is_an_ipv4_address_or_an_ipv6_slash_48() {
    let key = |s: &str| host_of(s.parse().unwrap());
    assert_ne!(
        key("10.0.0.1"),
        key("10.0.0.2"),
        "two IPv4 addresses, two hosts"
    );
    assert_eq!(
        key("10.0.0.1"),
        key("::ffff:10.0.0.1"),
        "IPv4-mapped is the IPv4 host"
    );
    assert_eq!(
        key("2001:db8:1:2::1"),
        key("2001:db8:1:ff02::9"),
        "one /48, one host"
    );
    assert_ne!(
        key("2001:db8:1::1"),
        key("2001:db8:2::1"),
        "two /48s, two hosts"
    );
    assert_ne!(key("::"), key("0.0.0.0"), "IPv6 and IPv4 keys apart");
    assert_ne!(
        key("2001:db8::1"),
        key("32.1.13.184"),
        "IPv6 and IPv4 keys apart"
    );
}

/// Cost of one `plan` of a tier of `n` members, half keeping up and half losing hard (every
/// one of them movable), with `slower`: a slower tier far from them (no room for another, so
/// each goes there: n/2 moves), else none (each stranded). The stranded filter asks `moving`
/// (a scan of all moves) for each movable member: n/2 x n/2.
fn atk26_plan_cost(n: usize, slower: bool) -> (Duration, usize) {
    let config = RateConfig {
        tiers_max: if slower { 2 } else { 1 },
        ..RateConfig::default()
    };
    let rate = 100_000_000;
    let mut controls = vec![TierControl::new_known(&config, at(0), rate)];
    if slower {
        controls.push(TierControl::new_known(&config, at(0), 50_000_000));
    }
    let clear = settled_reports(&config, rate, 0.0, 6);
    let lossy = settled_reports(&config, rate, 0.9, 6);
    let mut plans = memberless_plans(&mut controls);
    for id in 0..n as u64 {
        plans[0].members.push(MemberPlan {
            id,
            host: id,
            estimate: if id % 2 == 0 { &clear } else { &lossy },
            moved_at: None,
        });
    }
    let started = std::time::Instant::now();
    let moves = plan(&config, at(5_000), &mut plans);
    (started.elapsed(), moves.len())
}

/// F-C (low-medium, cost): `plan` of a 20,000-member tier, half moving to a slower tier:
/// the stranded filter's `moving` scan per movable member is n^2/4 (`stranded_host_votes` was
/// made n log n, this was not). Without the rule (cf0965d^) the same plan costs what the
/// moves cost. IPv6 clients may hold any number of sessions from one /64.
/// Measured (nice 19, busy host): 10k/20k/40k/80k members: 19.5/76/383/1043 ms; all stranded
/// (no moves) 20k: 2.3 ms; cf0965d^: 20k 1.4 ms, 40k 2.9 ms.
/// Fixed (`moving_from`, sorted once per tier). A measurement, not a check: speed targets
/// live in benchmarks, and this prints what a plan costs (`--include-ignored --nocapture`).
#[test]
#[ignore = "atk26 F-C: a measurement (timed), not a check: what one plan of a tier of thousands costs"]
fn atk26_plan_of_a_tier_of_thousands_is_not_quadratic() {
    for &(n, slower) in &[
        (2_000, true),
        (10_000, true),
        (20_000, true),
        (20_000, false),
        (40_000, true),
        (80_000, true),
    ] {
        let (cost, moves) = atk26_plan_cost(n, slower);
        eprintln!(
            "{n} members, half losing, {}: plan took {:.1} ms, {moves} moves",
            if slower {
                "a slower tier (all move)"
            } else {
                "nowhere to go (all stranded)"
            },
            cost.as_secs_f64() * 1e3
        );
        assert_eq!(
            moves,
            if slower { n / 2 } else { 0 },
            "the losing half moves"
        );
    }
}

/// Side note of the review: the clear members' mean, which decides whether a tier keeps up
/// and may rise, counted sessions: 16 quiet sessions of one host claiming 1.2 Mbit/s pulled it
/// under half the rate beside 3-15 honest hosts, and the tier rose 4-6 times in 30 s against
/// 41-58 without them (held where it was, not probing). Now the mean of the hosts' means
/// (`host_mean`): it rises as with no attacker.
#[test]
fn atk26_one_hosts_quiet_sessions_do_not_keep_a_tier_from_rising() {
    let attackers: Vec<(Atk26Role, u64)> =
        (0..16).map(|_| (Atk26Role::Low(1.2 * MBIT), 1)).collect();
    for honest in [3, 8] {
        for seed in [1, 2, 3] {
            let base = atk26_phased(honest, 60.0, &[], 2.0 * MBIT, 30, seed);
            let o = atk26_phased(honest, 60.0, &attackers, 2.0 * MBIT, 30, seed);
            atk26_print(
                &format!("1 host x 16 quiet, {honest} honest, seed {seed}"),
                &o,
            );
            assert!(
                f64::from(o.rises) >= 0.7 * f64::from(base.rises),
                "{honest} honest, seed {seed}: {} rises against {} without the host",
                o.rises,
                base.rises
            );
        }
    }
}
