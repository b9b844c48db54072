//! `rnn-gpu bench`: DESIGN.md's standard cases on every device in the same run, each checked
//! against the CPU reference before it is timed.
//!
//! A case is a character model (token input, vocabulary 65, one layer) of H units, batches of B
//! sequences of T steps. Timed: the training step (forward, loss, BPTT, SGD update, and the read
//! back of the loss, which waits for the device) and the forward pass alone (waited for). Each is
//! warmed up, then the median of several runs is reported.
//!
//! GFLOP/s count the multiply-adds of the matrix products only, 2 flops each: the forward pass does
//! 2·T·B·(G·H² + H·V) (recurrence and head; the one-hot input projection is a lookup), a training
//! step three times that (the backward pass does two products for each forward one).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Counters, Mapping};
use crate::model::batch::Batch;
use crate::model::spec::{Cell, ModelSpec};
use crate::model::{Device, Model, Start};
use crate::rng::Rng;
use crate::update::{Clip, Optimizer};

pub const VOCAB: usize = 65;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Case {
    pub cell: Cell,
    pub hidden: usize,
    /// The LSTM's projection size (0: none).
    pub proj: usize,
    pub batch: usize,
    pub steps: usize,
}

impl Case {
    pub fn name(&self) -> String {
        let proj = if self.proj > 0 { format!(" P={}", self.proj) } else { String::new() };
        format!("{} H={}{proj} B={} T={}", self.cell.name(), self.hidden, self.batch, self.steps)
    }

    pub fn tokens(&self) -> usize {
        self.batch * self.steps
    }

    /// Flops of the forward pass's matrix products, as the model's math counts them (W_hh, the
    /// projection W_hr, the head), the same count as scripts/bench_pytorch.py's.
    pub fn forward_flops(&self) -> f64 {
        let (t, b, h, g, v) = (
            self.steps as f64,
            self.batch as f64,
            self.hidden as f64,
            self.cell.gates() as f64,
            VOCAB as f64,
        );
        match self.proj as f64 {
            0.0 => 2.0 * t * b * (g * h * h + h * v),
            p => 2.0 * t * b * (g * h * p + p * h + p * v),
        }
    }

    pub fn train_flops(&self) -> f64 {
        3.0 * self.forward_flops()
    }

    pub fn spec(&self) -> ModelSpec {
        ModelSpec { proj: self.proj, ..ModelSpec::char_model(self.cell, VOCAB, self.hidden, 1) }
    }

    pub fn data(&self) -> Batch {
        let mut rng = Rng::seed_from_u64(1);
        let n = self.tokens();
        Batch::tokens(self.steps, self.batch, (0..n).map(|_| rng.below(VOCAB) as u32).collect())
            .with_classes((0..n).map(|_| rng.below(VOCAB) as u32).collect())
    }
}

/// DESIGN.md's standard cases, then the LSTM H=512 with a projection to 256.
pub fn standard_cases() -> Vec<Case> {
    let case = |cell, hidden, proj, batch, steps| Case { cell, hidden, proj, batch, steps };
    vec![
        case(Cell::Rnn { relu: false }, 256, 0, 32, 64),
        case(Cell::Lstm, 256, 0, 32, 64),
        case(Cell::Gru, 256, 0, 32, 64),
        case(Cell::Lstm, 512, 0, 64, 100),
        case(Cell::Lstm, 512, 256, 64, 100),
    ]
}

/// Small cases for a smoke run.
pub fn quick_cases() -> Vec<Case> {
    vec![Case { cell: Cell::Lstm, hidden: 32, proj: 0, batch: 4, steps: 8 }]
}

/// One timing: the median of `runs` after warm-up, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub seconds: f64,
    pub tokens_per_sec: f64,
    pub gflops: f64,
}

impl Timing {
    fn new(seconds: f64, tokens: usize, flops: f64) -> Timing {
        Timing { seconds, tokens_per_sec: tokens as f64 / seconds, gflops: flops / seconds / 1e9 }
    }
}

/// A case on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceResult {
    /// The device's name (`cpu`, `gpu`, `reference`) and its description.
    pub name: &'static str,
    pub device: String,
    /// The largest relative difference from the reference's losses over the check steps (none
    /// for the reference itself).
    pub check_error: Option<f64>,
    pub train: Timing,
    pub forward: Timing,
    /// GPU only: what one training step does after warm-up, the loss not read back.
    pub per_step: Option<Counters>,
    /// GPU only: each dispatch a training program records, in order.
    pub mapping: Option<Vec<Mapping>>,
}

impl DeviceResult {
    /// GPU only: the dispatches a training program records.
    pub fn dispatches(&self) -> Option<usize> {
        self.mapping.as_ref().map(|m| m.len())
    }

    /// The mapping with identical dispatches (kernel, threads, workgroups, multiply-adds)
    /// counted together, in order of first appearance.
    pub fn mapping_summary(&self) -> Vec<(Mapping, usize)> {
        let mut out: Vec<(Mapping, usize)> = Vec::new();
        for m in self.mapping.iter().flatten() {
            match out.iter_mut().find(|(seen, _)| seen == m) {
                Some((_, n)) => *n += 1,
                None => out.push((m.clone(), 1)),
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    pub case: Case,
    pub devices: Vec<DeviceResult>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn model(case: &Case, device: &Device) -> Result<Model> {
    let mut m = Model::new(case.spec(), device, 1)?;
    m.set_optimizer(Optimizer::sgd(0.05, 0.0), Clip::default())?;
    Ok(m)
}

/// Steps of the check: the case's cell, width and batch, over at most this many time steps, so
/// that the reference's side stays short at the largest case.
pub const CHECK_STEPS: usize = 16;

/// Three training steps from the same initial weights on `device` and on the reference, at the
/// case's cell, width and batch over at most `CHECK_STEPS` steps: the losses and the gradient
/// norms must agree (relative 1e-3) before anything is timed. Returns the largest relative
/// difference.
pub fn check(case: &Case, device: &Device) -> Result<f64> {
    let case = Case { steps: case.steps.min(CHECK_STEPS), ..*case };
    let data = case.data();
    let mut d = model(&case, device)?;
    let mut r = model(&case, &Device::Reference)?;
    let mut worst = 0.0f64;
    for step in 0..3 {
        let (sd, sr) = (d.train_step_stats(&data, Start::Fresh)?, r.train_step_stats(&data, Start::Fresh)?);
        // The loss checks the forward pass, the gradient norm the backward pass.
        for (what, vd, vr) in [("loss", sd.loss, sr.loss), ("gradient norm", sd.grad_norm, sr.grad_norm)] {
            let (vd, vr) = (vd as f64, vr as f64);
            let rel = (vd - vr).abs() / vr.abs().max(1e-6);
            if !(rel <= 1e-3) {
                return Err(Error::invalid(
                    "bench",
                    format!(
                        "{}: refusing to time a wrong result: step {step} {what} on {} {vd}, on the reference {vr}",
                        case.name(),
                        device.name()
                    ),
                ));
            }
            worst = worst.max(rel);
        }
    }
    Ok(worst)
}

/// The native device's rate on one large product (`n`x`n`x`n`, f32), in GFLOP/s: the
/// machine's limit, measured in the same run as the cases. The median of five.
pub fn gemm_rate(n: usize) -> Result<f64> {
    crate::native::threads()?;
    let isa = crate::native::sgemm::isa()?;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.1).collect();
    let mut c = vec![0f32; n * n];
    let p = crate::ops::Matmul::new(n, n, n);
    crate::native::kernels::matmul(isa, &mut c, &a, &a, p);
    let times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            crate::native::kernels::matmul(isa, &mut c, &a, &a, p);
            t.elapsed().as_secs_f64()
        })
        .collect();
    Ok(p.flops() / median(times) / 1e9)
}

/// Times `case` on `device`: `warmup` then `runs` of each.
pub fn time(case: &Case, device: &Device, warmup: usize, runs: usize) -> Result<DeviceResult> {
    let data = case.data();
    let mut m = model(case, device)?;
    for _ in 0..warmup.max(1) {
        m.train_step_stats(&data, Start::Fresh)?;
        m.run(&data, Start::Fresh)?;
        m.sync()?;
    }
    // What one training step does on the device, after warm-up (the loss is not read back).
    let before = m.counters();
    m.train_step(&data, Start::Fresh)?;
    let per_step = match (before, m.counters()) {
        (Some(b), Some(after)) => Some(after - b),
        _ => None,
    };
    m.stats()?;
    let mut train = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        m.train_step_stats(&data, Start::Fresh)?;
        train.push(t.elapsed().as_secs_f64());
    }
    let mut forward = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        m.run(&data, Start::Fresh)?;
        m.sync()?;
        forward.push(t.elapsed().as_secs_f64());
    }
    let program = m.program(&data, "train");
    Ok(DeviceResult {
        name: device.name(),
        device: device.describe(),
        check_error: None,
        train: Timing::new(median(train), case.tokens(), case.train_flops()),
        forward: Timing::new(median(forward), case.tokens(), case.forward_flops()),
        per_step,
        mapping: program.map(|p| p.mapping()),
    })
}

/// Where one training step's GPU time goes ([`profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepProfile {
    /// (kernel, dispatches, seconds), summed by kernel, largest first.
    pub kernels: Vec<(&'static str, usize, f64)>,
    /// From the first kernel's start to the last one's end, in the same replay: what the
    /// kernels leave of it is the time between them (copies, the driver's work per dispatch).
    pub span: f64,
}

impl StepProfile {
    pub fn kernel_seconds(&self) -> f64 {
        self.kernels.iter().map(|k| k.2).sum()
    }
}

/// Per-kernel GPU time of one training step (timestamp queries).
pub fn profile(case: &Case, gpu: &Device) -> Result<StepProfile> {
    let data = case.data();
    let mut m = model(case, gpu)?;
    m.train_step_stats(&data, Start::Fresh)?;
    let prog = m
        .program(&data, "train")
        .ok_or_else(|| Error::invalid("profile", "profiling needs the GPU device"))?;
    // The fastest of three profiles: the least disturbed by other work on the machine.
    let mut best = prog.profile()?;
    for _ in 1..3 {
        let p = prog.profile()?;
        if p.span < best.span {
            best = p;
        }
    }
    let mut kernels: Vec<(&'static str, usize, f64)> = Vec::new();
    for (name, secs) in best.kernels {
        match kernels.iter_mut().find(|k| k.0 == name) {
            Some(k) => {
                k.1 += 1;
                k.2 += secs;
            }
            None => kernels.push((name, 1, secs)),
        }
    }
    kernels.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(StepProfile { kernels, span: best.span })
}

/// The dispatches of a training step, identical ones counted together.
fn mapping_json(summary: &[(Mapping, usize)]) -> String {
    let rows: Vec<String> = summary
        .iter()
        .map(|(m, count)| {
            format!(
                "{{\"kernel\": {:?}, \"count\": {count}, \"threads_per_workgroup\": {}, \"workgroups\": {}, \"grid\": [{}, {}, {}], \"macs_per_thread\": {}}}",
                m.kernel,
                m.threads,
                m.workgroups(),
                m.groups[0],
                m.groups[1],
                m.groups[2],
                m.macs_per_thread()
            )
        })
        .collect();
    format!("[{}]", rows.join(", "))
}

/// JSON of the results (hand-written: the schema is small and fixed).
pub fn to_json(results: &[CaseResult], gemm_gflops: f64, date: &str) -> String {
    let timing = |t: &Timing| {
        format!(
            "{{\"ms\": {:.3}, \"tokens_per_sec\": {:.1}, \"gflops\": {:.3}}}",
            t.seconds * 1e3,
            t.tokens_per_sec,
            t.gflops
        )
    };
    let device = |d: &DeviceResult| {
        format!(
            "{{\"name\": {:?}, \"device\": {:?}, \"check_max_rel_error\": {}, \"train\": {}, \"forward\": {}, \"dispatches_per_step\": {}, \"submits_per_step\": {}, \"host_waits_per_step\": {}, \"bytes_allocated_per_step\": {}, \"mapping\": {}}}",
            d.name,
            d.device,
            d.check_error.map_or("null".into(), |e| format!("{e:.3e}")),
            timing(&d.train),
            timing(&d.forward),
            d.dispatches().map_or("null".into(), |v| v.to_string()),
            d.per_step.map_or("null".into(), |c| c.submits.to_string()),
            d.per_step.map_or("null".into(), |c| c.host_waits.to_string()),
            d.per_step.map_or("null".into(), |c| c.bytes_allocated.to_string()),
            if d.mapping.is_none() { "null".to_string() } else { mapping_json(&d.mapping_summary()) },
        )
    };
    let cases: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "    {{\"case\": {:?}, \"cell\": {:?}, \"hidden\": {}, \"proj\": {}, \"batch\": {}, \"steps\": {}, \"vocab\": {VOCAB}, \"train_flops\": {:.0}, \"forward_flops\": {:.0}, \"devices\": [{}]}}",
                r.case.name(),
                r.case.cell.name(),
                r.case.hidden,
                r.case.proj,
                r.case.batch,
                r.case.steps,
                r.case.train_flops(),
                r.case.forward_flops(),
                r.devices.iter().map(device).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    format!(
        "{{\n  \"date\": {date:?},\n  \"native_gemm_2048_gflops\": {gemm_gflops:.1},\n  \"cases\": [\n{}\n  ]\n}}\n",
        cases.join(",\n")
    )
}
