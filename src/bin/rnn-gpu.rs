//! The `rnn-gpu` command: thin over the library. Parses, calls, reports.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rnn_gpu::gpu::{GpuContext, MatmulVariant, list_adapters};
use rnn_gpu::verify;

#[derive(Parser)]
#[command(name = "rnn-gpu", version, about = "Recurrent networks (RNN, LSTM, GRU) on any GPU through wgpu")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The adapter, its limits, and the kernel variants chosen for it.
    Info,
    /// Every GPU kernel against its CPU twin on this adapter; exits non-zero on any failure.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Verify => verify(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> rnn_gpu::Result<ExitCode> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        println!("no GPU adapter found; the CPU reference will be used");
        println!("(with no GPU, install the software Vulkan driver: apt-get install mesa-vulkan-drivers)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("adapters (best first):");
    for a in &adapters {
        println!("  {} ({:?}, {:?})", a.name, a.backend, a.device_type);
    }
    let ctx = GpuContext::new()?;
    let i = ctx.adapter_info();
    let l = ctx.limits();
    println!("selected:        {}", i.name);
    println!("backend:         {:?}", i.backend);
    println!("device type:     {:?}", i.device_type);
    println!("driver:          {} {}", i.driver, i.driver_info);
    println!("limits:");
    println!("  max buffer size:                  {} bytes", l.max_buffer_size);
    println!("  max storage buffer binding size:  {} bytes", l.max_storage_buffer_binding_size);
    println!("  max storage buffers per stage:    {}", l.max_storage_buffers_per_shader_stage);
    println!("  max workgroups per dimension:     {}", l.max_compute_workgroups_per_dimension);
    println!("  max invocations per workgroup:    {}", l.max_compute_invocations_per_workgroup);
    println!("  max workgroup storage:            {} bytes", l.max_compute_workgroup_storage_size);
    println!("  timestamp queries:                {}", if ctx.has_timestamps() { "yes" } else { "no" });
    let variant = ctx.matmul_variant();
    let why = match variant {
        MatmulVariant::Register => "barrier-free register tiles (software rasterizer)",
        MatmulVariant::Shared => "shared-memory tiles (hardware GPU)",
    };
    println!("kernel variants:");
    println!("  matmul: {} ({why})", variant.name());
    println!("  recurrent steps: fused per step, 8 batch rows per thread");
    Ok(ExitCode::SUCCESS)
}

fn verify() -> rnn_gpu::Result<ExitCode> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.describe());
    let checks = verify::all_checks(&ctx)?;
    println!("{:<44} {:<22} {:>11} {:>9} {:>9}  result", "kernel", "shape", "max error", "atol", "rtol");
    let mut failed = 0;
    for c in &checks {
        let result = if c.pass() { "pass" } else { "FAIL" };
        println!(
            "{:<44} {:<22} {:>11.3e} {:>9.1e} {:>9.1e}  {result}",
            c.kernel, c.shape, c.max_err, c.tol.atol, c.tol.rtol
        );
        if !c.pass() {
            failed += 1;
            println!("    {c}");
        }
    }
    println!("{} checks, {} passed, {failed} failed", checks.len(), checks.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
