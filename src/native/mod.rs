//! The native CPU device: the engine for a machine without a GPU. The same execution model as the
//! GPU path (the input projection over all steps as one product, one fused kernel per time step,
//! the weight gradients as one product each over all steps), in native code: products through
//! `sgemm`'s packed panels and register-blocked micro-kernels (AVX-512, AVX2, portable), a time
//! step as one parallel pass of fused product-and-gate tasks (`steps`), everything else
//! vectorized and split across a rayon pool of all cores (`RNN_GPU_THREADS` sets the count).

pub mod kernels;
pub mod sgemm;
pub mod steps;

use std::sync::OnceLock;

use sgemm::Isa;

use crate::error::{Error, Result};
use crate::host::{self, HostBackend, HostKernels, HostOp, rd, wr};
use crate::ops::{Op, step_state};
use crate::reference::kernels as twin;

/// The environment variable that sets the native device's thread count (all cores otherwise).
pub const THREADS_ENV: &str = "RNN_GPU_THREADS";

/// The most threads `RNN_GPU_THREADS` may ask for.
const MAX_THREADS: usize = 1024;

/// The thread count `RNN_GPU_THREADS` asks for: `None` when it is not set (all cores).
pub fn parse_threads(value: Option<&str>) -> Result<Option<usize>> {
    let Some(v) = value else { return Ok(None) };
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Some(n)),
        _ => Err(Error::invalid(
            "native cpu device",
            format!("{THREADS_ENV}={v:?} is not a thread count from 1 to {MAX_THREADS}"),
        )),
    }
}

/// The pool's thread count once it is set up: on first use, from `RNN_GPU_THREADS`.
static POOL: OnceLock<std::result::Result<usize, String>> = OnceLock::new();

/// Sets up rayon's global pool with `RNN_GPU_THREADS` threads, else `default`, else all cores.
fn start_pool(default: Option<usize>) -> std::result::Result<usize, String> {
    let value = std::env::var(THREADS_ENV).ok();
    let wanted = match parse_threads(value.as_deref()) {
        Ok(wanted) => wanted.or(default),
        Err(Error::Invalid { message, .. }) => return Err(message),
        Err(e) => return Err(e.to_string()),
    };
    let mut builder = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("rnn-gpu-{i}"));
    if let Some(n) = wanted {
        builder = builder.num_threads(n);
    }
    // An application that set up rayon's pool itself keeps it; the count is then its own.
    let _ = builder.build_global();
    Ok(rayon::current_num_threads())
}

fn pool(default: Option<usize>) -> Result<usize> {
    POOL.get_or_init(|| start_pool(default))
        .clone()
        .map_err(|message| Error::invalid("native cpu device", message))
}

/// The thread count of the pool, set up on first use from `RNN_GPU_THREADS` (all cores when it
/// is not set).
pub fn threads() -> Result<usize> {
    pool(None)
}

/// Sets up the pool with `n` threads unless `RNN_GPU_THREADS` says otherwise (several processes
/// sharing a machine split its cores). Only before the device's first use; after it, the count
/// it has is returned.
pub fn threads_or(n: usize) -> Result<usize> {
    pool(Some(n.clamp(1, MAX_THREADS)))
}

/// One line on the native device: the cores it uses and the GEMM it calls.
pub fn describe() -> String {
    match threads() {
        Ok(n) => format!(
            "native CPU, {n} thread{}, {} products",
            if n == 1 { "" } else { "s" },
            sgemm::isa().map_or("portable", sgemm::Isa::name)
        ),
        Err(e) => e.to_string(),
    }
}

/// The native kernels, as the kernels of a CPU device, with the scratch they keep between ops.
#[derive(Debug)]
pub struct Native {
    isa: Isa,
    steps: steps::Steps,
    /// `scatter_add`'s row sums, `gather`'s contiguous table rows and `reduce`'s partial sums.
    sums: Vec<f32>,
    partials: Vec<f32>,
}

/// The native CPU device.
pub type NativeBackend = HostBackend<Native>;

impl HostBackend<Native> {
    /// The device on the best instruction set this CPU runs (or the one `RNN_GPU_CPU_ISA`
    /// names). An error when `RNN_GPU_THREADS` or `RNN_GPU_CPU_ISA` is not valid.
    pub fn new() -> Result<Self> {
        Self::with_isa(sgemm::isa()?)
    }

    /// The device on the instruction set `isa`, which the CPU must run.
    pub fn with_isa(isa: Isa) -> Result<Self> {
        threads()?;
        if !isa.supported() {
            return Err(Error::invalid("native cpu device", format!("this CPU does not run {}", isa.name())));
        }
        let steps = steps::Steps::new(isa);
        Ok(Self::with_kernels(Native { isa, steps, sums: Vec::new(), partials: Vec::new() }))
    }
}

impl HostKernels for Native {
    type Elem = f32;
    const ON_POOL: bool = true;

    /// Where the factors take fewer multiply-adds a batch row, `P·(G·H + H)`, than their
    /// product, `G·H·H`: for an LSTM, P < 4H/5.
    fn steps_take_factors(gates: usize, hidden: usize, proj: usize) -> bool {
        proj * (gates * hidden + hidden) < gates * hidden * hidden
    }

    const STEPS_READ_INPUT_TABLE: bool = true;

    fn launch(&mut self, op: HostOp<'_, f32>) -> Result<()> {
        let isa = self.isa;
        match op {
            Op::Matmul { c, a, b, bias, p } => {
                let mut c = wr(c)?;
                kernels::matmul(isa, &mut c, &rd(a)?, &rd(b)?, p);
                if let Some(bias) = bias {
                    kernels::add_bias(&mut c, &rd(bias)?, p.m, p.n);
                }
            }
            Op::BiasGrad { db, db2, dy, rows, cols } => {
                kernels::bias_grad(&mut wr(db)?, &rd(dy)?, rows, cols);
                if let Some(db2) = db2 {
                    kernels::bias_grad(&mut wr(db2)?, &rd(dy)?, rows, cols);
                }
            }
            Op::TanhForward { y, x } => kernels::tanh_forward(&mut wr(y)?, &rd(x)?),
            Op::TanhBackward { dx, y, dy } => kernels::tanh_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?),
            Op::Gather { out, table, idx, p } => {
                kernels::gather(&mut wr(out)?, &rd(table)?, &rd(idx)?, p, &mut self.sums)
            }
            Op::ScatterAdd { dtable, dout, starts, rows, p } => kernels::scatter_add(
                &mut wr(dtable)?,
                &rd(dout)?,
                &rd(starts)?,
                &rd(rows)?,
                p,
                &mut self.sums,
            ),
            Op::SoftmaxRows { y, x, rows, cols } => kernels::softmax_rows(&mut wr(y)?, &rd(x)?, rows, cols),
            Op::SoftmaxXent { loss, dx, logits, targets, weights, rows, cols } => {
                let (logits, targets) = (rd(logits)?, rd(targets)?);
                host::row_loss((loss, dx, weights), (rows, cols), |out| {
                    kernels::softmax_xent(out, &logits, &targets)
                })?
            }
            Op::Mse { loss, dx, pred, target, weights, rows, cols } => {
                let (pred, target) = (rd(pred)?, rd(target)?);
                host::row_loss((loss, dx, weights), (rows, cols), |out| kernels::mse(out, &pred, &target))?
            }
            Op::SoftmaxBackward { dx, y, dy, rows, cols } => {
                kernels::softmax_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?, rows, cols)
            }
            Op::Reduce { out, x, p } => kernels::reduce(&mut wr(out)?, &rd(x)?, p, &mut self.partials),
            Op::Dropout { out, x, seeds, p, backward } => {
                let seed = rd(seeds)?[0];
                match backward {
                    false => kernels::dropout_forward(&mut wr(out)?, &rd(x)?, seed, p),
                    true => kernels::dropout_backward(&mut wr(out)?, &rd(x)?, seed, p),
                }
            }
            Op::FinalizeStep { state, grads, max_norm } => {
                let mut state = wr(state)?;
                kernels::reduce(&mut state, &rd(grads)?, step_state::GRAD_NORM_SQUARED, &mut self.partials);
                twin::decide_step(&mut state, max_norm);
            }
            Op::ClipByValue { grad, lo, hi } => kernels::clip_by_value(&mut wr(grad)?, lo, hi),
            Op::Update { param, grad, slots, state, rule } => {
                let mut locked = slots.iter().map(|s| wr(s)).collect::<Result<Vec<_>>>()?;
                let mut views: Vec<&mut [f32]> = locked.iter_mut().map(|w| &mut **w).collect();
                kernels::update(&mut wr(param)?, &rd(grad)?, &mut views, &rd(state)?, rule);
            }
            Op::CopyCols { y, x, p } => kernels::copy_cols(&mut wr(y)?, &rd(x)?, p),
            Op::AttentionDots { out, x, enc, src_len, a, mask } => {
                kernels::attention_dots(isa, &mut wr(out)?, &rd(x)?, &rd(enc)?, &rd(src_len)?, a, mask)
            }
            Op::AttentionMix { out, w, x, a, accumulate, transposed } => {
                kernels::attention_mix(isa, &mut wr(out)?, &rd(w)?, &rd(x)?, a, accumulate, transposed)
            }
            Op::Step { cell, bufs, s, backward } => {
                // The step packs W_hh once per version of the weights (`steps::Steps`): of its
                // factors when it is a product, which a training pass forms anew.
                self.steps.weights = Some(bufs.factors.map_or(bufs.w_hh, |(w, _)| w).version());
                self.steps.projection = bufs.factors.map(|(_, w_hr)| w_hr.version());
                host::step(&mut self.steps, cell, &bufs, s, backward)?;
            }
            op @ (Op::Clear { .. } | Op::Copy { .. }) => return crate::reference::backend::twin(op),
        }
        Ok(())
    }
}
