//! Shared by the test binaries: one GPU context per binary, and the opt-out.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use rnn_gpu::gpu::GpuContext;

/// Set to 1 to skip GPU tests explicitly on a machine without any Vulkan/Metal/DX12 driver.
pub const NO_GPU_ENV: &str = "RNN_GPU_NO_GPU_TESTS";

/// The GPU context for this test binary. Without an adapter the test fails, naming the driver to
/// install, unless `RNN_GPU_NO_GPU_TESTS=1` says to skip (then `None`).
pub fn gpu() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| GpuContext::new().map_err(|e| e.to_string()));
    match ctx {
        Ok(c) => Some(c.clone()),
        Err(e) => {
            if std::env::var(NO_GPU_ENV).as_deref() == Ok("1") {
                eprintln!("GPU test skipped because {NO_GPU_ENV}=1 ({e})");
                None
            } else {
                panic!(
                    "{e}\nThe GPU tests need a GPU adapter; with no GPU, install the software Vulkan \
                     driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers), or set {NO_GPU_ENV}=1 \
                     to skip them explicitly."
                )
            }
        }
    }
}

/// Asserts every check passed, printing each failure in full.
pub fn assert_checks(checks: &[rnn_gpu::verify::Check]) {
    let failed: Vec<String> = checks.iter().filter(|c| !c.pass()).map(|c| c.to_string()).collect();
    assert!(failed.is_empty(), "{} of {} checks failed:\n{}", failed.len(), checks.len(), failed.join("\n"));
}

/// A new, empty folder for one test alone: tests run in parallel threads, and a test that scans
/// its folder must never see another test's files.
pub fn test_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rnn-gpu-tests-{}", std::process::id())).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every device: the native CPU, the reference and, where there is one, the GPU.
pub fn devices() -> Vec<rnn_gpu::Device> {
    let mut d = vec![rnn_gpu::Device::Cpu, rnn_gpu::Device::Reference];
    d.extend(gpu().map(rnn_gpu::Device::Gpu));
    d
}

/// A path in this test binary's own temporary folder (the name says which test's file it is).
pub fn tmp(name: &str) -> std::path::PathBuf {
    let binary =
        std::env::current_exe().ok().and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()));
    let dir =
        std::env::temp_dir().join(format!("rnn-gpu-{}-{}", binary.unwrap_or_default(), std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A file of tests/fixtures (made by tests/fixtures/make_fixtures.py).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A 2-layer bidirectional model with learned initial states and a many-to-one MSE head of
/// `outputs` values.
pub fn regressor(
    cell: rnn_gpu::Cell,
    input: rnn_gpu::InputKind,
    hidden: usize,
    outputs: usize,
) -> rnn_gpu::ModelSpec {
    use rnn_gpu::{Head, Loss, ModelSpec, OutputMode};
    ModelSpec {
        layers: 2,
        bidirectional: true,
        learn_initial_state: true,
        head: Some(Head { outputs, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(cell, input, hidden)
    }
}
