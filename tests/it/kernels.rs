//! The reference kernels of the non-linear lowerings: error bounds against the float
//! functions (the README table prints the same measurement), and edge values.

use intone::quant::kernels::*;

#[test]
fn kernel_errors_stay_within_their_bounds() {
    for e in measure_errors() {
        let bound = match (e.kernel, e.setting.as_str()) {
            // 2^r ≈ 1 + r/2 on (−1, 0] is off by up to 6 % of the value.
            ("exp", s) if s.starts_with("ShiftExp") => 0.07,
            ("exp", _) => 0.01,
            ("softmax", s) if s.contains("8-bit") => 0.04,
            ("softmax", _) => 0.03,
            ("gelu", s) if s.starts_with("ShiftGELU") => 0.2,
            ("gelu", _) => 0.1,
            ("layer_norm", _) => 0.03,
            // Half an input step (8/127 / 2) times a slope of at most 1.1 (SiLU, Mish; 1.5 for
            // HardSwish at x = 3), plus the table's 2^-15.
            ("activation", s) if s.starts_with("HardSwish") => 0.048,
            ("activation", _) => 0.036,
            (k, _) => panic!("no bound for {k}"),
        };
        assert!(
            e.max_abs <= bound,
            "{} {}: max error {} above {bound}",
            e.kernel,
            e.setting,
            e.max_abs
        );
    }
}

#[test]
fn shiftmax_handles_ties_masks_and_range_limits() {
    let table = exp_table(ExpKernel::Shift { n: 15 }, 0.005, 8);
    // Ties: equal logits share the probability equally.
    let p = softmax_row(&[7, 7, 7, 7], &table, 8);
    assert!(p.iter().all(|&v| v == p[0]) && p[0] == 31, "{p:?}");
    // Masked positions (the −2^29 an integer Where writes) give exactly 0.
    let limit = 1 << 29;
    let p = softmax_row(&[-limit, 5, -limit, 5], &table, 16);
    assert_eq!((p[0], p[2]), (0, 0));
    assert_eq!(p[1], p[3]);
    // The row maximum at the top of the input range, negatives odd and even.
    let p = softmax_row(&[limit, limit - 1, -3, -limit], &table, 8);
    assert!(p[0] >= p[1] && p[2] == 0 && p[3] == 0, "{p:?}");
    // A row of one: probability 1 at scale 2^-7, floored.
    assert_eq!(softmax_row(&[-5], &table, 8), vec![127]);
}

#[test]
fn shiftmax_from_the_accumulator_rounds_the_distance_once() {
    // Index scale 2^k times the input's: the index is the distance below the row maximum,
    // rounded half up (h = 2^(k−1)), the same as the index-domain kernel on those rounded
    // distances. Odd negatives, ties at exactly h, the cap, and a masked position.
    let table = exp_table(ExpKernel::Shift { n: 15 }, 0.25, 16);
    let k = 3;
    let h = 1 << (k - 1);
    let limit = 1 << 29;
    let x = [
        -7i64,
        -3,
        0,
        4,
        3,
        -1,
        -4,
        5,
        -limit,
        5 - 12,
        -13,
        5 - (1 << 20),
    ];
    let max = *x.iter().max().unwrap();
    let rounded: Vec<i64> = x.iter().map(|&v| -((max - v + h) >> k)).collect();
    for (numerator, divisor, half_up) in [
        (i32::MAX as i64, 1 << 24, false),
        (1 << 30, 4_194_304, true),
    ] {
        assert_eq!(
            softmax_row_shifted(&x, k, h, &table, numerator, divisor, half_up),
            softmax_row_divided(&rounded, &table, numerator, divisor, half_up),
        );
    }
    // A distance of exactly h rounds up to index 1 (half up), h − 1 down to index 0.
    let p = softmax_row_shifted(
        &[0, -h, -(h - 1)],
        k,
        h,
        &table,
        i32::MAX as i64,
        1 << 24,
        false,
    );
    assert!(p[1] < p[0] && p[2] == p[0], "{p:?}");
    // The masked position gives exactly 0.
    let p = softmax_row_shifted(&[0, -limit], k, h, &table, i32::MAX as i64, 1 << 24, false);
    assert_eq!(p[1], 0);
}

#[test]
fn exponentials_are_monotone_and_end_in_zero() {
    for kernel in [ExpKernel::Shift { n: 15 }, ExpKernel::Polynomial] {
        for s in [0.001, 0.005, 0.05] {
            let t = exp_table(kernel, s, 4096);
            assert_eq!(*t.last().unwrap(), 0);
            assert!(t.windows(2).all(|w| w[0] >= w[1]), "{kernel:?} s={s}");
            assert!(
                t[0] as i64 * 4096 < 1 << 31,
                "{kernel:?} s={s}: rows overflow"
            );
        }
    }
}

#[test]
fn shift_exp_follows_the_i_vit_arithmetic_on_odd_negatives() {
    // s = 0.25: x0 = floor(−1/s) = −4; x = −3: I_p = −3 + floor(−1.5) − floor(−3/16) = −3 −2 +1 = −4,
    // q = 1, r = 0, exp = floor((0 − 2·(−4))·2^(15−1)/2) = 8·2^13 = 65536.
    assert_eq!(shift_exp(-3, 0.25, 15), 65536);
    // x = −1: I_p = −1 − 1 + 1 = −1, q = 0, r = −1: floor((−1 + 8)·2^15/2) = 7·2^14.
    assert_eq!(shift_exp(-1, 0.25, 15), 7 * (1 << 14));
    assert_eq!(shift_exp(0, 0.25, 15), 8 * (1 << 14));
}

#[test]
fn gelu_tables_are_odd_around_zero_where_gelu_is() {
    for kernel in [GeluKernel::Shift, GeluKernel::Polynomial] {
        let (t, scale) = gelu_table(kernel, 0.05);
        assert_eq!(t[128], 0, "{kernel:?}: gelu(0)");
        // GELU(x) − GELU(−x) = x.
        for x in [1i64, 7, 63, 127] {
            let d = (t[(128 + x) as usize] - t[(128 - x) as usize]) as f64 * scale;
            assert!(
                (d - x as f64 * 0.05).abs() < 0.02 * (1.0 + x as f64 * 0.05),
                "{kernel:?} x={x}: {d}"
            );
        }
    }
}

#[test]
fn layer_norm_handles_constant_rows_extremes_and_epsilon() {
    let plan = LayerNormPlan::new(384, 32767, 1e-3, 1e-12);
    // A constant row: centred values are 0, the variance is ε (at least 1): output 0.
    assert!(plan.normalize(&[5; 384]).iter().all(|&v| v == 0));
    // Range limits: alternating ±32767 normalises to ±1 within a unit or two.
    let x: Vec<i64> = (0..384)
        .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
        .collect();
    let z = plan.output_scale();
    for v in plan.normalize(&x) {
        assert!(
            ((v as f64 * z).abs() - 1.0).abs() < 0.01,
            "{}",
            v as f64 * z
        );
    }
    // Odd negatives: a row moved by a constant normalises the same (its mean moves with it).
    let a: Vec<i64> = (0..384).map(|i| (i as i64 * 37 % 101) - 51).collect();
    let b: Vec<i64> = a.iter().map(|v| v - 1001).collect();
    assert_eq!(plan.normalize(&a), plan.normalize(&b));
    // ε at BERT's 1e-12 rounds to 0 units here; a huge ε dominates the variance.
    assert_eq!(plan.epsilon, 0);
    let damped = LayerNormPlan::new(384, 32767, 1e-3, 1e3);
    assert!(damped.epsilon > 0);
    let small = damped.normalize(&a);
    assert!(
        small
            .iter()
            .all(|v| v.abs() < plan.normalize(&a)[0].abs().max(1))
    );
}

#[test]
fn newton_root_is_floor_sqrt_or_one_above_over_the_plans_range() {
    let plan = LayerNormPlan::new(384, 32767, 1e-3, 1e-12);
    let mut v = 1i64;
    while v < 1 << 30 {
        for w in [v - 1, v, v + 1].into_iter().filter(|&w| w >= 1) {
            let r = plan.isqrt(w);
            let f = (w as f64).sqrt().floor() as i64;
            assert!(r == f || r == f + 1, "isqrt({w}) = {r}");
        }
        v = v * 3 / 2 + 1;
    }
}

#[test]
fn layer_norm_plan_keeps_the_variance_and_newton_sums_in_int32() {
    // Newton's `root + v / root` is bounded by 2·v_max in interval analysis: v_max (sum of
    // narrowed squares plus ε) must stay below 2^30, for tiny scales (ε large) too.
    for d in [64i64, 384, 768, 1024] {
        for x_max in [127i64, 32767, 65534, 1 << 20] {
            for (s, eps) in [(1e-3, 1e-12), (1e-4, 1e-6), (1e-6, 1e-5), (1e-8, 1e-5)] {
                let plan = LayerNormPlan::new(d, x_max, s, eps);
                let y_max = 2 * x_max as i128 + 1;
                let k = plan.square_shift;
                let narrowed = if k == 0 {
                    y_max
                } else {
                    (y_max + (1 << (k - 1))) >> k
                };
                let v_max = d as i128 * narrowed * narrowed + plan.epsilon as i128;
                assert!(
                    v_max < 1 << 30,
                    "d={d} x_max={x_max} s={s} eps={eps}: {v_max}"
                );
                // The root of the largest variance is exact.
                let v = (v_max as i64).min(i32::MAX as i64);
                let r = plan.isqrt(v);
                assert!(r * r <= v && (r + 1) * (r + 1) > v, "isqrt({v}) = {r}");
            }
        }
    }
}
