//! intone's integration tests: one binary, one module per area.

mod architecture;
mod bad_input;
mod build;
mod cli;
mod data_free;
mod eval;
mod expand;
mod fold_batch_norm;
mod fusers;
mod integer_only;
mod ir;
mod kernels;
mod linear;
mod lowerings;
mod matmul_kernels;
mod passes;
mod pipeline;
mod quant;
mod roundtrip;
mod sensitivity;

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

/// The CPU onnxruntime runs on in a test.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Cpu {
    /// This machine's CPU.
    Native,
    /// An emulated AVX2-only x86-64 CPU (qemu `-cpu Haswell-v4`: no AVX-512, no VNNI), on which
    /// onnxruntime picks its saturating u8×s8 kernel whatever this machine has.
    Avx2,
}

impl Cpu {
    /// The CPUs the exactness tests use: both wherever x86-64 can be emulated.
    pub fn all() -> Vec<Cpu> {
        if cfg!(target_arch = "x86_64") {
            vec![Cpu::Native, Cpu::Avx2]
        } else {
            vec![Cpu::Native]
        }
    }
}

/// qemu's user-mode x86-64 emulator, installed on first use by `tests/oracle/qemu-env.sh`.
fn qemu() -> PathBuf {
    static QEMU: OnceLock<PathBuf> = OnceLock::new();
    QEMU.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tests/oracle/qemu-env.sh"))
            .output()
            .expect("run tests/oracle/qemu-env.sh");
        assert!(
            out.status.success(),
            "setting up qemu failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// True when this machine's CPU has VNNI (onnxruntime's u8×s8 kernel does not saturate here).
pub fn native_cpu_has_vnni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.contains("avx512_vnni") || c.contains("avx_vnni"))
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
    oracle_on(Cpu::Native, script, args, stdin)
}

/// [`oracle`] on a chosen CPU.
pub fn oracle_on(cpu: Cpu, script: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut command = match cpu {
        Cpu::Native => Command::new(python()),
        Cpu::Avx2 => {
            let mut c = Command::new(qemu());
            c.args(["-cpu", "Haswell-v4"]).arg(python());
            c
        }
    };
    let mut child = command
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
