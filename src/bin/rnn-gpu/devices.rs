//! `info`, `verify` and `bench`: the devices, their kernels checked, the standard cases timed.

use super::*;

#[derive(Args)]
pub(crate) struct DeviceArgs {
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// all (every device there is: the GPU when wgpu finds an adapter, and the native CPU), or one
    /// of cpu, gpu, reference, auto.
    #[arg(long, default_value = "all")]
    device: String,
    /// Time the plain-loop reference too (slow: a few runs only).
    #[arg(long)]
    reference: bool,
    /// Small cases, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Only the cases whose name contains this (e.g. lstm, H=512).
    #[arg(long)]
    only: Option<String>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Per training step: dispatches, submits, host waits and bytes allocated after warm-up.
    #[arg(long)]
    verbose: bool,
    /// Per-kernel GPU time of a training step (timestamp queries).
    #[arg(long)]
    profile: bool,
}

pub(crate) fn info(device: &str) -> rnn_gpu::Result<ExitCode> {
    if !matches!(device, "cpu" | "reference" | "gpu" | "auto") {
        Device::from_name(device)?;
    }
    if device != "gpu" {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        outln!("cpu:        {}", Device::Cpu.describe());
        outln!(
            "            {} sets the thread count; this machine has {threads} hardware threads",
            rnn_gpu::native::THREADS_ENV
        );
        outln!("reference:  {}", Device::Reference.describe());
        outln!("            the oracle every device is checked against; never chosen automatically");
        if device != "auto" {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let adapters = list_adapters();
    if adapters.is_empty() {
        outln!("gpu:        no adapter found; auto runs on the native CPU device");
        return Ok(ExitCode::SUCCESS);
    }
    if device == "auto" {
        let hardware = adapters.iter().any(|a| a.device_type != wgpu::DeviceType::Cpu);
        outln!(
            "auto:       {}",
            if hardware {
                "the best hardware GPU adapter below"
            } else {
                "the native CPU device: the only adapters are software rasterizers, which --device gpu or RNN_GPU_ADAPTER still selects"
            }
        );
    }
    outln!("adapters (best first):");
    for a in &adapters {
        outln!("  {} ({:?}, {:?})", a.name, a.backend, a.device_type);
    }
    let ctx = GpuContext::new()?;
    let i = ctx.adapter_info();
    let l = ctx.limits();
    outln!("--device gpu:    {}", i.name);
    outln!("backend:         {:?}", i.backend);
    outln!("device type:     {:?}", i.device_type);
    outln!("driver:          {} {}", i.driver, i.driver_info);
    outln!("limits:");
    outln!("  max buffer size:                  {} bytes", l.max_buffer_size);
    outln!("  max storage buffer binding size:  {} bytes", l.max_storage_buffer_binding_size);
    outln!("  max storage buffers per stage:    {}", l.max_storage_buffers_per_shader_stage);
    outln!("  max workgroups per dimension:     {}", l.max_compute_workgroups_per_dimension);
    outln!("  max invocations per workgroup:    {}", l.max_compute_invocations_per_workgroup);
    outln!("  max workgroup storage:            {} bytes", l.max_compute_workgroup_storage_size);
    outln!("  timestamp queries:                {}", if ctx.has_timestamps() { "yes" } else { "no" });
    outln!(
        "shader modules:  {}",
        if ctx.checked_shaders() {
            "checked (wgpu's bounds clamps and loop counters; RNN_GPU_SHADERS=checked)"
        } else {
            "trusted (no runtime checks added; RNN_GPU_SHADERS=checked adds them)"
        }
    );
    outln!("kernels:         one design for every adapter: 128x128, 64x64 and 32x128 matmul tiles,");
    outln!("                 split-K for deep products, fused steps in 64-thread register tiles");
    outln!("                 (bench --verbose lists each dispatch of a training step)");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(device: &str) -> rnn_gpu::Result<ExitCode> {
    let checks = match Device::from_name(device)? {
        Device::Cpu => {
            outln!("device: {}", Device::Cpu.describe());
            let mut checks = verify::native_checks()?;
            checks.extend(verify::gradient_checks(&Device::Cpu)?);
            checks
        }
        Device::Reference => {
            outln!("device: {}", Device::Reference.describe());
            verify::gradient_checks(&Device::Reference)?
        }
        Device::Gpu(ctx) => {
            outln!("adapter: {}", ctx.describe());
            verify::all_checks(&ctx)?
        }
    };
    outln!("{:<44} {:<22} {:>11} {:>9} {:>9}  result", "kernel", "shape", "max error", "atol", "rtol");
    let mut failed = 0;
    for c in &checks {
        let result = if c.pass() { "pass" } else { "FAIL" };
        outln!(
            "{:<44} {:<22} {:>11.3e} {:>9.1e} {:>9.1e}  {result}",
            c.kernel,
            c.shape,
            c.max_err,
            c.tol.atol,
            c.tol.rtol
        );
        if !c.pass() {
            failed += 1;
            outln!("    {c}");
        }
    }
    outln!("{} checks, {} passed, {failed} failed", checks.len(), checks.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(crate) fn bench(a: BenchArgs) -> rnn_gpu::Result<ExitCode> {
    use rnn_gpu::bench::{self, CaseResult, DeviceResult};
    let mut devices = match a.device.as_str() {
        "all" => {
            let mut d = Vec::new();
            match GpuContext::new() {
                Ok(ctx) => d.push(Device::Gpu(ctx)),
                Err(e) => outln!("no GPU device: {e}"),
            }
            d.push(Device::Cpu);
            d
        }
        name => vec![Device::from_name(name)?],
    };
    if a.reference && !devices.iter().any(|d| matches!(d, Device::Reference)) {
        devices.push(Device::Reference);
    }
    for d in &devices {
        outln!("device {}: {}", d.name(), d.describe());
    }
    let gemm = bench::gemm_rate(2048)?;
    outln!("native f32 GEMM 2048x2048x2048 on this machine: {gemm:.1} GFLOP/s");
    outln!(
        "GFLOP/s count matrix-product multiply-adds only: forward 2*T*B*(G*H^2 + H*V), training step 3x that"
    );
    outln!(
        "each device is first checked against the reference: loss and gradient norm of 3 training steps at the case's size (at most {} time steps)",
        bench::CHECK_STEPS
    );
    let cases: Vec<_> = if a.quick { bench::quick_cases() } else { bench::standard_cases() }
        .into_iter()
        .filter(|c| a.only.as_ref().is_none_or(|o| c.name().contains(o.as_str())))
        .collect();
    outln!(
        "{:<24} {:<10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
        "case",
        "device",
        "train ms",
        "tok/s",
        "GFLOP/s",
        "fwd ms",
        "tok/s",
        "GFLOP/s"
    );
    let row = |name: &str, dev: &str, d: &DeviceResult| {
        outln!(
            "{:<24} {:<10} {:>10.1} {:>10.0} {:>8.2} {:>10.1} {:>10.0} {:>8.2}",
            name,
            dev,
            d.train.seconds * 1e3,
            d.train.tokens_per_sec,
            d.train.gflops,
            d.forward.seconds * 1e3,
            d.forward.tokens_per_sec,
            d.forward.gflops
        )
    };
    let mut results = Vec::new();
    for case in cases {
        let mut timed: Vec<DeviceResult> = Vec::new();
        for (i, device) in devices.iter().enumerate() {
            let reference = matches!(device, Device::Reference);
            let check = if reference { None } else { Some(bench::check(&case, device)?) };
            let (warmup, runs) =
                if reference { (a.warmup.min(1), a.runs.min(3)) } else { (a.warmup, a.runs) };
            let mut d = bench::time(&case, device, warmup, runs)?;
            d.check_error = check;
            let name = if i == 0 { case.name() } else { String::new() };
            row(&name, device.name(), &d);
            if let Device::Gpu(_) = device {
                gpu_details(&a, &case, device, &d);
            }
            timed.push(d);
        }
        // How many times faster each device is than each one after it, by tokens per second.
        for (i, x) in timed.iter().enumerate() {
            for y in &timed[i + 1..] {
                outln!(
                    "{:<24} {:<10} {:>10} {:>9.2}x {:>8} {:>10} {:>9.2}x",
                    "",
                    format!("{}/{}", x.name, y.name),
                    "",
                    x.train.tokens_per_sec / y.train.tokens_per_sec,
                    "",
                    "",
                    x.forward.tokens_per_sec / y.forward.tokens_per_sec
                );
            }
        }
        results.push(CaseResult { case, devices: timed });
    }
    if let Some(path) = &a.json {
        let date = std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        rnn_gpu::io::write_atomic(path, bench::to_json(&results, gemm, &date).as_bytes())?;
        outln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--verbose` and `--profile` on the GPU: what a training step does, and where its time goes.
pub(crate) fn gpu_details(
    a: &BenchArgs,
    case: &rnn_gpu::bench::Case,
    gpu: &Device,
    g: &rnn_gpu::bench::DeviceResult,
) {
    use rnn_gpu::bench;
    if a.verbose {
        if let Some(s) = g.per_step {
            outln!(
                "    per training step after warm-up: {} dispatches ({} recorded in the program), {} submit(s), {} host wait(s), {} bytes allocated; checked against the reference: max relative difference of the loss and gradient norm {:.1e}",
                s.dispatches,
                g.dispatches().unwrap_or(0),
                s.submits,
                s.host_waits,
                s.bytes_allocated,
                g.check_error.unwrap_or(0.0)
            );
        }
        outln!(
            "    {:<22} {:>6} {:>8} {:>11} {:>16} {:>12}",
            "kernel",
            "count",
            "threads",
            "workgroups",
            "grid",
            "MACs/thread"
        );
        for (m, count) in g.mapping_summary() {
            outln!(
                "    {:<22} {:>6} {:>8} {:>11} {:>16} {:>12}",
                m.kernel,
                count,
                m.threads,
                m.workgroups(),
                format!("{}x{}x{}", m.groups[0], m.groups[1], m.groups[2]),
                if m.macs == 0 { "-".to_string() } else { m.macs_per_thread().to_string() }
            );
        }
    }
    if a.profile {
        match bench::profile(case, gpu) {
            Ok(p) => {
                let total = p.kernel_seconds();
                outln!(
                    "    GPU time of one training step by kernel: {:.1} ms in the kernels, {:.1} ms from the first one's start to the last one's end ({:.1} ms between kernels: copies, the driver's work per dispatch)",
                    total * 1e3,
                    p.span * 1e3,
                    (p.span - total).max(0.0) * 1e3
                );
                for (name, count, secs) in p.kernels {
                    outln!(
                        "      {:<24} x{:<4} {:>9.2} ms {:>5.1}%",
                        name,
                        count,
                        secs * 1e3,
                        100.0 * secs / total
                    );
                }
            }
            Err(e) => outln!("    no profile: {e}"),
        }
    }
}
