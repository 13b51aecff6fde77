//! `expand-resize` and `expand-conv-transpose`: snapshots of small graphs before and after, the
//! counts, and the rewritten model run in tract against the original run in onnxruntime (the
//! reference for Resize's coordinate modes) and in tract.

use intone::ir::{Array, Model, attr};
use intone::onnx::text::model_to_text;
use intone::runner::Runner;

use crate::build::*;
use crate::lowerings::data;
use crate::passes::run;

/// Runs `spec` and returns the rewritten model and the snapshot body (before, after, report).
fn expand(model: Model, spec: &str) -> (Model, String, (usize, usize, usize)) {
    let before = model_to_text(&model).unwrap();
    let (after, reports) = run(model, spec, &Default::default());
    let r = reports.last().unwrap();
    let mut text = format!(
        "--- before\n{before}--- after {spec}\n{}--- matched {}, rewritten {}, skipped {}\n",
        model_to_text(&after).unwrap(),
        r.matched,
        r.rewritten,
        r.skipped
    );
    for remark in &r.remarks {
        text.push_str(&format!("  {}: {}\n", remark.node, remark.message));
    }
    (after, text, (r.matched, r.rewritten, r.skipped))
}

fn count(model: &Model, op_type: &str) -> usize {
    model
        .graph
        .node_ids()
        .filter(|&id| model.graph.op(id).is_some_and(|op| op.is(op_type)))
        .count()
}

/// The original model's outputs in onnxruntime (and in tract when `tract_too`: tract does not
/// run Upsample, and panics on some ConvTranspose paddings) and the rewritten one's in tract
/// agree within `tol` (relative to the largest output).
fn assert_same(original: &ModelBuilder, rewritten: &Model, x: &Array, tol: f64, tract_too: bool) {
    let dir = crate::tempdir();
    let path = original.write(dir.path(), "original.onnx");
    let x_path = dir.path().join("x.npy");
    intone::npy::write(&x_path, x).unwrap();
    let out = dir.path().join("ort");
    let spec = format!("x={}", x_path.display());
    let names = crate::oracle(
        "run_ort.py",
        &[path.to_str().unwrap(), out.to_str().unwrap(), &spec],
        "",
    );
    let ort = intone::npy::read(&out.join(format!("{}.npy", names.trim()))).unwrap();
    let run = |m: &Model| {
        Runner::new(m)
            .unwrap()
            .run(std::slice::from_ref(x), None)
            .unwrap()
    };
    let new = &run(rewritten)[0].1;
    let mut references = vec![("onnxruntime", ort)];
    if tract_too {
        references.push(("tract", run(&original.model())[0].1.clone()));
    }
    for (name, reference) in &references {
        assert_eq!(reference.shape(), new.shape(), "output shape in {name}");
        let worst = crate::lowerings::relative_to_peak(reference, new);
        assert!(
            worst <= tol,
            "largest difference from the original in {name}: {worst} of its peak"
        );
    }
}

fn resize(
    opset: i64,
    x: &[D],
    out: &[D],
    scales: Option<&[f32]>,
    sizes: Option<&[i64]>,
    attrs: Vec<intone::schema::AttributeProto>,
) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset).input("x", F32, x);
    let mut inputs = vec!["x", ""];
    match scales {
        Some(s) => {
            b = b.init("scales", Array::from_vec(&[s.len()], s.to_vec()).unwrap());
            inputs.push("scales");
        }
        None => inputs.push(""),
    }
    if let Some(s) = sizes {
        b = b.init("sizes", vec_i64(s));
        inputs.push("sizes");
    }
    b.node_with("Resize", &inputs, &["y"], attrs)
        .output("y", F32, out)
}

fn modes(mode: &str, coordinates: &str, nearest: &str) -> Vec<intone::schema::AttributeProto> {
    vec![
        attr::string("mode", mode),
        attr::string("coordinate_transformation_mode", coordinates),
        attr::string("nearest_mode", nearest),
    ]
}

#[test]
fn resize_nearest_becomes_one_gather_per_resized_axis() {
    // nn.Upsample(scale_factor=2): the batch stays symbolic.
    let b = resize(
        18,
        &[D::S("n"), D::N(2), D::N(3), D::N(4)],
        &[D::S("n"), D::N(2), D::N(6), D::N(8)],
        Some(&[1.0, 1.0, 2.0, 2.0]),
        None,
        modes("nearest", "asymmetric", "floor"),
    );
    let (after, text, counts) = expand(b.model(), "expand-resize");
    insta::assert_snapshot!(text);
    assert_eq!(counts, (1, 1, 0));
    assert_eq!((count(&after, "Resize"), count(&after, "Gather")), (0, 2));
    assert_same(&b, &after, &data(&[2, 2, 3, 4], 1, 3.0), 0.0, true);
}

#[test]
fn resize_nearest_rounds_halves_as_the_float_model_does() {
    // 4 → 6 and 5 → 3 with half_pixel coordinates: sources at exact halves and below zero.
    for round in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"] {
        for coordinates in [
            "half_pixel",
            "asymmetric",
            "align_corners",
            "pytorch_half_pixel",
        ] {
            let b = resize(
                18,
                &[D::N(1), D::N(1), D::N(4), D::N(5)],
                &[D::N(1), D::N(1), D::N(6), D::N(3)],
                None,
                Some(&[1, 1, 6, 3]),
                modes("nearest", coordinates, round),
            );
            let (after, _, counts) = expand(b.model(), "expand-resize");
            assert_eq!(counts, (1, 1, 0), "{coordinates} {round}");
            let x = Array::from_vec(&[1, 1, 4, 5], (0..20).map(|v| v as f32).collect()).unwrap();
            assert_same(&b, &after, &x, 0.0, true);
        }
    }
}

#[test]
fn resize_linear_becomes_matmuls_by_interpolation_matrices() {
    // F.interpolate(mode='bilinear', align_corners=False) to a size that is not a multiple.
    let b = resize(
        18,
        &[D::N(2), D::N(2), D::N(3), D::N(4)],
        &[D::N(2), D::N(2), D::N(7), D::N(8)],
        None,
        Some(&[2, 2, 7, 8]),
        modes("linear", "half_pixel", "floor"),
    );
    let (after, text, counts) = expand(b.model(), "expand-resize");
    insta::assert_snapshot!(text);
    assert_eq!(counts, (1, 1, 0));
    assert_eq!((count(&after, "Resize"), count(&after, "MatMul")), (0, 2));
    assert_same(&b, &after, &data(&[2, 2, 3, 4], 2, 3.0), 1e-6, true);
    for coordinates in ["align_corners", "asymmetric", "pytorch_half_pixel"] {
        let b = resize(
            18,
            &[D::N(1), D::N(2), D::N(5), D::N(4)],
            &[D::N(1), D::N(2), D::N(3), D::N(9)],
            Some(&[1.0, 1.0, 0.6, 2.25]),
            None,
            modes("linear", coordinates, "floor"),
        );
        let (after, _, counts) = expand(b.model(), "expand-resize");
        assert_eq!(counts, (1, 1, 0), "{coordinates}");
        assert_same(&b, &after, &data(&[1, 2, 5, 4], 3, 2.0), 1e-6, true);
    }
}

#[test]
fn resize_that_is_cubic_or_of_unknown_size_stays() {
    let cubic = resize(
        18,
        &[D::N(1), D::N(1), D::N(4), D::N(4)],
        &[D::N(1), D::N(1), D::N(8), D::N(8)],
        Some(&[1.0, 1.0, 2.0, 2.0]),
        None,
        modes("cubic", "half_pixel", "floor"),
    );
    let (after, text, counts) = expand(cubic.model(), "expand-resize");
    insta::assert_snapshot!(text);
    assert_eq!(counts, (1, 0, 1));
    assert_eq!(count(&after, "Resize"), 1);
    let dynamic = resize(
        18,
        &[D::N(1), D::N(1), D::S("h"), D::N(4)],
        &[D::N(1), D::N(1), D::S("h2"), D::N(8)],
        Some(&[1.0, 1.0, 2.0, 2.0]),
        None,
        modes("nearest", "asymmetric", "floor"),
    );
    let (after, text, counts) = expand(dynamic.model(), "expand-resize");
    assert_eq!(counts, (1, 0, 1));
    assert!(text.contains("pin it with --input-shape"), "{text}");
    assert_eq!(count(&after, "Resize"), 1);
}

#[test]
fn upsample_of_opset_9_becomes_an_asymmetric_resize() {
    // tf2onnx's and old PyTorch exports' nearest up-sampling.
    let b = ModelBuilder::new(9)
        .input("x", F32, &[D::N(1), D::N(2), D::N(3), D::N(3)])
        .init(
            "scales",
            Array::from_vec(&[4], vec![1f32, 1.0, 2.0, 3.0]).unwrap(),
        )
        .node_with(
            "Upsample",
            &["x", "scales"],
            &["y"],
            vec![attr::string("mode", "nearest")],
        )
        .output("y", F32, &[D::N(1), D::N(2), D::N(6), D::N(9)]);
    let (after, text, counts) = expand(b.model(), "upgrade-opset(to=18),expand-resize");
    insta::assert_snapshot!(text);
    assert_eq!(counts, (1, 1, 0));
    assert_eq!((count(&after, "Upsample"), count(&after, "Gather")), (0, 2));
    assert_same(&b, &after, &data(&[1, 2, 3, 3], 4, 1.0), 0.0, false);
}

fn conv_transpose(
    c_in: usize,
    c_out_per_group: usize,
    kernel: usize,
    x: &[D],
    out: &[D],
    attrs: Vec<intone::schema::AttributeProto>,
) -> ModelBuilder {
    let groups = attrs
        .iter()
        .find(|a| a.name() == "group")
        .map_or(1, |a| a.i() as usize);
    ModelBuilder::new(17)
        .input("x", F32, x)
        .init("w", data(&[c_in, c_out_per_group, kernel, kernel], 7, 0.5))
        .init("b", data(&[c_out_per_group * groups], 8, 0.5))
        .node_with("ConvTranspose", &["x", "w", "b"], &["y"], attrs)
        .output("y", F32, out)
}

#[test]
fn conv_transpose_with_kernel_equal_to_stride_becomes_a_pixel_shuffle() {
    // The U-Net up-sampling ConvTranspose2d(k=2, s=2).
    let b = conv_transpose(
        3,
        2,
        2,
        &[D::S("n"), D::N(3), D::N(4), D::N(5)],
        &[D::S("n"), D::N(2), D::N(8), D::N(10)],
        vec![attr::ints("strides", &[2, 2])],
    );
    let (after, text, counts) = expand(b.model(), "expand-conv-transpose");
    insta::assert_snapshot!(text);
    assert_eq!(counts, (1, 1, 0));
    assert_eq!(
        (count(&after, "ConvTranspose"), count(&after, "Conv")),
        (0, 1)
    );
    assert_eq!(count(&after, "Pad"), 0, "no zero insertion");
    assert_same(&b, &after, &data(&[2, 3, 4, 5], 9, 1.0), 1e-5, true);
}

#[test]
fn conv_transpose_with_overlap_becomes_a_conv_over_zero_inserted_input() {
    let cases: Vec<(usize, Vec<intone::schema::AttributeProto>, [i64; 2])> = vec![
        // k3 s2 p1 with output_padding 1 (the usual exact 2x), two groups.
        (
            3,
            vec![
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::ints("output_padding", &[1, 1]),
                attr::int("group", 2),
            ],
            [8, 10],
        ),
        // k4 s2 p1, dilation 1; and k3 s1 with pads larger than the kernel's reach (a crop).
        (
            4,
            vec![
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
            [8, 10],
        ),
        (
            3,
            vec![
                attr::ints("pads", &[3, 2, 2, 2]),
                attr::ints("dilations", &[1, 1]),
            ],
            [1, 3],
        ),
        // output_shape instead of pads, dilation 2.
        (
            3,
            vec![
                attr::ints("strides", &[3, 2]),
                attr::ints("dilations", &[2, 1]),
                attr::ints("output_shape", &[12, 10]),
            ],
            [12, 10],
        ),
    ];
    for (i, (kernel, attrs, [h, w])) in cases.into_iter().enumerate() {
        let groups = if i == 0 { 2 } else { 1 };
        let b = conv_transpose(
            4,
            3,
            kernel,
            &[D::N(1), D::N(4), D::N(4), D::N(5)],
            &[D::N(1), D::N(3 * groups), D::N(h), D::N(w)],
            attrs,
        );
        let (after, text, counts) = expand(b.model(), "expand-conv-transpose");
        if i == 0 {
            insta::assert_snapshot!(text);
        }
        assert_eq!(counts, (1, 1, 0), "case {i}");
        assert_eq!(count(&after, "ConvTranspose"), 0);
        // tract 0.23.9 panics (a subtraction overflow) on the output_shape case.
        let tract_too = i != 3;
        assert_same(
            &b,
            &after,
            &data(&[1, 4, 4, 5], 10 + i as u64, 1.0),
            1e-5,
            tract_too,
        );
    }
}

#[test]
fn conv_transpose_of_unknown_size_or_computed_weight_stays() {
    let dynamic = conv_transpose(
        2,
        2,
        2,
        &[D::N(1), D::N(2), D::S("h"), D::N(4)],
        &[D::N(1), D::N(2), D::S("h2"), D::N(8)],
        vec![attr::ints("strides", &[2, 2])],
    );
    let (after, text, counts) = expand(dynamic.model(), "expand-conv-transpose");
    insta::assert_snapshot!(text);
    assert_eq!(counts, (1, 0, 1));
    assert_eq!(count(&after, "ConvTranspose"), 1);
    let computed = ModelBuilder::new(17)
        .input("x", F32, &[D::N(1), D::N(2), D::N(3), D::N(3)])
        .input("w", F32, &[D::N(2), D::N(2), D::N(2), D::N(2)])
        .node_with(
            "ConvTranspose",
            &["x", "w"],
            &["y"],
            vec![attr::ints("strides", &[2, 2])],
        )
        .output("y", F32, &[D::N(1), D::N(2), D::N(6), D::N(6)]);
    let (_, text, counts) = expand(computed.model(), "expand-conv-transpose");
    assert_eq!(counts, (1, 0, 1));
    assert!(text.contains("not a constant"), "{text}");
}
