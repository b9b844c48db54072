//! The two devices behind one interface. The model's forward pass, losses, backpropagation through
//! time and updates (src/model/graph.rs) are written once against `Backend`; the CPU backend runs
//! each op as it is called, with the reference twins in `cpu::kernels`; the GPU backend records
//! each op into a program once, which is then replayed with one submit per call.
//!
//! Buffers are views (`Buf` for floats, `IBuf` for integers). Ops take outputs first, then
//! inputs, then a descriptor, as the kernels do.

use crate::error::Result;
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step};
use crate::real::Real;
use crate::update::{Clip, Optimizer};

/// What identifies a recorded program: its kind, the batch shape it was built for, and every
/// option that changes the ops it records. Compared by value: two keys are one program only
/// when all of that is equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProgramKey {
    pub kind: &'static str,
    pub steps: usize,
    /// The decoder's steps in an encoder-decoder model (0 otherwise).
    pub tgt_steps: usize,
    pub batch: usize,
    pub variant: Variant,
}

/// The options a program records beyond its kind and shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The program makes the initial state itself (learned or conditioned).
    pub model_init: bool,
    /// Dropout on.
    pub train: bool,
    /// The update it ends with: the rule's entry point, state slots and numbers, and the
    /// clipping, as bits (the learning rate is read from the step state, not recorded).
    pub update: Option<(&'static str, usize, [u32; 4], [u32; 2])>,
}

impl Variant {
    pub fn with_update(mut self, rule: &Optimizer, clip: Clip) -> Variant {
        self.update = Some((
            rule.entry(),
            rule.state_slots(),
            rule.hyper().map(f32::to_bits),
            [clip.max_norm, clip.value].map(f32::to_bits),
        ));
        self
    }
}

/// The buffers of one fused step kernel; which are used depends on the cell.
pub struct StepBufs<'a, B: Backend + ?Sized> {
    pub states: &'a B::Buf,
    pub cells: Option<&'a B::Buf>,
    pub gates: Option<&'a B::Buf>,
    pub y: &'a B::Buf,
    pub xw: &'a B::Buf,
    pub w_hh: &'a B::Buf,
    pub bias: &'a B::Buf,
    pub lengths: &'a B::IBuf,
    pub dy: Option<&'a B::Buf>,
    pub dg: Option<&'a B::Buf>,
    pub dgh: Option<&'a B::Buf>,
    pub carry: Option<&'a B::Buf>,
}

pub trait Backend {
    type Elem: Real;
    type Buf: Clone + Send + Sync;
    type IBuf: Clone + Send + Sync;

    /// A zeroed buffer of `len` elements.
    fn alloc(&mut self, what: &str, len: usize) -> Result<Self::Buf>;
    fn alloc_u32(&mut self, what: &str, len: usize) -> Result<Self::IBuf>;
    /// `len` elements of `t` from `start`.
    fn view(&self, t: &Self::Buf, start: usize, len: usize) -> Result<Self::Buf>;
    fn len(t: &Self::Buf) -> usize;

    /// Host access, outside any program: write now, read now (the GPU waits).
    fn write(&mut self, t: &Self::Buf, data: &[Self::Elem]) -> Result<()>;
    fn write_u32(&mut self, t: &Self::IBuf, data: &[u32]) -> Result<()>;
    fn read(&mut self, t: &Self::Buf) -> Result<Vec<Self::Elem>>;

    /// Runs `record` as the program named `key`. The CPU executes each op as `record` calls it;
    /// the GPU records the ops the first time a key is seen and replays the program (one submit)
    /// every time, including the first.
    fn execute(
        &mut self,
        key: ProgramKey,
        record: &mut (dyn FnMut(&mut Self) -> Result<()> + Send),
    ) -> Result<()>;

    /// Forgets the programs recorded for a batch shape (their buffers go with them).
    fn drop_programs(&mut self, steps: usize, tgt_steps: usize, batch: usize);

    fn clear(&mut self, t: &Self::Buf) -> Result<()>;
    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf) -> Result<()>;

    fn matmul(&mut self, c: &Self::Buf, a: &Self::Buf, b: &Self::Buf, p: Matmul) -> Result<()>;
    /// `c = op(a)·op(b) + bias`, `bias` (n) added to every row: a layer with its bias in one
    /// kernel.
    fn matmul_bias(
        &mut self,
        c: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: &Self::Buf,
        p: Matmul,
    ) -> Result<()>;
    fn bias_grad(&mut self, db: &Self::Buf, dy: &Self::Buf, rows: usize, cols: usize) -> Result<()>;
    /// `bias_grad` into `db` and `db2`, the same column sums into each (the RNN's and LSTM's
    /// b_ih and b_hh): one kernel on the GPU.
    fn bias_grad_pair(
        &mut self,
        db: &Self::Buf,
        db2: &Self::Buf,
        dy: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.bias_grad(db, dy, rows, cols)?;
        self.bias_grad(db2, dy, rows, cols)
    }
    fn axpy(&mut self, y: &Self::Buf, x: &Self::Buf, alpha: f32) -> Result<()>;
    fn tanh_forward(&mut self, y: &Self::Buf, x: &Self::Buf) -> Result<()>;
    fn tanh_backward(&mut self, dx: &Self::Buf, y: &Self::Buf, dy: &Self::Buf) -> Result<()>;
    fn gather(&mut self, out: &Self::Buf, table: &Self::Buf, idx: &Self::IBuf, p: Gather) -> Result<()>;
    fn scatter_add(
        &mut self,
        dtable: &Self::Buf,
        dout: &Self::Buf,
        starts: &Self::IBuf,
        rows: &Self::IBuf,
        p: Gather,
    ) -> Result<()>;
    fn softmax_rows(&mut self, y: &Self::Buf, x: &Self::Buf, rows: usize, cols: usize) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent(
        &mut self,
        loss: &Self::Buf,
        dx: &Self::Buf,
        logits: &Self::Buf,
        targets: &Self::IBuf,
        weights: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn mse(
        &mut self,
        loss: &Self::Buf,
        dx: &Self::Buf,
        pred: &Self::Buf,
        target: &Self::Buf,
        weights: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    fn reduce(&mut self, out: &Self::Buf, x: &Self::Buf, p: Reduce) -> Result<()>;
    fn dropout_forward(
        &mut self,
        out: &Self::Buf,
        x: &Self::Buf,
        seeds: &Self::IBuf,
        p: Dropout,
    ) -> Result<()>;
    fn dropout_backward(
        &mut self,
        dx: &Self::Buf,
        dy: &Self::Buf,
        seeds: &Self::IBuf,
        p: Dropout,
    ) -> Result<()>;
    /// The squared norm of `grads` into the step state, then the step's decision: finite or not,
    /// and the clipping scale for `max_norm` (0: none), which the optimizers apply to the gradient.
    fn finalize_step(&mut self, state: &Self::Buf, grads: &Self::Buf, max_norm: f32) -> Result<()>;
    fn clip_by_value(&mut self, grad: &Self::Buf, lo: f32, hi: f32) -> Result<()>;
    /// The update rule `rule` on every parameter, with its state buffers (`rule.state_slots()`
    /// of them).
    fn update(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        slots: &[&Self::Buf],
        state: &Self::Buf,
        rule: &Optimizer,
    ) -> Result<()>;
    fn copy_cols(&mut self, y: &Self::Buf, x: &Self::Buf, p: CopyCols) -> Result<()>;
    fn attention_dots(
        &mut self,
        out: &Self::Buf,
        x: &Self::Buf,
        enc: &Self::Buf,
        src_len: &Self::IBuf,
        a: Attention,
        mask: bool,
    ) -> Result<()>;
    fn attention_mix(
        &mut self,
        out: &Self::Buf,
        w: &Self::Buf,
        enc: &Self::Buf,
        a: Attention,
        accumulate: bool,
    ) -> Result<()>;
    fn attention_mix_t(
        &mut self,
        out: &Self::Buf,
        w: &Self::Buf,
        x: &Self::Buf,
        a: Attention,
        accumulate: bool,
    ) -> Result<()>;
    fn softmax_backward(
        &mut self,
        dx: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    fn step_forward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()>;
    fn step_backward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()>;
}
