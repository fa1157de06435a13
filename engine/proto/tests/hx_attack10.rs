//! Issue 10, session 10: the NAK planner's leads, straggler retraction, scan limit and strays
//! (`NakPlanner::saw`) against a host on the group that replays genuine datagrams, and on
//! honest networks (bursts of loss, two sender threads, tier moves). Written by the session's
//! attacker helper as probes; the three defects they found (a frontier parked far from the
//! loop hid all loss; bursts just over a step were reported 63 short each; a late run of a few
//! dozen serials read as 2 % loss) are fixed and asserted here. Each simulation prints the
//! loss the client reported against the path's true loss.
mod replay_sim;
use replay_sim::*;

/// Two honest bursts of 100 lost (at 10,000 and 20,000); with `attack`, a replay 5,000 past
/// the loop every 500 ms from `offset_us` on. Reported loss true, nothing asked twice.
fn planted_leads_beside_honest_bursts(offset_us: u64, label: &str) {
    let burst = |s: u32, _t: u64| (10_000..10_100).contains(&s) || (20_000..20_100).contains(&s);
    for attack in [false, true] {
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, burst);
        if attack {
            for k in 0..6u64 {
                let t = k * 500_000 + offset_us;
                let s = (t as f64 * RATE / 1e6) as u32 + 5_000;
                ev.push((t, Ev::Replay(s)));
            }
        }
        let label = format!("{label}, attack {attack}");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        assert_true_loss(&r, 0.5, &label);
        assert_eq!(r.asked_received_anyway, 0, "{label}");
    }
}

/// H1: a lead planted far ahead, renewed rarely, is not taken over by an honest burst.
#[test]
fn a_lead_planted_far_ahead_does_not_take_over_an_honest_burst() {
    planted_leads_beside_honest_bursts(100, "h1 lead every 500 ms at +5000");
}

/// H1b: the lead planted 250 ms before the burst, 2,500 past it.
#[test]
fn a_lead_planted_before_an_honest_burst_does_not_take_it_over() {
    planted_leads_beside_honest_bursts(250_000, "h1b lead every 500 ms at +5000, 250 ms before");
}

/// F1 (honest): bursts of 65-127 lost were reported 63 short each (0.10 % for a true 3.25 %:
/// `LossMeter::jump_over` reset the window with the burst's start still unread in it).
#[test]
fn bursts_of_loss_just_over_a_step_are_reported_as_lost() {
    for b in [65u32, 70, 100, 127, 200, 1_000] {
        let lossy = move |s: u32, _t: u64| s % 2_000 < b;
        let (ev, sent) = honest_loop(L, RATE, 3_000, 1, lossy);
        let label = format!("f1 bursts of {b} every 2000");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        // (The last burst is still within the window when the run ends.)
        assert_true_loss(&r, 2.0, &label);
    }
}

/// H1c: leads planted every 10 ms at +500 (100 a second); honest bursts of 100 every 2,000.
#[test]
fn frequent_planted_leads_do_not_extend_honest_bursts() {
    let lossy = |s: u32, _t: u64| s % 2_000 >= 1_000 && s % 2_000 < 1_100;
    for (label, attack) in [("h1c no attack", false), ("h1c +500 every 10 ms", true)] {
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, lossy);
        if attack {
            for k in 10..300u64 {
                let t = k * 10_000 + 500;
                let s = (t as f64 * RATE / 1e6) as u32 + 500;
                ev.push((t, Ev::Replay(s)));
            }
        }
        let r = simulate(L, RATE, ev, &sent, 3_000, label);
        assert_true_loss(&r, 0.5, label);
        assert_eq!(r.asked_received_anyway, 0, "{label}");
    }
}

/// H2: after one honest burst (frontier waits for the lead), the attacker steps the frontier
/// 64 at a time every 10 ms, keeping it from ever promoting; then (lead dropped) forever.
#[test]
fn steps_replayed_after_an_honest_burst_barely_move_the_reported_loss() {
    let lossy = |s: u32, _t: u64| (10_000..10_200).contains(&s);
    for (label, attack) in [("h2 no attack", false), ("h2 step 64 every 10 ms", true)] {
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, lossy);
        if attack {
            // The attacker tracks the victim's frontier: 9,999 at the burst, +64 a step.
            let mut f = 9_999u32;
            for k in 0..200u64 {
                let t = 1_000_000 + 5_000 + k * 10_000;
                f += 64;
                ev.push((t, Ev::Replay(f)));
            }
        }
        let r = simulate(L, RATE, ev, &sent, 3_000, label);
        assert_true_loss(&r, 0.5, label);
    }
}

/// H4a: at the join, the attacker's replay of a far serial X arrives first (it sets the
/// frontier); then one replay of X+k every `keep_ms` ms. Each was progress and reset the
/// count of strays: the victim's 30 % loss read as 0.00 % and it asked for nothing, for the
/// whole run. Strays now need only outnumber arrivals near the frontier 8 to 1.
#[test]
fn a_frontier_parked_far_from_the_join_follows_the_loop_back() {
    for keep_ms in [0u64, 10, 5] {
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 50_000, random_loss(30));
        if keep_ms > 0 {
            ev.push((0, Ev::Replay(150_000)));
            let mut k = 0;
            let mut t = keep_ms * 1000;
            while t < 3_000_000 {
                k += 1;
                ev.push((t + 1, Ev::Replay(150_000 + k)));
                t += keep_ms * 1000;
            }
        }
        // Ev::Loop(50_000..) at t=0 too; the replay first (sorted stably after? put it at 0 first)
        ev.sort_by_key(|e| (e.0, matches!(e.1, Ev::Loop(_))));
        let label = format!("h4a 30 % loss, parked at 150,000, keep every {keep_ms} ms");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        assert_true_loss(&r, 2.0, &label);
    }
}

/// H4b: the same from the middle of a session: a 20 ms outage of the victim's path (200
/// lost), 16 far replays within it (stray restart), then keep-alive replays.
#[test]
fn a_frontier_parked_in_an_outage_follows_the_loop_back() {
    for (attack, keep) in [(false, false), (true, false), (true, true)] {
        let outage = |s: u32, t: u64| (1_000_000..1_020_000).contains(&t) || random_loss(30)(s, t);
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, outage);
        if attack {
            for i in 0..16u64 {
                ev.push((1_002_000 + i * 1_000, Ev::Replay(70_000 + i as u32)));
            }
            if keep {
                let mut t = 1_020_000;
                let mut k = 16;
                while t < 3_000_000 {
                    k += 1;
                    ev.push((t + 1, Ev::Replay(70_000 + k)));
                    t += 10_000;
                }
            }
        }
        let label = format!("h4b outage 20 ms + 30 % loss, attack {attack}, keep {keep}");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        assert_true_loss(&r, 2.0, &label);
    }
}

/// H5: a victim losing 60 %; every `every_ms` the attacker replays two of its real recent
/// losses, in order, a few serials apart, ~300 behind the loop (stragglers: retraction).
/// Known, not fixed: it reads up to 9 points more loss (the attacker must know which serials
/// the victim lost, and a client losing 60 % is moved down anyway). Bounded here.
#[test]
fn replayed_pairs_of_a_lossy_clients_own_losses_add_a_bounded_loss() {
    let lossy = random_loss(60);
    for every_ms in [0u64, 20, 5, 2] {
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, &lossy);
        if every_ms > 0 {
            let mut t = 100_000u64;
            while t < 3_000_000 {
                let loop_at = (t as f64 * RATE / 1e6) as u32;
                let mut picks = (loop_at - 400..loop_at - 200).filter(|&s| lossy(s, 0));
                if let (Some(a), Some(b)) = (picks.next(), picks.next()) {
                    ev.push((t + 50, Ev::Replay(a)));
                    ev.push((t + 60, Ev::Replay(b)));
                }
                t += every_ms * 1000;
            }
        }
        let label = format!("h5 60 % loss, straggler pair every {every_ms} ms");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        assert_true_loss(&r, 12.0, &label);
    }
}

/// H3 (honest): two sender threads; every 1,000 serials, a run of `late` serials arrives
/// `delay_us` late. A late run of 30-100 serials retracted the frontier and the meter
/// forgot what had arrived past it: 1.4-2.3 % loss on a loss-free path.
#[test]
fn late_runs_of_another_sender_thread_are_not_read_as_loss() {
    for (late, delay_us) in [
        (300u32, 20_000u64),
        (300, 40_000),
        (500, 30_000),
        (100, 5_000),
        (100, 10_000),
        (64, 3_000),
        (200, 10_000),
        (200, 15_000),
        (30, 5_000),
    ] {
        let (ev0, sent) = honest_loop(L, RATE, 3_000, 0, |_, _| false);
        let ev: Vec<(u64, Ev)> = ev0
            .into_iter()
            .map(|(t, e)| match e {
                Ev::Loop(s) if s % 1_000 < late => (t + delay_us, Ev::Loop(s)),
                e => (t, e),
            })
            .collect();
        let label = format!("h3 runs of {late} late by {delay_us} us (loss-free)");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        assert!(r.reported_loss < 0.005, "{label}");
        assert_eq!(r.asked_unique, 0, "{label}");
    }
}

/// H4c: a tier move (`rejoin`) at 1 s; the attacker's far replay is the first datagram after
/// it, then one replay every 10 ms next to it. The victim's path loses 30 % (reported 0 %
/// after the move before the fix).
#[test]
fn a_frontier_parked_at_a_tier_move_follows_the_loop_back() {
    for attack in [false, true] {
        let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, random_loss(30));
        ev.push((1_000_000, Ev::Rejoin));
        if attack {
            ev.push((1_000_000, Ev::Replay(80_000)));
            for k in 1..200u32 {
                ev.push((
                    1_000_000 + u64::from(k) * 10_000 + 1,
                    Ev::Replay(80_000 + k),
                ));
            }
        }
        ev.sort_by_key(|e| {
            (
                e.0,
                match e.1 {
                    Ev::Rejoin => 0,
                    Ev::Replay(_) => 1,
                    _ => 2,
                },
            )
        });
        let label = format!("h4c rejoin at 1 s, 30 % loss, attack {attack}");
        let r = simulate(L, RATE, ev, &sent, 3_000, &label);
        assert_true_loss(&r, 2.0, &label);
    }
}

/// Forged datagrams (sound header, never verified) 300 ahead every 5 ms, forged NakHeard of
/// whole-loop ranges every 50 ms, and the rate the client knows halved at 1 s while the loop
/// goes on at the old one (a stale rate): the client still reports its 10 % loss.
#[test]
fn forged_datagrams_forged_heard_and_a_stale_rate_leave_the_reported_loss_true() {
    let (mut ev, sent) = honest_loop(L, RATE, 3_000, 0, random_loss(10));
    ev.push((1_000_000, Ev::Rate(RATE / 2.0)));
    for k in 1..600u64 {
        let t = k * 5_000 + 3;
        let s = (t as f64 * RATE / 1e6) as u32 + 300;
        ev.push((t, Ev::Forged(s)));
        if k % 10 == 0 {
            ev.push((t + 1, Ev::Heard(vec![(0, L), (1, L - 1)])));
        }
    }
    let label = "forged, heard, stale rate";
    let r = simulate(L, RATE, ev, &sent, 3_000, label);
    assert_true_loss(&r, 2.0, label);
}
