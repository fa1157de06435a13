//! Session 9: a hostile member against a tier that climbs from a floor in gentle slow-start
//! steps (`FLOOR_STEP`) instead of +10 % three times and then doubling.

use super::*;

/// Steps until every honest member is on a tier at 90 % of its 500 Mbit/s path or more.
fn steps_until_honest_members_are_fast(arena: &mut Fluid, honest: u64, steps_max: u32) -> u32 {
    for step in 1..=steps_max {
        arena.step();
        if (0..honest).all(|id| arena.rate_of(id) >= 0.9 * 500.0 * MBIT) {
            return step;
        }
    }
    steps_max + 1
}

/// Five honest members whose paths take 500 Mbit/s share the file's first tier with a liar
/// that, while the tier is in its first slow start, claims to receive `lowers` Mbit/s and to
/// lose the rest for `lie_steps` steps (a heavy loss: read as a floor), then keeps up. How much
/// later are the honest members fast than with an honest sixth member?
fn delay_by_a_floor_liar(lowers: f64, lie_steps: u32) -> (u32, u32) {
    let config = RateConfig {
        initial_rate: 20_000_000,
        ..RateConfig::default()
    };
    let honest = 5u64;
    let mut baseline = Fluid::new(config.clone(), &[clean(500.0); 6]);
    let alone = steps_until_honest_members_are_fast(&mut baseline, honest, 600);
    let mut who: Vec<Who> = (0..honest).map(|_| Who::Honest(clean(500.0))).collect();
    who.push(Who::Liar(Lie::Lowers(lowers * MBIT)));
    let mut arena = Fluid::with(config, who);
    for _ in 0..lie_steps {
        arena.step();
    }
    arena.lie(honest as usize, Lie::Keeps);
    let with_liar = lie_steps + steps_until_honest_members_are_fast(&mut arena, honest, 600);
    eprintln!(
        "liar at {lowers} Mbit/s for {lie_steps} steps: honest members fast after {with_liar} steps ({alone} without it); tiers {:?}",
        arena.layout()
    );
    (alone, with_liar)
}

#[test]
fn a_liar_in_the_first_slow_start_delays_honest_members_little() {
    let mut worst = (0, 0);
    for lowers in [0.1, 1.0, 10.0] {
        for lie_steps in [1, 2, 5] {
            let (alone, with_liar) = delay_by_a_floor_liar(lowers, lie_steps);
            if with_liar - alone > worst.1 - worst.0 {
                worst = (alone, with_liar);
            }
        }
    }
    eprintln!("worst: {worst:?} steps of {STEP:?}");
    assert!(
        worst.1 <= worst.0 + 5,
        "a liar delayed the honest members {:?} (steps alone, with it)",
        worst
    );
}
