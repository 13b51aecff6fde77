//! The integer numerics: reference kernels against exact rational arithmetic, and the
//! legalized ONNX against the reference kernels, bit for bit, in tract and onnxruntime.

use proptest::prelude::*;

use intone::ir::quant::{QuantFacts, Scale};
use intone::ir::{Array, DataType, Model};
use intone::pass::{CompileOptions, Manager, Pipeline};
use intone::passes::PASSES;
use intone::quant::dyadic::{Dyadic, MAX_SHIFT};
use intone::quant::requant::RequantParams;
use intone::quant::rounding::{Rounding, shift_right};
use intone::runner::Runner;

use crate::build::*;
use crate::{oracle, tempdir};

/// `y` is `x / 2^c` rounded as `mode` says, checked by exact integer inequalities.
fn is_rounding_of(x: i128, c: u32, mode: Rounding, y: i128) -> bool {
    let d = 1i128 << c;
    match mode {
        Rounding::Floor => y * d <= x && x < (y + 1) * d,
        // y − 1/2 ≤ x/d < y + 1/2
        Rounding::HalfUp => d * (2 * y - 1) <= 2 * x && 2 * x < d * (2 * y + 1),
        Rounding::HalfEven => {
            let twice = 2 * x - 2 * y * d; // 2d·(x/d − y)
            twice.abs() < d || (twice.abs() == d && y % 2 == 0)
        }
    }
}

proptest! {
    #[test]
    fn shifts_round_exactly(x in any::<i64>(), c in 0u32..=62, mode in prop_oneof![Just(Rounding::Floor), Just(Rounding::HalfUp), Just(Rounding::HalfEven)]) {
        let y = shift_right(x as i128, c, mode);
        prop_assert!(is_rounding_of(x as i128, c, mode, y), "x={x} c={c} {mode:?} gave {y}");
    }

    #[test]
    fn dyadics_are_as_precise_as_their_bound_allows(r in 1e-9f64..1e6, max in 2i64..(1i64 << 31)) {
        let Some(d) = Dyadic::approximate(r, max) else {
            // Only when r itself rounds above the bound.
            prop_assert!((r + 0.5).floor() > max as f64);
            return Ok(());
        };
        prop_assert!(d.multiplier >= 1 && d.multiplier <= max && d.shift <= MAX_SHIFT);
        // m is r·2^c rounded: within half a unit of the last place.
        prop_assert!((d.value() - r).abs() <= 0.5 / 2f64.powi(d.shift as i32) * (1.0 + 1e-12));
        // And it used the bound: one more bit would not have fitted (unless the shift capped).
        if r * 2f64.powi(MAX_SHIFT as i32) > max as f64 * 2.0 {
            prop_assert!(d.relative_error(r) <= 1.0 / (max as f64 - 1.0) + 1e-12, "{d:?} for {r} under {max}");
        }
    }

    #[test]
    fn fast_round_half_even_matches_the_library(x in any::<f64>(), k in -60i32..60) {
        let x = if x.is_finite() { x } else { 0.0 };
        let scaled = x * 2f64.powi(k) / 1e3;
        for v in [scaled, scaled.trunc() + 0.5, -(scaled.trunc() + 0.5)] {
            prop_assert_eq!(intone::quant::rounding::round_half_even(v), v.round_ties_even(), "at {}", v);
        }
    }

    #[test]
    fn requant_reference_is_exact(x in -(1i64 << 40)..(1i64 << 40), m in 1i64..(1 << 31), b in -(1i64 << 40)..(1i64 << 40), c in 0u32..=40, zp in -200i64..200) {
        let p = RequantParams {
            multiplier: vec![m], offset: vec![b], shift: vec![c], rounding: Rounding::HalfUp,
            zero_point: zp, lo: -1000, hi: 1000, axis: 0, to: DataType::Int32,
        };
        let y = p.apply(x, 0) as i128;
        let unclamped = shift_right(x as i128 * m as i128 + b as i128, c, Rounding::HalfUp) + zp as i128;
        prop_assert_eq!(y, unclamped.clamp(-1000, 1000));
        prop_assert!(is_rounding_of(x as i128 * m as i128 + b as i128, c, Rounding::HalfUp, unclamped - zp as i128));
    }
}

#[test]
fn dyadic_weights_quantize_exactly_and_dead_channels_to_zeros() {
    // Columns: bilinear weights (3/4, 1/4), a border column (1, 0), ordinary weights, and a
    // denormal (dead) channel beside them.
    let w = ndarray::ArrayD::from_shape_vec(
        ndarray::IxDyn(&[2, 4]),
        vec![0.75f32, 1.0, 0.3, 1e-40, 0.25, 0.0, -0.7, -1e-40],
    )
    .unwrap();
    let (q, scales) = intone::lower::engine::quantize_weight(&w, 1, 127);
    let column = |c: usize| {
        q.index_axis(ndarray::Axis(1), c)
            .iter()
            .copied()
            .collect::<Vec<i8>>()
    };
    assert_eq!((column(0), scales[0]), (vec![96, 32], 1.0 / 128.0));
    assert_eq!((column(1), scales[1]), (vec![64, 0], 1.0 / 64.0));
    assert_eq!(column(2), vec![54, -127], "max/127 otherwise");
    assert_eq!(scales[2], (0.7f64 / 127.0) as f32 as f64);
    // The dead channel: zeros at the largest channel's scale (not 1e-40/127).
    assert_eq!(column(3), vec![0, 0]);
    assert_eq!(scales[3], (1.0f64 / 127.0) as f32 as f64);
}

#[test]
fn weights_quantize_within_half_a_step() {
    let w = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[7, 5]), |i| {
        ((i[0] * 31 + i[1] * 17) % 23) as f32 / 7.0 - 1.5
    });
    for magnitude in [127, 64] {
        let (q, scales) = intone::lower::engine::quantize_weight(&w, 1, magnitude);
        for ((i, &x), &qv) in w.indexed_iter().zip(q.iter()) {
            let s = scales[i[1]];
            assert!((qv as f64 * s - x as f64).abs() <= s / 2.0 + 1e-9);
            assert!((-magnitude..=magnitude).contains(&(qv as i64)));
        }
        // Each channel reaches its grid's end.
        for c in 0..5 {
            let top = q
                .index_axis(ndarray::Axis(1), c)
                .iter()
                .map(|v| v.abs() as i64)
                .max();
            assert_eq!(top, Some(magnitude));
        }
    }
}

/// A model `y = intone.Requant(x)` with x's proven range recorded, legalized for `target`.
fn legalized(
    params: &RequantParams,
    input: DataType,
    shape: &[i64],
    range: (i64, i64),
    target: &str,
) -> Model {
    let dims: Vec<D> = shape.iter().map(|&d| D::N(d)).collect();
    let mut b = ModelBuilder::new(18).input("x", input, &dims);
    let op = intone::ops::intone::requant::to_op(params, "requant");
    b.graph().node.push(intone::schema::NodeProto {
        op_type: Some("Requant".into()),
        domain: Some("intone".into()),
        name: Some("requant".into()),
        input: vec!["x".into()],
        output: vec!["y".into()],
        attribute: op.proto.attribute.clone(),
        ..Default::default()
    });
    b.proto
        .opset_import
        .push(intone::schema::OperatorSetIdProto {
            domain: Some("intone".into()),
            version: Some(1),
        });
    let b = b.output("y", params.to, &dims);
    let mut model = b.model();
    let x = model.graph.find_value("x").unwrap();
    model.graph.value_mut(x).quant = Some(QuantFacts {
        scale: Scale::PerTensor(1.0),
        bits: 32,
        signed: true,
        zero_point: 0,
        range: Some(range),
    });
    let pipeline = Pipeline::parse(&format!("legalize(target={target})"), PASSES).unwrap();
    Manager::new(&pipeline, PASSES)
        .unwrap()
        .run(&mut model, &CompileOptions::default())
        .unwrap();
    // The internal domain import stays harmless, but the output must not use it.
    model.header.opset_import.retain(|o| o.domain() != "intone");
    model
}

/// Edge values of a requantization: ties and negative odd numbers around every multiple of
/// the step, the range limits, and a spread of values in between.
fn edge_values(p: &RequantParams, range: (i64, i64), count: usize) -> Vec<i64> {
    let mut v: Vec<i64> = vec![
        range.0,
        range.0 + 1,
        range.1 - 1,
        range.1,
        0,
        1,
        -1,
        2,
        -2,
        3,
        -3,
    ];
    let (m, _, c) = p.channel(0);
    if c > 0 && m > 0 {
        // x·m ≡ 2^(c−1) (mod 2^c): exact ties when m is odd.
        let step = 1i64 << c;
        for k in -3..=3i64 {
            let target = k * step + step / 2;
            if m == 1 {
                v.extend([target, target - 1, target + 1, -target, -target - 1]);
            }
        }
    }
    let mut state = 0x9E3779B97F4A7C15u64;
    while v.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let span = (range.1 - range.0) as u64 + 1;
        v.push(range.0 + (state % span) as i64);
    }
    v.truncate(count);
    v.into_iter().map(|x| x.clamp(range.0, range.1)).collect()
}

fn cases() -> Vec<(&'static str, RequantParams, DataType, (i64, i64))> {
    let p = |m: Vec<i64>,
             b: Vec<i64>,
             c: Vec<u32>,
             zp: i64,
             lo: i64,
             hi: i64,
             to: DataType,
             r: Rounding| RequantParams {
        multiplier: m,
        offset: b,
        shift: c,
        rounding: r,
        zero_point: zp,
        lo,
        hi,
        axis: 2,
        to,
    };
    vec![
        (
            "ties, m = 1",
            p(
                vec![1],
                vec![0],
                vec![3],
                0,
                -128,
                127,
                DataType::Int8,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-1100, 1100),
        ),
        (
            "floor",
            p(
                vec![1],
                vec![0],
                vec![3],
                0,
                -128,
                127,
                DataType::Int8,
                Rounding::Floor,
            ),
            DataType::Int32,
            (-1100, 1100),
        ),
        (
            "int32 recipe",
            p(
                vec![1234567],
                vec![-99],
                vec![28],
                0,
                -32767,
                32767,
                DataType::Int32,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-400, 400),
        ),
        (
            "uint8 output, zero point 128",
            p(
                vec![3],
                vec![5],
                vec![4],
                128,
                0,
                255,
                DataType::Uint8,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-5000, 5000),
        ),
        (
            "uint8 input with its zero point in the offset",
            p(
                vec![7],
                vec![-128 * 7],
                vec![2],
                0,
                -128,
                127,
                DataType::Int8,
                Rounding::HalfUp,
            ),
            DataType::Uint8,
            (0, 255),
        ),
        (
            "int64 recipe",
            p(
                vec![1077026241],
                vec![0],
                vec![30],
                0,
                -32767,
                32767,
                DataType::Int32,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-(1 << 20), 1 << 20),
        ),
        (
            "per channel",
            p(
                vec![5, 1077, 12345, 3],
                vec![7, -100, 3, 0],
                vec![3, 10, 15, 1],
                -3,
                -128,
                127,
                DataType::Int8,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-(1 << 14), 1 << 14),
        ),
        (
            "uint8 per channel, clamp above 0, int64 dividend",
            p(
                vec![1077026241, 3, 999999937, 1],
                vec![-7, 5, 1 << 20, -3],
                vec![40, 1, 33, 2],
                128,
                3,
                250,
                DataType::Uint8,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-(1 << 21) - 1, (1 << 21) + 1),
        ),
        (
            "uint8 floor, odd negative dividends",
            p(
                vec![1],
                vec![-1],
                vec![1],
                0,
                0,
                255,
                DataType::Uint8,
                Rounding::Floor,
            ),
            DataType::Int32,
            (-601, 601),
        ),
        (
            "no shift",
            p(
                vec![2],
                vec![3],
                vec![0],
                1,
                -100,
                100,
                DataType::Int32,
                Rounding::HalfUp,
            ),
            DataType::Int32,
            (-60, 60),
        ),
    ]
}

#[test]
fn legalized_requantization_is_bit_exact_in_tract_and_onnxruntime() {
    let dir = tempdir();
    let shape = [2usize, 3, 4, 16];
    let n: usize = shape.iter().product();
    for target in ["integer", "integer-opset28"] {
        for (name, params, input_type, range) in cases() {
            let model = legalized(&params, input_type, &[2, 3, 4, 16], range, target);
            let ops: Vec<String> = model
                .graph
                .node_ids()
                .filter_map(|id| model.graph.op(id))
                .map(|op| op.op_type().to_string())
                .collect();
            assert!(!ops.iter().any(|o| o == "Requant"), "{name}: not legalized");
            // Channels run along axis 2 for the per-channel case.
            let params = RequantParams { axis: 2, ..params };
            let xs = edge_values(&params, range, n);
            let input = Array::from_vec(&shape, xs.clone())
                .unwrap()
                .cast(input_type)
                .unwrap();
            let expected = params.apply_all(&xs, &shape);
            let tract = Runner::new(&model)
                .unwrap()
                .run(std::slice::from_ref(&input), None)
                .unwrap();
            assert_eq!(tract[0].1.dtype(), params.to, "{name}");
            assert_eq!(
                tract[0].1.to_i64_vec().unwrap(),
                expected,
                "{name} ({target}): tract differs from the reference"
            );
            // onnxruntime, from the saved file.
            let path = dir.path().join(format!(
                "{target}-{}.onnx",
                name.replace([' ', ',', '='], "_")
            ));
            intone::onnx::save(&model, &path).unwrap();
            let x_path = dir.path().join("x.npy");
            intone::npy::write(&x_path, &input).unwrap();
            let out = dir.path().join("ort");
            oracle(
                "run_ort.py",
                &[
                    path.to_str().unwrap(),
                    out.to_str().unwrap(),
                    &format!("x={}", x_path.display()),
                ],
                "",
            );
            let ort = intone::npy::read(&out.join("y.npy")).unwrap();
            assert_eq!(
                ort.to_i64_vec().unwrap(),
                expected,
                "{name} ({target}): onnxruntime differs from the reference"
            );
        }
    }
}

#[test]
fn int32_and_int64_recipes_are_chosen_by_range() {
    let (_, small, _, _) = cases().remove(2);
    let m = legalized(&small, DataType::Int32, &[4], (-400, 400), "integer");
    let has = |m: &Model, op: &str| {
        m.graph
            .node_ids()
            .any(|id| m.graph.op(id).is_some_and(|o| o.op_type() == op))
    };
    assert!(!has(&m, "CastLike"), "a small range needs no int64");
    let m = legalized(
        &small,
        DataType::Int32,
        &[4],
        (-(1 << 20), 1 << 20),
        "integer",
    );
    assert!(has(&m, "CastLike"), "a large range needs the int64 recipe");
    let m = legalized(
        &small,
        DataType::Int32,
        &[4],
        (-400, 400),
        "integer-opset28",
    );
    assert!(has(&m, "BitShift") && !has(&m, "Div"));
    assert_eq!(m.opset(""), Some(28));
}

#[test]
fn a_result_clamped_at_or_above_zero_needs_no_bias_and_no_sub() {
    let ops = |name: &str| -> Vec<String> {
        let (_, params, input_type, range) = cases().into_iter().find(|c| c.0 == name).unwrap();
        let m = legalized(&params, input_type, &[2, 3, 4, 16], range, "integer");
        m.graph
            .node_ids()
            .filter_map(|id| m.graph.op(id))
            .map(|op| op.op_type().to_string())
            .collect()
    };
    let unsigned = ops("uint8 output, zero point 128");
    assert!(
        unsigned.iter().any(|o| o == "Div") && !unsigned.iter().any(|o| o == "Sub"),
        "{unsigned:?}"
    );
    let signed = ops("ties, m = 1");
    assert!(
        signed.iter().any(|o| o == "Sub"),
        "int8 keeps the bias and the Sub: {signed:?}"
    );
}

#[test]
fn range_check_refuses_overflow_and_names_the_node() {
    // q in [0, 255] after a clamped quantization, times 2^24: beyond int32.
    let b = ModelBuilder::new(18)
        .input("x", F32, &[D::N(4)])
        .init("lo", Array::scalar(0f32))
        .init("hi", Array::scalar(255f32))
        .init("big", Array::scalar(1i32 << 24))
        .init("two", Array::scalar(2i32))
        .node("Clip", &["x", "lo", "hi"], &["c"])
        .node_with("Cast", &["c"], &["q"], vec![attr::int("to", 6)])
        .node("Mul", &["q", "two"], &["fine"])
        .node("Mul", &["fine", "big"], &["overflow"])
        .output("overflow", DataType::Int32, &[D::N(4)]);
    let e = intone::lower::range::verify(&b.model(), 4096, Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node 'Mul_3' (Mul): the i32 result can reach [0, 8556380160]"),
        "{e}"
    );

    // A divisor that can be −1 (or 0).
    let b = ModelBuilder::new(18)
        .input("x", F32, &[D::N(4)])
        .init("lo", Array::scalar(-1f32))
        .init("hi", Array::scalar(3f32))
        .init("num", Array::scalar(100i32))
        .node("Clip", &["x", "lo", "hi"], &["c"])
        .node_with("Cast", &["c"], &["d"], vec![attr::int("to", 6)])
        .node("Div", &["num", "d"], &["y"])
        .output("y", DataType::Int32, &[D::N(4)]);
    let e = intone::lower::range::verify(&b.model(), 4096, Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node 'Div_2' (Div): the divisor can be in [-1, 3], which includes 0 or −1"),
        "{e}"
    );
}

/// Deterministic values in (−1, 1).
fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

#[test]
fn blocked_cholesky_factors_and_solves_across_block_edges() {
    use intone::quant::least_squares::{cholesky_in_place, solve_cholesky};
    use ndarray::Array2;
    // 150 rows cross two 64-column blocks and a partial one.
    let n = 150;
    let a = Array2::from_shape_vec((n + 20, n), pseudo_random((n + 20) * n, 1)).unwrap();
    let m = a.t().dot(&a) + Array2::<f64>::eye(n);
    let mut l = m.clone();
    cholesky_in_place(&mut l).unwrap();
    let lower = Array2::from_shape_fn((n, n), |(i, j)| if j <= i { l[[i, j]] } else { 0.0 });
    let err = (&lower.dot(&lower.t()) - &m)
        .iter()
        .fold(0f64, |e, v| e.max(v.abs()));
    assert!(err < 1e-9, "LLᵀ − M: {err:e}");
    let x = Array2::from_shape_vec((n, 3), pseudo_random(n * 3, 2)).unwrap();
    let mut b = m.dot(&x);
    solve_cholesky(&l, &mut b);
    let err = (&b - &x).iter().fold(0f64, |e, v| e.max(v.abs()));
    assert!(err < 1e-9, "solution: {err:e}");
    // Not positive definite: an error, not a NaN.
    let mut bad = -Array2::<f64>::eye(4);
    assert!(cholesky_in_place(&mut bad).is_err());
}

#[test]
fn normal_equations_recover_a_layer_that_fits_exactly() {
    use intone::quant::least_squares::NormalEquations;
    use ndarray::Array2;
    // New inputs equal to the old: the old layer itself is the exact fit, whatever the ridge.
    let (n, d, m) = (300, 12, 5);
    let x = Array2::from_shape_vec((n, d), pseudo_random(n * d, 3))
        .unwrap()
        .mapv(|v| v as f32);
    let w = Array2::from_shape_vec((d, m), pseudo_random(d * m, 4)).unwrap();
    let b = pseudo_random(m, 5);
    let mut eq = NormalEquations::new(d, d);
    // In two parts (streaming) of uneven size.
    eq.add(
        x.slice(ndarray::s![..100, ..]),
        x.slice(ndarray::s![..100, ..]),
    );
    eq.add(
        x.slice(ndarray::s![100.., ..]),
        x.slice(ndarray::s![100.., ..]),
    );
    assert_eq!(eq.rows, n);
    for ridge in [1e-6, 1.0] {
        let (w2, b2) = eq.solve(w.view(), &b, ridge).unwrap();
        let err = (&w2 - &w).iter().fold(0f64, |e, v| e.max(v.abs()));
        assert!(err < 1e-4, "ridge {ridge}: weight off by {err:e}");
        for (p, q) in b.iter().zip(&b2) {
            assert!((p - q).abs() < 1e-4, "ridge {ridge}: bias {p} vs {q}");
        }
    }
    // Old inputs twice the new: the fit doubles the weight (a small ridge barely pulls back).
    let mut eq = NormalEquations::new(d, d);
    eq.add(x.view(), x.mapv(|v| 2.0 * v).view());
    let (w2, _) = eq.solve(w.view(), &b, 1e-9).unwrap();
    let err = (&w2 - &(2.0 * &w)).iter().fold(0f64, |e, v| e.max(v.abs()));
    assert!(err < 1e-4, "doubled weight off by {err:e}");
}
