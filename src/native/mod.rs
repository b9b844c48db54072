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

use crate::backend::{Backend, ProgramKey, StepBufs};
use crate::error::{Error, Result};
use sgemm::Isa;

use crate::host::{self, HostMemory, HostTensor, check_matmul, rd, wr};
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step};
use crate::reference::kernels as twin;
use crate::update::{self, Optimizer};

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

/// The thread count of the pool, set up on first use from `RNN_GPU_THREADS`.
pub fn threads() -> Result<usize> {
    static POOL: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let value = std::env::var(THREADS_ENV).ok();
        let wanted = match parse_threads(value.as_deref()) {
            Ok(wanted) => wanted,
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
    })
    .clone()
    .map_err(|message| Error::invalid("native cpu device", message))
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

#[derive(Debug)]
pub struct NativeBackend {
    isa: Isa,
    memory: HostMemory,
    steps: steps::Steps,
    /// `scatter_add`'s row sums, `gather`'s contiguous table rows and `reduce`'s partial sums,
    /// kept between calls.
    sums: Vec<f32>,
    partials: Vec<f32>,
}

impl NativeBackend {
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
        Ok(NativeBackend {
            isa,
            memory: HostMemory::new(),
            steps: steps::Steps::new(isa),
            sums: Vec::new(),
            partials: Vec::new(),
        })
    }
}

impl Backend for NativeBackend {
    type Elem = f32;
    type Buf = HostTensor<f32>;
    type IBuf = HostTensor<u32>;

    fn alloc(&mut self, what: &str, len: usize) -> Result<Self::Buf> {
        self.memory.alloc(what, len, 0.0)
    }

    fn alloc_u32(&mut self, what: &str, len: usize) -> Result<Self::IBuf> {
        self.memory.alloc(what, len, 0)
    }

    fn view(&self, t: &Self::Buf, start: usize, len: usize) -> Result<Self::Buf> {
        t.view(start, len)
    }

    fn len(t: &Self::Buf) -> usize {
        t.len()
    }

    fn write(&mut self, t: &Self::Buf, data: &[f32]) -> Result<()> {
        t.write("write", data)
    }

    fn write_u32(&mut self, t: &Self::IBuf, data: &[u32]) -> Result<()> {
        t.write("write_u32", data)
    }

    fn read(&mut self, t: &Self::Buf) -> Result<Vec<f32>> {
        t.read()
    }

    fn execute(
        &mut self,
        _key: ProgramKey,
        record: &mut (dyn FnMut(&mut Self) -> Result<()> + Send),
    ) -> Result<()> {
        // On a thread of the pool, so that each step's parallel pass shares the work with the
        // caller's thread rather than waking the pool and sleeping until it is done: in a VM
        // the two wake-ups per step cost more than a small step's arithmetic.
        rayon::scope(|_| record(self))
    }

    fn drop_programs(&mut self, _steps: usize, _tgt_steps: usize, _batch: usize) {}

    fn clear(&mut self, t: &Self::Buf) -> Result<()> {
        t.fill(0.0)
    }

    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf) -> Result<()> {
        src.copy_to(dst)
    }

    fn matmul(&mut self, c: &Self::Buf, a: &Self::Buf, b: &Self::Buf, p: Matmul) -> Result<()> {
        check_matmul(c, a, b, p)?;
        kernels::matmul(self.isa, &mut wr(c)?, &rd(a)?, &rd(b)?, p);
        Ok(())
    }

    fn matmul_bias(
        &mut self,
        c: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: &Self::Buf,
        p: Matmul,
    ) -> Result<()> {
        check_matmul(c, a, b, p)?;
        if bias.len() != p.n {
            return Err(Error::shape("matmul", "bias", &[bias.len()], &[p.n]));
        }
        let mut c = wr(c)?;
        kernels::matmul(self.isa, &mut c, &rd(a)?, &rd(b)?, p);
        kernels::add_bias(&mut c, &rd(bias)?, p.m, p.n);
        Ok(())
    }

    fn bias_grad(&mut self, db: &Self::Buf, dy: &Self::Buf, rows: usize, cols: usize) -> Result<()> {
        kernels::bias_grad(&mut wr(db)?, &rd(dy)?, rows, cols);
        Ok(())
    }

    fn axpy(&mut self, y: &Self::Buf, x: &Self::Buf, alpha: f32) -> Result<()> {
        kernels::axpy(&mut wr(y)?, &rd(x)?, alpha);
        Ok(())
    }

    fn tanh_forward(&mut self, y: &Self::Buf, x: &Self::Buf) -> Result<()> {
        kernels::tanh_forward(&mut wr(y)?, &rd(x)?);
        Ok(())
    }

    fn tanh_backward(&mut self, dx: &Self::Buf, y: &Self::Buf, dy: &Self::Buf) -> Result<()> {
        kernels::tanh_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?);
        Ok(())
    }

    fn gather(&mut self, out: &Self::Buf, table: &Self::Buf, idx: &Self::IBuf, p: Gather) -> Result<()> {
        kernels::gather(&mut wr(out)?, &rd(table)?, &rd(idx)?, p, &mut self.sums);
        Ok(())
    }

    fn scatter_add(
        &mut self,
        dtable: &Self::Buf,
        dout: &Self::Buf,
        starts: &Self::IBuf,
        rows: &Self::IBuf,
        p: Gather,
    ) -> Result<()> {
        kernels::scatter_add(&mut wr(dtable)?, &rd(dout)?, &rd(starts)?, &rd(rows)?, p, &mut self.sums);
        Ok(())
    }

    fn softmax_rows(&mut self, y: &Self::Buf, x: &Self::Buf, rows: usize, cols: usize) -> Result<()> {
        kernels::softmax_rows(&mut wr(y)?, &rd(x)?, rows, cols);
        Ok(())
    }

    fn softmax_xent(
        &mut self,
        loss: &Self::Buf,
        dx: &Self::Buf,
        logits: &Self::Buf,
        targets: &Self::IBuf,
        weights: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let (mut loss, mut dx) = (wr(loss)?, wr(dx)?);
        kernels::softmax_xent(&mut loss, &mut dx, &rd(logits)?, &rd(targets)?, &rd(weights)?, rows, cols);
        Ok(())
    }

    fn mse(
        &mut self,
        loss: &Self::Buf,
        dx: &Self::Buf,
        pred: &Self::Buf,
        target: &Self::Buf,
        weights: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        kernels::mse(&mut wr(loss)?, &mut wr(dx)?, &rd(pred)?, &rd(target)?, &rd(weights)?, rows, cols);
        Ok(())
    }

    fn reduce(&mut self, out: &Self::Buf, x: &Self::Buf, p: Reduce) -> Result<()> {
        kernels::reduce(&mut wr(out)?, &rd(x)?, p, &mut self.partials);
        Ok(())
    }

    fn dropout_forward(
        &mut self,
        out: &Self::Buf,
        x: &Self::Buf,
        seeds: &Self::IBuf,
        p: Dropout,
    ) -> Result<()> {
        let seed = rd(seeds)?[0];
        kernels::dropout_forward(&mut wr(out)?, &rd(x)?, seed, p);
        Ok(())
    }

    fn dropout_backward(
        &mut self,
        dx: &Self::Buf,
        dy: &Self::Buf,
        seeds: &Self::IBuf,
        p: Dropout,
    ) -> Result<()> {
        let seed = rd(seeds)?[0];
        kernels::dropout_backward(&mut wr(dx)?, &rd(dy)?, seed, p);
        Ok(())
    }

    fn finalize_step(&mut self, state: &Self::Buf, grads: &Self::Buf, max_norm: f32) -> Result<()> {
        let mut state = wr(state)?;
        kernels::reduce(
            &mut state,
            &rd(grads)?,
            crate::ops::step_state::GRAD_NORM_SQUARED,
            &mut self.partials,
        );
        twin::decide_step(&mut state, max_norm);
        Ok(())
    }

    fn clip_by_value(&mut self, grad: &Self::Buf, lo: f32, hi: f32) -> Result<()> {
        kernels::clip_by_value(&mut wr(grad)?, lo, hi);
        Ok(())
    }

    fn update(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        slots: &[&Self::Buf],
        state: &Self::Buf,
        rule: &Optimizer,
    ) -> Result<()> {
        let lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
        update::check_buffers(rule, param.len(), grad.len(), &lens, state.len())?;
        let mut locked = slots.iter().map(|s| wr(s)).collect::<Result<Vec<_>>>()?;
        let mut views: Vec<&mut [f32]> = locked.iter_mut().map(|w| &mut **w).collect();
        kernels::update(&mut wr(param)?, &rd(grad)?, &mut views, &rd(state)?, rule);
        Ok(())
    }

    fn copy_cols(&mut self, y: &Self::Buf, x: &Self::Buf, p: CopyCols) -> Result<()> {
        kernels::copy_cols(&mut wr(y)?, &rd(x)?, p);
        Ok(())
    }

    fn attention_dots(
        &mut self,
        out: &Self::Buf,
        x: &Self::Buf,
        enc: &Self::Buf,
        src_len: &Self::IBuf,
        a: Attention,
        mask: bool,
    ) -> Result<()> {
        kernels::attention_dots(self.isa, &mut wr(out)?, &rd(x)?, &rd(enc)?, &rd(src_len)?, a, mask);
        Ok(())
    }

    fn attention_mix(
        &mut self,
        out: &Self::Buf,
        w: &Self::Buf,
        enc: &Self::Buf,
        a: Attention,
        accumulate: bool,
    ) -> Result<()> {
        kernels::attention_mix(self.isa, &mut wr(out)?, &rd(w)?, &rd(enc)?, a, accumulate);
        Ok(())
    }

    fn attention_mix_t(
        &mut self,
        out: &Self::Buf,
        w: &Self::Buf,
        x: &Self::Buf,
        a: Attention,
        accumulate: bool,
    ) -> Result<()> {
        kernels::attention_mix_t(self.isa, &mut wr(out)?, &rd(w)?, &rd(x)?, a, accumulate);
        Ok(())
    }

    fn softmax_backward(
        &mut self,
        dx: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        kernels::softmax_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?, rows, cols);
        Ok(())
    }

    fn step_forward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        self.steps.weights = Some(b.w_hh.version());
        host::step_forward(&mut self.steps, cell, b, s)
    }

    fn step_backward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        self.steps.weights = Some(b.w_hh.version());
        host::step_backward(&mut self.steps, cell, b, s)
    }
}
