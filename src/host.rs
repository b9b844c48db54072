//! Host memory, shared by the two CPU devices (the native one and the reference): buffers as views
//! into shared vectors, locked per op, and a budget that refuses an allocation the machine cannot
//! hold.

use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::backend::{Backend, ProgramKey};
use crate::cell::{Cell, CellMath, with_cell};
use crate::error::{Error, Result};
use crate::ops::{Op, Step, StepBufs};
use crate::real::Real;
use crate::reference::kernels::RowLoss;

/// A view of a host buffer.
#[derive(Clone, Debug)]
pub struct HostTensor<T> {
    buf: Arc<Buffer<T>>,
    offset: usize,
    len: usize,
}

#[derive(Debug)]
struct Buffer<T> {
    data: RwLock<Vec<T>>,
    /// A number no other buffer or write has had, taken anew whenever the buffer is locked for
    /// writing: what a cache of values derived from the buffer is keyed by.
    written: AtomicU64,
}

/// The numbers `Buffer::written` takes, unique over the process.
fn next_write() -> u64 {
    static WRITES: AtomicU64 = AtomicU64::new(1);
    WRITES.fetch_add(1, Ordering::Relaxed)
}

/// The contents of a view at one moment: equal versions, equal contents (the native device's
/// packed weights are kept by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    written: u64,
    offset: usize,
    len: usize,
}

impl<T: Copy> HostTensor<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` elements from `start`.
    pub fn view(&self, start: usize, len: usize) -> Result<Self> {
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::range(
                "view",
                "end",
                start.saturating_add(len),
                format!("at most {}", self.len),
            ));
        }
        Ok(HostTensor { buf: self.buf.clone(), offset: self.offset + start, len })
    }

    /// The view's contents now, as a value that changes whenever the buffer is written.
    pub fn version(&self) -> Version {
        Version { written: self.buf.written.load(Ordering::Relaxed), offset: self.offset, len: self.len }
    }

    pub fn write(&self, what: &'static str, data: &[T]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::shape(what, "data", &[data.len()], &[self.len]));
        }
        wr(self)?.copy_from_slice(data);
        Ok(())
    }

    pub fn fill(&self, value: T) -> Result<()> {
        wr(self)?.fill(value);
        Ok(())
    }

    /// Copies into `dst`, which may be another view of the same buffer.
    pub fn copy_to(&self, dst: &Self) -> Result<()> {
        if self.len != dst.len {
            return Err(Error::shape("copy", "source", &[self.len], &[dst.len]));
        }
        if Arc::ptr_eq(&self.buf, &dst.buf) {
            let mut g = wr(self)?;
            g.guard.copy_within(self.offset..self.offset + self.len, dst.offset);
            return Ok(());
        }
        wr(dst)?.copy_from_slice(&rd(self)?);
        Ok(())
    }
}

/// A locked view. Reads share a buffer; a write excludes everything else, as on a GPU, where a
/// buffer bound writable in one dispatch cannot be bound again. An op handed such a pair gets an
/// error, not a deadlock.
pub(crate) struct Read<'a, T> {
    guard: RwLockReadGuard<'a, Vec<T>>,
    range: Range<usize>,
}

pub(crate) struct Write<'a, T> {
    guard: RwLockWriteGuard<'a, Vec<T>>,
    range: Range<usize>,
}

impl<T> Deref for Read<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.guard[self.range.clone()]
    }
}

impl<T> Deref for Write<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.guard[self.range.clone()]
    }
}

impl<T> DerefMut for Write<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.guard[self.range.clone()]
    }
}

fn aliasing() -> Error {
    Error::invalid(
        "cpu backend",
        "one op was handed a buffer it writes through another argument too (an engine bug)",
    )
}

pub(crate) fn rd<T>(t: &HostTensor<T>) -> Result<Read<'_, T>> {
    let guard = t.buf.data.try_read().map_err(|_| aliasing())?;
    Ok(Read { guard, range: t.offset..t.offset + t.len })
}

pub(crate) fn wr<T>(t: &HostTensor<T>) -> Result<Write<'_, T>> {
    let guard = t.buf.data.try_write().map_err(|_| aliasing())?;
    // Under the write lock: a reader, which holds the read lock, sees the number of the write
    // its contents came from.
    t.buf.written.store(next_write(), Ordering::Relaxed);
    Ok(Write { guard, range: t.offset..t.offset + t.len })
}

/// Locks what a row loss writes and its row weights (`RowLoss`) and runs `f` on them; the
/// caller locks what the loss reads.
pub(crate) fn row_loss<T: Copy>(
    (loss, dx, weights): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
    (rows, cols): (usize, usize),
    f: impl FnOnce(RowLoss<'_, T>),
) -> Result<()> {
    let (mut loss, mut dx, weights) = (wr(loss)?, wr(dx)?, rd(weights)?);
    f(RowLoss { loss: &mut loss, dx: &mut dx, weights: &weights, rows, cols });
    Ok(())
}

/// Bytes of the buffers allocated so far, and what the machine had available at the start: an
/// allocation past that is refused with the figures rather than left to the OOM killer.
#[derive(Debug)]
pub(crate) struct HostMemory {
    allocated: u64,
    available: Option<u64>,
    /// Buffers allocated so far: each starts at its own offset (see `alloc`).
    count: usize,
}

impl HostMemory {
    pub fn new() -> Self {
        HostMemory { allocated: 0, available: crate::error::available_memory(), count: 0 }
    }

    /// A buffer of `len` copies of `zero`.
    pub fn alloc<T: Clone>(&mut self, what: &str, len: usize, zero: T) -> Result<HostTensor<T>> {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        let total = self.allocated.saturating_add(bytes);
        if let Some(available) = self.available
            && total > available
        {
            return Err(Error::OutOfMemory { what: what.to_string(), needed: total, available });
        }
        self.allocated = total;
        // Large buffers start on pages, so element i of two buffers would share an address's
        // low 12 bits, and a load from one that follows a store to the other waits on it (4K
        // aliasing: a step reads its input projection and writes its gates at the same offsets).
        // Each buffer starts a different number of cache lines into its allocation.
        let offset = (self.count * 23 % 64) * 64 / std::mem::size_of::<T>().max(1);
        self.count += 1;
        let buf =
            Buffer { data: RwLock::new(vec![zero; offset + len]), written: AtomicU64::new(next_write()) };
        Ok(HostTensor { buf: Arc::new(buf), offset, len })
    }
}

/// How a CPU device runs its ops: the reference's twins or the native kernels.
pub trait HostKernels: Send {
    type Elem: Real;
    /// Whether the device's programs run on a thread of the rayon pool (the native device's
    /// kernels split their work across it).
    const ON_POOL: bool;
    /// `Backend::steps_take_factors`.
    fn steps_take_factors(_gates: usize, _hidden: usize, _proj: usize) -> bool {
        false
    }
    /// `Backend::STEPS_READ_INPUT_TABLE`.
    const STEPS_READ_INPUT_TABLE: bool = false;
    /// Runs an op whose shapes `Backend::run` has checked.
    fn launch(&mut self, op: HostOp<'_, Self::Elem>) -> Result<()>;
}

/// An op on host buffers.
pub type HostOp<'a, T> = Op<'a, HostTensor<T>, HostTensor<u32>>;

/// A CPU device: host memory, and the kernels `K` that run its ops.
#[derive(Debug)]
pub struct HostBackend<K> {
    memory: HostMemory,
    pub(crate) kernels: K,
}

impl<K> HostBackend<K> {
    pub(crate) fn with_kernels(kernels: K) -> Self {
        HostBackend { memory: HostMemory::new(), kernels }
    }
}

impl<K: HostKernels> Backend for HostBackend<K> {
    type Elem = K::Elem;
    type Buf = HostTensor<K::Elem>;
    type IBuf = HostTensor<u32>;

    fn steps_take_factors(gates: usize, hidden: usize, proj: usize) -> bool {
        K::steps_take_factors(gates, hidden, proj)
    }

    const STEPS_READ_INPUT_TABLE: bool = K::STEPS_READ_INPUT_TABLE;

    fn alloc(&mut self, what: &str, len: usize) -> Result<Self::Buf> {
        self.memory.alloc(what, len, K::Elem::ZERO)
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

    fn ilen(t: &Self::IBuf) -> usize {
        t.len()
    }

    fn write(&mut self, t: &Self::Buf, data: &[K::Elem]) -> Result<()> {
        t.write("write", data)
    }

    fn write_u32(&mut self, t: &Self::IBuf, data: &[u32]) -> Result<()> {
        t.write("write_u32", data)
    }

    async fn read_into(&mut self, t: &Self::Buf, out: &mut Vec<K::Elem>) -> Result<()> {
        out.clear();
        out.extend_from_slice(&rd(t)?);
        Ok(())
    }

    fn execute(
        &mut self,
        _key: ProgramKey,
        record: &mut (dyn FnMut(&mut Self) -> Result<()> + Send),
    ) -> Result<()> {
        if K::ON_POOL {
            // On a thread of the pool, so that each parallel pass shares the work with the
            // caller's thread rather than waking the pool and sleeping until it is done: in a
            // VM the two wake-ups per step cost more than a small step's arithmetic.
            rayon::scope(|_| record(self))
        } else {
            record(self)
        }
    }

    fn drop_programs(&mut self, _steps: usize, _tgt_steps: usize, _batch: usize) {}

    fn launch(&mut self, op: HostOp<'_, K::Elem>) -> Result<()> {
        self.kernels.launch(op)
    }
}

// ---------------------------------------------------------------------------------------------
// The fused step kernels of a CPU device, handed their buffers locked: one dispatch, written
// once, for the reference's twins and the native kernels alike.

/// A forward step's buffers, locked: `cells` where the cell has a cell state, `gates` where it
/// keeps values for the backward step.
pub(crate) struct StepForward<'a, T> {
    pub states: &'a mut [T],
    pub cells: Option<&'a mut [T]>,
    pub gates: Option<&'a mut [T]>,
    pub y: &'a mut [T],
    pub xw: &'a [T],
    /// With a table for `xw` (`StepBufs::xw_rows`): the table row of each of the step's batch
    /// rows, each checked to be in the table.
    pub xw_rows: Option<&'a [u32]>,
    pub w_hh: &'a [T],
    /// `w_hh`'s factors when it is a product (`StepBufs::factors`).
    pub factors: Option<(&'a [T], &'a [T])>,
    pub bias: &'a [T],
    pub lengths: &'a [u32],
}

/// A backward step's buffers, locked: `dg` the gradients of the gates' input pre-activations,
/// `dgh` those of the recurrent ones where the cell splits them.
pub(crate) struct StepBackward<'a, T> {
    pub states: &'a [T],
    pub cells: Option<&'a [T]>,
    pub gates: Option<&'a [T]>,
    pub w_hh: &'a [T],
    pub factors: Option<(&'a [T], &'a [T])>,
    pub lengths: &'a [u32],
    pub dy: &'a [T],
    pub dg: &'a mut [T],
    pub dgh: Option<&'a mut [T]>,
    pub carry: &'a mut [T],
}

/// The fused steps of a CPU device, for any cell (`CellMath`).
pub(crate) trait StepKernels<T> {
    fn forward<C: CellMath>(&mut self, cell: C, f: StepForward<'_, T>, s: Step);
    fn backward<C: CellMath>(&mut self, cell: C, b: StepBackward<'_, T>, s: Step);
}

/// Locks the step's buffers and runs it (`Op::check` has made sure the cell's are there).
pub(crate) fn step<T: Copy, K: StepKernels<T>>(
    kern: &mut K,
    cell: Cell,
    b: &StepBufs<'_, HostTensor<T>, HostTensor<u32>>,
    s: Step,
    backward: bool,
) -> Result<()> {
    let missing = |what: &str| Error::invalid("step", format!("{} needs its {what} buffer", cell.name()));
    let (w_hh, lengths) = (rd(b.w_hh)?, rd(b.lengths)?);
    let factors = b.factors.map(|(w, r)| Ok::<_, Error>((rd(w)?, rd(r)?))).transpose()?;
    let factors = factors.as_ref().map(|(w, r)| (&**w, &**r));
    if !backward {
        let (mut states, mut y) = (wr(b.states)?, wr(b.y)?);
        let mut cells = b.cells.filter(|_| cell.has_cell_state()).map(wr).transpose()?;
        let mut gates = b.gates.filter(|_| cell.saved() > 0).map(wr).transpose()?;
        let (xw, bias) = (rd(b.xw)?, rd(b.bias)?);
        let rows = b.xw_rows.map(rd).transpose()?;
        let xw_rows = match &rows {
            None => None,
            Some(rows) => {
                let step = &rows[s.t * s.batch..(s.t + 1) * s.batch];
                let table = xw.len() / (cell.gates() * s.hidden);
                if let Some(&r) = step.iter().find(|&&r| r as usize >= table) {
                    return Err(Error::range(
                        "step",
                        "xw_rows",
                        r,
                        format!("below {table}, the table's rows"),
                    ));
                }
                Some(step)
            }
        };
        let f = StepForward {
            states: &mut states,
            cells: cells.as_deref_mut(),
            gates: gates.as_deref_mut(),
            y: &mut y,
            xw: &xw,
            xw_rows,
            w_hh: &w_hh,
            factors,
            bias: &bias,
            lengths: &lengths,
        };
        with_cell!(cell, c => kern.forward(c, f, s));
        return Ok(());
    }
    let states = rd(b.states)?;
    let cells = b.cells.filter(|_| cell.has_cell_state()).map(rd).transpose()?;
    let gates = b.gates.filter(|_| cell.saved() > 0).map(rd).transpose()?;
    let dy = rd(b.dy.ok_or_else(|| missing("dy"))?)?;
    let mut dg = wr(b.dg.ok_or_else(|| missing("dg"))?)?;
    let mut dgh = b.dgh.filter(|_| cell.splits_recurrent_gradient()).map(wr).transpose()?;
    let mut carry = wr(b.carry.ok_or_else(|| missing("carry"))?)?;
    let a = StepBackward {
        states: &states,
        cells: cells.as_deref(),
        gates: gates.as_deref(),
        w_hh: &w_hh,
        factors,
        lengths: &lengths,
        dy: &dy,
        dg: &mut dg,
        dgh: dgh.as_deref_mut(),
        carry: &mut carry,
    };
    with_cell!(cell, c => kern.backward(c, a, s));
    Ok(())
}
