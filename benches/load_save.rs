//! Load + save throughput against plainly reading and writing the same bytes, and the peak
//! memory of one load + save, on the shared L3 encoder (69 MB) and a generated ~300 MB model.
//!
//! Run: `cargo bench --bench load_save` (prints a table; nothing is asserted).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use intone::ir::{Array, Tensor};
use intone::schema::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};

const RUNS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        // One load + save, then report this process's peak resident memory.
        let model = intone::onnx::load(Path::new(&args[2])).unwrap();
        intone::onnx::save(&model, Path::new(&args[3])).unwrap();
        println!("{}", peak_rss_kib());
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work).unwrap();
    let large = work.join("generated_300mb.onnx");
    if !large.exists() {
        generate(&large, 72);
    }
    let models = [
        root.join("../shared/models/paraphrase_minilm_l3_v2_opset17.onnx"),
        large,
    ];

    println!(
        "| model | size MB | read+write MB/s | load MB/s | save MB/s | load+save MB/s | load+save / read+write | peak RSS MB | peak / size |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for model in &models {
        let out = work.join("out.onnx");
        let size = std::fs::metadata(model).unwrap().len() as f64 / 1e6;
        let copy = median(|| {
            let t = Instant::now();
            let bytes = std::fs::read(model).unwrap();
            std::fs::write(&out, &bytes).unwrap();
            t.elapsed()
        });
        let mut load_times = Vec::new();
        let mut save_times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let m = intone::onnx::load(model).unwrap();
            load_times.push(t.elapsed());
            let t = Instant::now();
            intone::onnx::save(&m, &out).unwrap();
            save_times.push(t.elapsed());
        }
        let (load, save) = (mid(load_times), mid(save_times));
        let rate = |d: Duration| size / d.as_secs_f64();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--child")
            .arg(model)
            .arg(&out)
            .output()
            .unwrap();
        let peak_mb = String::from_utf8_lossy(&child.stdout)
            .trim()
            .parse::<f64>()
            .unwrap_or(f64::NAN)
            * 1024.0
            / 1e6;
        println!(
            "| {} | {size:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {peak_mb:.0} | {:.2} |",
            model.file_name().unwrap().to_string_lossy(),
            rate(copy),
            rate(load),
            rate(save),
            rate(load + save),
            copy.as_secs_f64() / (load + save).as_secs_f64(),
            peak_mb / size
        );
        let _ = std::fs::remove_file(&out);
    }
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    mid((0..RUNS).map(|_| f()).collect())
}

fn mid(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// VmHWM of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A chain of `layers` 1024×1024 f32 MatMuls (4 MiB of weights each).
fn generate(path: &Path, layers: usize) {
    let n = 1024;
    let mut graph = GraphProto {
        name: Some("generated".into()),
        input: vec![ValueInfoProto {
            name: Some("x".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut prev = "x".to_string();
    for i in 0..layers {
        let values: Vec<f32> = (0..n * n)
            .map(|j| ((i * 7919 + j) % 1000) as f32 * 1e-3)
            .collect();
        let w = Tensor::from_array(format!("w{i}"), &Array::from_vec(&[n, n], values).unwrap());
        graph.initializer.push(w.into_proto());
        let out = format!("h{i}");
        graph.node.push(NodeProto {
            op_type: Some("MatMul".into()),
            name: Some(format!("matmul{i}")),
            input: vec![prev.clone(), format!("w{i}")],
            output: vec![out.clone()],
            ..Default::default()
        });
        prev = out;
    }
    graph.output.push(ValueInfoProto {
        name: Some(prev),
        ..Default::default()
    });
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    intone::onnx::write_proto(model, path).unwrap();
}
