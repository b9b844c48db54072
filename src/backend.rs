//! The devices behind one interface. The model's forward pass, losses, backpropagation through
//! time and updates (src/model/graph, src/seq2seq/graph.rs) are written once against
//! `Backend`, as `ops::Op`s: the CPU devices run each op as it comes (the native kernels, or the
//! reference's twins); the GPU records the ops of a program once, then replays it with one
//! submit per call.
//!
//! Buffers are views (`Buf` for floats, `IBuf` for integers).

use crate::error::Result;
use crate::ops::Op;
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

// The read futures are awaited where they are made, never sent to another thread, so the
// trait's async fns need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Backend {
    type Elem: Real;
    type Buf: Clone + Send + Sync;
    type IBuf: Clone + Send + Sync;

    /// Whether its step kernels multiply the state of a projected layer of this shape by the
    /// factors of the recurrent weight (`StepBufs::factors`) rather than by their product: then
    /// the graph does not form `W_eff = W_hh·W_hr` and hands the steps the factors.
    fn steps_take_factors(_gates: usize, _hidden: usize, _proj: usize) -> bool {
        false
    }

    /// Whether its forward step kernels read a token-input layer's projection from the table of
    /// every token's (`StepBufs::xw_rows`) rather than from a copy gathered for all steps: a
    /// CPU's cache holds the table, where the gathered copy comes from memory.
    const STEPS_READ_INPUT_TABLE: bool = false;

    /// A zeroed buffer of `len` elements.
    fn alloc(&mut self, what: &str, len: usize) -> Result<Self::Buf>;
    fn alloc_u32(&mut self, what: &str, len: usize) -> Result<Self::IBuf>;
    /// `len` elements of `t` from `start`.
    fn view(&self, t: &Self::Buf, start: usize, len: usize) -> Result<Self::Buf>;
    fn len(t: &Self::Buf) -> usize;
    fn ilen(t: &Self::IBuf) -> usize;

    /// Host access, outside any program: write now; read when the device has finished (the
    /// GPU's future waits for it, see `crate::wait`; the CPU devices' are ready at once).
    fn write(&mut self, t: &Self::Buf, data: &[Self::Elem]) -> Result<()>;
    fn write_u32(&mut self, t: &Self::IBuf, data: &[u32]) -> Result<()>;
    /// Reads `t` into `out`, replacing its contents (a caller that reads every step keeps `out`
    /// and allocates nothing after the first).
    async fn read_into(&mut self, t: &Self::Buf, out: &mut Vec<Self::Elem>) -> Result<()>;
    async fn read(&mut self, t: &Self::Buf) -> Result<Vec<Self::Elem>> {
        let mut out = Vec::new();
        self.read_into(t, &mut out).await?;
        Ok(out)
    }

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

    /// Runs `op` (records it, on a GPU), after the shape check every device makes.
    fn run(&mut self, op: Op<'_, Self::Buf, Self::IBuf>) -> Result<()> {
        op.check(Self::len, Self::ilen)?;
        self.launch(op)
    }

    /// Runs `op`, whose shapes `run` has checked.
    fn launch(&mut self, op: Op<'_, Self::Buf, Self::IBuf>) -> Result<()>;
}
