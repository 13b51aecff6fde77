//! intone's integration tests: one binary, one module per area.

mod bad_input;
mod build;
mod cli;
mod eval;
mod fusers;
mod integer_only;
mod ir;
mod kernels;
mod linear;
mod passes;
mod pipeline;
mod quant;
mod roundtrip;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// The `intone` binary under test.
pub fn intone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_intone"))
}

/// Python with the independent oracles (onnx, onnxruntime). Created on first use with the
/// project's setup script, so `cargo test` works on a fresh machine; `INTONE_PYTHON` overrides.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(p) = std::env::var("INTONE_PYTHON") {
                return PathBuf::from(p);
            }
            let venv = root().join(".venv-oracle");
            let python = venv.join("bin/python");
            if !python.exists() {
                let script = root().join("../shared/tools/python-env.sh");
                let status = Command::new("bash")
                    .arg(&script)
                    .arg(&venv)
                    .status()
                    .expect("run ../shared/tools/python-env.sh");
                assert!(
                    status.success(),
                    "setting up the Python oracle environment failed"
                );
            }
            python
        })
        .clone()
}

/// The ONNX backend node-test suite of the installed onnx package, materialised once into
/// `target/onnx-node-tests` (the wheel ships the generators, not the files).
pub fn node_tests() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = root().join("target/onnx-node-tests");
        let done = dir.join(".complete");
        if !done.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let out = Command::new(python())
                .arg(root().join("tests/oracle/node_tests.py"))
                .arg(&dir)
                .output()
                .expect("run node_tests.py");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&done, &out.stdout).unwrap();
        }
        dir
    })
    .clone()
}

/// Runs a Python script of `tests/oracle` with arguments and stdin; returns stdout, panicking
/// with stderr on failure.
pub fn oracle(script: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(root().join("tests/oracle").join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// All `.onnx` files under a directory, sorted.
pub fn onnx_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
