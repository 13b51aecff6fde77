//! Integer matmuls exact on every CPU: the saturation rule at its edges, the range proof that
//! enforces it, every operand form the compiler emits against a reference in tract and in
//! onnxruntime on this CPU and on an emulated AVX2-only one (where the u8×s8 kernel
//! saturates), and compiled models whose integer values agree bit for bit on both.

use std::collections::HashMap;

use intone::ir::{Array, DataType, DataTypeInfo, Model};
use intone::ops::matmul_kernels::{MatmulOperands, Operands, saturation};
use intone::runner::Runner;

use crate::build::{D, ModelBuilder};
use crate::linear::{compile, digits, run_ort_on};
use crate::{Cpu, fixture, native_cpu_has_vnni, tempdir};

fn u8s8(a: (i128, i128), b: (i128, i128), inner: i128) -> Operands {
    Operands {
        a_type: DataType::Uint8,
        a,
        b_type: DataType::Int8,
        b,
        inner,
    }
}

#[test]
fn saturation_rule_holds_exactly_at_the_int16_limits() {
    let portable = MatmulOperands::Portable;
    // 2·255·64 = 32640 ≤ 32767; 2·255·65 = 33150 is not.
    assert_eq!(saturation(&u8s8((0, 255), (-64, 64), 768), portable), None);
    assert!(saturation(&u8s8((0, 255), (-64, 65), 768), portable).is_some());
    assert!(saturation(&u8s8((0, 255), (-65, 64), 768), portable).is_some());
    // 2·128·(−128) = −32768 is representable, 2·128·128 is not.
    assert_eq!(saturation(&u8s8((0, 128), (-128, 127), 8), portable), None);
    assert!(saturation(&u8s8((0, 129), (-128, 127), 8), portable).is_some());
    // The full grid is refused for any CPU, allowed where VNNI is promised.
    let why = saturation(&u8s8((0, 255), (-127, 127), 768), portable).unwrap();
    assert!(why.contains("VPMADDUBSW") && why.contains("±64"), "{why}");
    assert_eq!(
        saturation(&u8s8((0, 255), (-128, 127), 768), MatmulOperands::Vnni),
        None
    );
    // u8 × u8 never saturates: its kernels widen to int16 first.
    let u8u8 = Operands {
        b_type: DataType::Uint8,
        b: (0, 255),
        ..u8s8((0, 255), (0, 0), 768)
    };
    assert_eq!(saturation(&u8u8, portable), None);
    // Every form: the raw products must sum in int32. 33026 · 255 · 255 > 2^31 − 1.
    let long = Operands {
        inner: 33026,
        ..u8u8
    };
    assert!(
        saturation(&long, MatmulOperands::Vnni)
            .unwrap()
            .contains("int32 accumulator")
    );
    assert_eq!(
        saturation(
            &Operands {
                inner: 33025,
                ..u8u8
            },
            MatmulOperands::Vnni
        ),
        None
    );
}

/// `y = MatMulInteger(a, W, 128)` or `ConvInteger` with a uint8 graph input and a constant int8
/// weight holding `w`.
fn weight_op(conv: bool, w: i8) -> Model {
    let (a_dims, w_shape) = if conv {
        (vec![D::N(1), D::N(4), D::N(3), D::N(3)], vec![2, 4, 3, 3])
    } else {
        (vec![D::N(2), D::N(8)], vec![8, 2])
    };
    let n: usize = w_shape.iter().product();
    let op = if conv { "ConvInteger" } else { "MatMulInteger" };
    ModelBuilder::new(18)
        .input("a", DataType::Uint8, &a_dims)
        .init("w", Array::from_vec(&w_shape, vec![w; n]).unwrap())
        .init("zp", Array::scalar(128u8))
        .node(op, &["a", "w", "zp"], &["y"])
        .output("y", DataType::Int32, &[])
        .model()
}

#[test]
fn range_proof_refuses_saturating_operands_and_names_the_node() {
    for conv in [false, true] {
        let verify = |w: i8, policy| intone::lower::range::verify(&weight_op(conv, w), 64, policy);
        let e = verify(127, MatmulOperands::Portable)
            .unwrap_err()
            .to_string();
        let name = if conv {
            "node 'ConvInteger_0' (ConvInteger)"
        } else {
            "node 'MatMulInteger_0' (MatMulInteger)"
        };
        assert!(e.contains(name) && e.contains("saturates"), "{e}");
        assert!(verify(127, MatmulOperands::U8U8).is_err());
        assert!(verify(127, MatmulOperands::Vnni).is_ok());
        assert!(verify(64, MatmulOperands::Portable).is_ok());
        assert!(verify(-64, MatmulOperands::Portable).is_ok());
        assert!(verify(-65, MatmulOperands::Portable).is_err());
    }
}

/// One operand form: how B is stored (signed `q` in ±magnitude, plus the zero point), and
/// whether it is a constant weight or a graph input (an activation).
struct Form {
    name: String,
    dtype: DataType,
    zero_point: i64,
    lo: i64,
    hi: i64,
    constant: bool,
    /// Exact on a CPU without VNNI.
    portable: bool,
}

/// Every form the compiler emits, per policy (deduplicated).
fn emitted_forms() -> Vec<Form> {
    let mut forms: Vec<Form> = Vec::new();
    for policy in MatmulOperands::ALL {
        for (constant, s) in [(true, policy.weights()), (false, policy.activations())] {
            // Activations keep int8's −128 on the full grid; weights are symmetric.
            let lo = if !constant && s.magnitude == 127 {
                -128
            } else {
                -s.magnitude
            };
            let name = format!(
                "{}_{}{}_zp{}",
                if constant { "weights" } else { "activations" },
                s.dtype.short_name(),
                s.magnitude,
                s.zero_point
            );
            if forms.iter().any(|f| f.name == name) {
                continue;
            }
            forms.push(Form {
                name,
                dtype: s.dtype,
                zero_point: s.zero_point,
                lo,
                hi: s.magnitude,
                constant,
                portable: policy.exact_without_vnni(),
            });
        }
    }
    forms
}

/// Extreme logical values for a [rows, cols] operand in [lo, hi]: whole lines at each limit,
/// alternating and paired limits (adjacent pairs are what the kernel adds in int16), then a
/// deterministic spread. `by_row` chooses whether the patterns run along rows or columns.
fn extreme(rows: usize, cols: usize, lo: i64, hi: i64, by_row: bool) -> Vec<i64> {
    let span = (hi - lo + 1) as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = vec![0i64; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let (line, k) = if by_row { (r, c) } else { (c, r) };
            out[r * cols + c] = match line {
                0 => hi,
                1 => lo,
                2 => [hi, lo][k % 2],
                3 => [hi, hi, lo, lo][k % 4],
                4 => 0,
                _ => {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    lo + ((state >> 33) % span) as i64
                }
            };
        }
    }
    out
}

/// Where onnxruntime must compute a form exactly.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Exact {
    Always,
    /// Only on CPUs with VNNI (the u8 × s8 kernel saturates elsewhere).
    WithVnni,
}

impl From<bool> for Exact {
    fn from(portable: bool) -> Exact {
        if portable {
            Exact::Always
        } else {
            Exact::WithVnni
        }
    }
}

fn stored(values: &[i64], zero_point: i64, dtype: DataType, shape: &[usize]) -> Array {
    let v = values.iter().map(|&q| q + zero_point);
    match dtype {
        DataType::Uint8 => Array::from_vec(shape, v.map(|x| x as u8).collect()).unwrap(),
        _ => Array::from_vec(shape, v.map(|x| x as i8).collect()).unwrap(),
    }
}

#[test]
fn every_emitted_operand_form_equals_the_reference_on_avx2_and_vnni_cpus() {
    // A: uint8 with zero point 128 over its whole range; K odd so the kernels' tails are hit.
    let (m, k, n) = (8usize, 257usize, 8usize);
    let a_q = extreme(m, k, -128, 127, true);
    let a = stored(&a_q, 128, DataType::Uint8, &[m, k]);
    // Convolution: [1, C, 5, 5] with a 3×3 kernel: C·9 products per output.
    let (c, hw, oc) = (32usize, 5usize, 6usize);
    let x_q = extreme(c, hw * hw, -128, 127, true);
    let x = stored(&x_q, 128, DataType::Uint8, &[1, c, hw, hw]);

    let forms = emitted_forms();
    let mut b = ModelBuilder::new(18)
        .input("a", DataType::Uint8, &[D::N(m as i64), D::N(k as i64)])
        .input(
            "x",
            DataType::Uint8,
            &[D::N(1), D::N(c as i64), D::N(hw as i64), D::N(hw as i64)],
        )
        .init("a_zp", Array::scalar(128u8));
    let mut feeds: Vec<(String, Array)> = vec![("a".into(), a), ("x".into(), x)];
    let mut expected: Vec<(String, Vec<i64>, Exact)> = Vec::new();
    for f in &forms {
        let b_q = extreme(k, n, f.lo, f.hi, false);
        let bname = format!("b_{}", f.name);
        let zp = format!("zp_{}", f.name);
        let b_arr = stored(&b_q, f.zero_point, f.dtype, &[k, n]);
        b = b.init(&zp, stored(&[0], f.zero_point, f.dtype, &[]));
        if f.constant {
            b = b.init(&bname, b_arr);
        } else {
            b = b.input(&bname, f.dtype, &[D::N(k as i64), D::N(n as i64)]);
            feeds.push((bname.clone(), b_arr));
        }
        let y = format!("matmul_{}", f.name);
        b = b
            .node("MatMulInteger", &["a", &bname, "a_zp", &zp], &[&y])
            .output(&y, DataType::Int32, &[]);
        let mut reference = vec![0i64; m * n];
        for i in 0..m {
            for j in 0..n {
                reference[i * n + j] = (0..k).map(|t| a_q[i * k + t] * b_q[t * n + j]).sum();
            }
        }
        expected.push((y, reference, Exact::from(f.portable)));

        if f.constant {
            // The same weight form in a convolution: output channel o, input channel ci.
            let w_q = extreme(oc, c * 9, f.lo, f.hi, true);
            let wname = format!("w_{}", f.name);
            b = b.init(&wname, stored(&w_q, f.zero_point, f.dtype, &[oc, c, 3, 3]));
            let y = format!("conv_{}", f.name);
            b = b
                .node("ConvInteger", &["x", &wname, "a_zp", &zp], &[&y])
                .output(&y, DataType::Int32, &[]);
            let out = hw - 2;
            let mut reference = vec![0i64; oc * out * out];
            for o in 0..oc {
                for (p, r) in reference[o * out * out..(o + 1) * out * out]
                    .iter_mut()
                    .enumerate()
                {
                    let (py, px) = (p / out, p % out);
                    for ci in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                *r += x_q[ci * hw * hw + (py + ky) * hw + px + kx]
                                    * w_q[o * c * 9 + ci * 9 + ky * 3 + kx];
                            }
                        }
                    }
                }
            }
            // onnxruntime 1.32 computes ConvInteger as W × im2col(X), an s8 × u8 GEMM whose
            // kernels widen to int16 first: exact even on the full grid. The compiler's rule
            // does not rely on that operand order (it is the runtime's choice to make).
            expected.push((y, reference, Exact::Always));
        }
    }
    let dir = tempdir();
    let path = b.write(dir.path(), "forms.onnx");
    let model = intone::onnx::load(&path).unwrap();
    let inputs: Vec<Array> = feeds.iter().map(|(_, a)| a.clone()).collect();
    let tract = Runner::new(&model).unwrap().run(&inputs, None).unwrap();
    let named: Vec<(&str, &Array)> = feeds.iter().map(|(n, a)| (n.as_str(), a)).collect();
    let engines: Vec<(String, Vec<(String, Array)>)> = std::iter::once(("tract".into(), tract))
        .chain(Cpu::all().into_iter().map(|cpu| {
            (
                format!("onnxruntime ({cpu:?} CPU)"),
                run_ort_on(cpu, &path, &named, dir.path()),
            )
        }))
        .collect();
    let mut saturated_on_avx2 = 0;
    for (engine, outputs) in &engines {
        for ((name, reference, exactness), (out_name, got)) in expected.iter().zip(outputs) {
            assert_eq!(name, out_name);
            let got: Vec<i64> = got.to_f64_vec().iter().map(|&v| v as i64).collect();
            let exact = &got == reference;
            // The full grid is exact wherever the kernel does not saturate: tract, and
            // onnxruntime on a VNNI CPU; an AVX2-only CPU must get it wrong (which shows the
            // emulated oracle would catch saturation coming back).
            let must_be_exact = *exactness == Exact::Always
                || engine == "tract"
                || (engine.contains("Native") && native_cpu_has_vnni());
            if must_be_exact {
                assert!(exact, "{engine}: {name} differs from the reference");
            } else if engine.contains("Avx2") {
                assert!(!exact, "{engine}: {name} unexpectedly exact");
                saturated_on_avx2 += 1;
            }
        }
    }
    if Cpu::all().contains(&Cpu::Avx2) {
        assert_eq!(saturated_on_avx2, 2, "full-grid weights and activations");
    }
}

/// Rows of `y` (per sample for a convolution) whose input rows agree between two engines must
/// agree too: the check that isolates the integer matmuls of a model with float islands, whose
/// float kernels differ between engines by design. Returns (rows compared, rows in all).
fn compare_matmul_rows(
    conv: bool,
    a: (&Array, &Array),
    y: (&Array, &Array),
    what: &str,
) -> (usize, usize) {
    let rows = if conv {
        a.0.shape()[0]
    } else {
        a.0.len() / a.0.shape().last().copied().unwrap_or(1).max(1)
    };
    let (av, bv) = (a.0.to_f64_vec(), a.1.to_f64_vec());
    let (yv, zv) = (y.0.to_f64_vec(), y.1.to_f64_vec());
    let (a_row, y_row) = (av.len() / rows.max(1), yv.len() / rows.max(1));
    let mut compared = 0;
    for r in 0..rows {
        if av[r * a_row..(r + 1) * a_row] == bv[r * a_row..(r + 1) * a_row] {
            assert_eq!(
                yv[r * y_row..(r + 1) * y_row],
                zv[r * y_row..(r + 1) * y_row],
                "{what}: row {r} differs although its operands agree"
            );
            compared += 1;
        }
    }
    (compared, rows)
}

#[test]
fn digits_linear_integer_matmuls_are_bit_identical_on_avx2_and_vnni_cpus() {
    let (calib, test, _) = digits();
    let test = Array::F32(
        test.as_array::<f32>()
            .unwrap()
            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..32))
            .to_owned(),
    );
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    for (stem, operands) in [
        ("digits_vit_opset13", "portable"),
        ("digits_vit_opset17", "portable"),
        ("digits_vit_opset13", "u8u8"),
    ] {
        let out = compile(
            &fixture(&format!("{stem}.onnx")),
            &dir.path().join(format!("{stem}.{operands}.onnx")),
            &[
                "--pipeline",
                "linear",
                "--matmul-operands",
                operands,
                "--calibrate",
                &format!("pixels={}", calib_path.display()),
            ],
        );
        // Each integer matmul's non-constant operands and result become outputs.
        let mut model = intone::onnx::load(&out).unwrap();
        let g = &model.graph;
        let mut matmuls = Vec::new();
        for id in g.topological_order().unwrap() {
            let Some(op) = g.op(id) else { continue };
            if !(op.is("MatMulInteger") || op.is("ConvInteger")) {
                continue;
            }
            let inputs = g.inputs_of(id);
            let name = |v: Option<intone::ir::ValueId>| {
                v.filter(|&v| g.constant(v).is_none())
                    .map(|v| g.value_name(v).to_string())
            };
            let y = intone::ir::ValueId { node: id, slot: 0 };
            matmuls.push((
                op.is("ConvInteger"),
                name(inputs[0]).unwrap(),
                name(inputs[1]),
                g.value_name(y).to_string(),
            ));
        }
        assert_eq!(
            matmuls.len(),
            30,
            "{stem}: patch conv, 4 × 7 block matmuls (p·v as two terms), head"
        );
        let mut names: Vec<String> = Vec::new();
        for (_, a, b, y) in &matmuls {
            names.extend(
                [Some(a.clone()), b.clone(), Some(y.clone())]
                    .into_iter()
                    .flatten(),
            );
        }
        names.sort();
        names.dedup();
        for n in &names {
            let v = model.graph.find_value(n).unwrap();
            if !model.graph.is_graph_output(v) {
                model.graph.add_output(v);
            }
        }
        let exposed = dir.path().join(format!("{stem}.{operands}.exposed.onnx"));
        intone::onnx::save(&model, &exposed).unwrap();
        let tract: HashMap<String, Array> = Runner::new(&model)
            .unwrap()
            .run(std::slice::from_ref(&test), Some(&names))
            .unwrap()
            .into_iter()
            .collect();
        for cpu in Cpu::all() {
            let ort: HashMap<String, Array> =
                run_ort_on(cpu, &exposed, &[("pixels", &test)], dir.path())
                    .into_iter()
                    .collect();
            let (mut compared, mut total) = (0, 0);
            for (conv, a, b, y) in &matmuls {
                let what = format!("{stem} {operands} {y} (onnxruntime on {cpu:?})");
                if let Some(b) = b {
                    if tract[b] != ort[b] {
                        continue;
                    }
                }
                let (c, t) =
                    compare_matmul_rows(*conv, (&tract[a], &ort[a]), (&tract[y], &ort[y]), &what);
                compared += c;
                total += t;
            }
            // The float LayerNorms differ between engines in the last bit now and then; most
            // rows still reach the matmuls identically.
            assert!(
                compared * 2 > total,
                "{stem} {operands} ({cpu:?}): only {compared} of {total} rows compared"
            );
        }
    }
}

#[test]
fn report_records_the_operand_form_and_a_vnni_model_fails_the_portable_proof() {
    let (calib, _, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let report = dir.path().join("r.json");
    let vnni = compile(
        &fixture("digits_vit_opset13.onnx"),
        &dir.path().join("vnni.onnx"),
        &[
            "--pipeline",
            "linear",
            "--matmul-operands",
            "vnni",
            "--report",
            report.to_str().unwrap(),
            "--calibrate",
            &format!("pixels={}", calib_path.display()),
        ],
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["matmul_operands"], "vnni");
    assert_eq!(r["rounding"], "half-up");
    // Legalizing it again for every CPU refuses, naming the node, and writes nothing.
    let again = dir.path().join("again.onnx");
    let o = crate::intone()
        .args(["compile", vnni.to_str().unwrap(), "-o"])
        .arg(&again)
        .args(["--passes", "legalize"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("(ConvInteger)") || stderr.contains("(MatMulInteger)"),
        "{stderr}"
    );
    assert!(stderr.contains("--matmul-operands portable"), "{stderr}");
    assert!(!again.exists());
}

/// `MatMulInteger(a u8 [2, k], w i8 [k, 3], a₀ = 128)` with every weight `w`.
fn matmul_integer(k: usize, w: i8) -> Model {
    let weights: Vec<i8> = (0..k * 3)
        .map(|i| if i % 2 == 0 { w } else { w.wrapping_neg() })
        .collect();
    ModelBuilder::new(17)
        .input("a", DataType::Uint8, &[D::N(2), D::N(k as i64)])
        .init("w", Array::from_vec(&[k, 3], weights).unwrap())
        .init("a_zero", Array::scalar(128u8))
        .node("MatMulInteger", &["a", "w", "a_zero"], &["y"])
        .output("y", DataType::Int32, &[D::N(2), D::N(3)])
        .model()
}

#[test]
fn the_runner_computes_integer_matmuls_as_f32_only_where_the_bound_proves_them_exact() {
    use intone::runner::exact_f32::{IntegerMatmul, rewrite};
    let pins = |k: i64| std::collections::BTreeMap::from([("a".to_string(), vec![2, k])]);
    // 1024 · 128 · 127 = 16,646,144 ≤ 2^24: exact in f32, whatever the summation order.
    let mut exact = matmul_integer(1024, 127);
    assert_eq!(rewrite(&mut exact, &pins(1024)).unwrap(), 1);
    // 1025 · 128 · 128 > 2^24 (−128 wraps to itself: every weight is −128): stays integer.
    let mut beyond = matmul_integer(1025, -128);
    assert_eq!(rewrite(&mut beyond, &pins(1025)).unwrap(), 0);
    // Extreme operands, both forms: the same int32 results as the reference sum.
    for (k, w) in [(1024usize, 127i8), (1025, -128)] {
        let model = matmul_integer(k, w);
        let a: Vec<u8> = (0..2 * k).map(|i| if i < k { 0 } else { 255 }).collect();
        let a = Array::from_vec(&[2, k], a).unwrap();
        let expected: Vec<i64> = (0..2)
            .flat_map(|row| {
                (0..3).map(move |col| {
                    (0..k)
                        .map(|i| {
                            let x = if row == 0 { -128i64 } else { 127 };
                            let wi = if (i * 3 + col) % 2 == 0 {
                                w
                            } else {
                                w.wrapping_neg()
                            };
                            x * wi as i64
                        })
                        .sum::<i64>()
                })
            })
            .collect();
        for how in [IntegerMatmul::Native, IntegerMatmul::ExactF32] {
            let out = Runner::with_integer_matmul(&model, how)
                .unwrap()
                .run(std::slice::from_ref(&a), None)
                .unwrap();
            assert_eq!(out[0].1.dtype(), DataType::Int32);
            assert_eq!(out[0].1.to_i64_vec().unwrap(), expected, "k = {k}, {how:?}");
        }
    }
}
