//! The recurrent cells, each one description: its gates, the values its forward step keeps for
//! the backward step, whether it carries a cell state, and its arithmetic on one hidden unit,
//! forward and backward. The CPU devices run that arithmetic as written (the reference with
//! exact activations, the native device with its vectorized polynomials, `Act`); the GPU runs the
//! same equations in shaders/<cell>.wgsl. Stacking, directions, lengths, the recurrent products
//! and every buffer are the engine's, built on the description.
//!
//! A new cell: its file here, its line in `cells!`, and its shader.

mod gru;
mod lstm;
mod rnn;

pub use gru::Gru;
pub use lstm::Lstm;
pub use rnn::Rnn;

use crate::real::Real;

/// The activations a device computes a cell with.
pub trait Act<T> {
    fn sigmoid(x: T) -> T;
    fn tanh(x: T) -> T;
}

/// The reference's: `Real`'s own, as exact as the float type.
pub enum Exact {}

impl<T: Real> Act<T> for Exact {
    #[inline(always)]
    fn sigmoid(x: T) -> T {
        x.sigmoid()
    }

    #[inline(always)]
    fn tanh(x: T) -> T {
        x.tanh()
    }
}

/// One hidden unit's inputs to the forward step, gate k at index k (k < GATES): the input
/// projection `x`, the bias `b_ih`, the recurrent product `p = (W_hh h_prev)`, the bias `b_hh`,
/// and the unit's previous states.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forward<T> {
    pub x: [T; 4],
    pub b_ih: [T; 4],
    pub p: [T; 4],
    pub b_hh: [T; 4],
    pub h_prev: T,
    pub c_prev: T,
}

/// What the forward step makes of a unit: the values kept for the backward step, and the new
/// states (used where the step is inside the sequence).
#[derive(Clone, Copy, Debug, Default)]
pub struct Output<T> {
    pub saved: [T; 4],
    pub h: T,
    pub c: T,
}

/// One hidden unit's inputs to the backward step: the kept values, the states around the step,
/// the gradient reaching the unit's new hidden state `dh` (from above, from the next step through
/// W_hh, and carried) and its new cell state `dc` (carried).
#[derive(Clone, Copy, Debug, Default)]
pub struct Backward<T> {
    pub saved: [T; 4],
    pub h: T,
    pub h_prev: T,
    pub c: T,
    pub c_prev: T,
    pub dh: T,
    pub dc: T,
}

/// The backward step's results for a unit: the gradients of the gates' input pre-activations
/// (`dx`, also b_ih's) and of their recurrent ones (`dr`, which W_hh's gradient and the previous
/// step's `dh` are formed from; equal to `dx` except in the GRU), and what carries to the
/// previous step besides the product through W_hh.
#[derive(Clone, Copy, Debug, Default)]
pub struct Grad<T> {
    pub dx: [T; 4],
    pub dr: [T; 4],
    pub carry_h: T,
    pub carry_c: T,
}

/// What a cell is made of: the sizes and the flags every device builds its steps from.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Gates per hidden unit: rows of `weight_ih` and `weight_hh` are `gates * H`.
    pub gates: usize,
    /// Values per hidden unit the forward step keeps for the backward step (`gates` buffer).
    pub saved: usize,
    /// Whether it carries a cell state beside the hidden state.
    pub cell_state: bool,
    /// Whether the backward step reads the new hidden state (`Backward::h`), the previous one
    /// (`h_prev`); a cell with a cell state reads `c` and `c_prev`.
    pub reads_h: bool,
    pub reads_h_prev: bool,
    /// Whether the gradients of the recurrent pre-activations differ from those of the input
    /// ones (`Grad::dr` from `dx`): then they get a buffer of their own, and b_hh a gradient of
    /// its own.
    pub splits_recurrent_gradient: bool,
    /// Its WGSL family, shaders/<family>.wgsl (whose step entry points are step_common.wgsl's).
    pub family: &'static str,
}

impl Shape {
    /// One gate, nothing kept, no flags: what a cell's shape says otherwise.
    pub const PLAIN: Shape = Shape {
        gates: 1,
        saved: 0,
        cell_state: false,
        reads_h: false,
        reads_h_prev: false,
        splits_recurrent_gradient: false,
        family: "",
    };
}

/// A cell: what it is made of, and its arithmetic on one hidden unit.
pub trait CellMath: Copy + Send + Sync + 'static {
    /// What it is made of.
    const SHAPE: Shape;

    /// Its pipeline-overridable constants in that shader.
    fn constants(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    fn forward<T: Real, A: Act<T>>(&self, u: &Forward<T>) -> Output<T>;
    fn backward<T: Real, A: Act<T>>(&self, u: &Backward<T>) -> Grad<T>;
}

/// The recurrent cell of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cell {
    /// Elman RNN with tanh, or relu when `relu`.
    Rnn {
        relu: bool,
    },
    Lstm,
    Gru,
}

/// Calls `$body` with `$c` bound to the cell's arithmetic (`CellMath`), so that a step is
/// compiled (and vectorized) for the cell it runs.
macro_rules! with_cell {
    ($cell:expr, $c:ident => $body:expr) => {
        match $cell {
            $crate::cell::Cell::Rnn { relu } => {
                let $c = $crate::cell::Rnn { relu };
                $body
            }
            $crate::cell::Cell::Lstm => {
                let $c = $crate::cell::Lstm;
                $body
            }
            $crate::cell::Cell::Gru => {
                let $c = $crate::cell::Gru;
                $body
            }
        }
    };
}
pub(crate) use with_cell;

impl Cell {
    /// Every cell (both of the RNN's activations).
    pub const ALL: [Cell; 4] = [Cell::Rnn { relu: false }, Cell::Rnn { relu: true }, Cell::Lstm, Cell::Gru];

    pub fn gates(self) -> usize {
        with_cell!(self, c => shape_of(&c).gates)
    }

    pub fn saved(self) -> usize {
        with_cell!(self, c => shape_of(&c).saved)
    }

    pub fn has_cell_state(self) -> bool {
        with_cell!(self, c => shape_of(&c).cell_state)
    }

    pub fn splits_recurrent_gradient(self) -> bool {
        with_cell!(self, c => shape_of(&c).splits_recurrent_gradient)
    }

    pub fn family(self) -> &'static str {
        with_cell!(self, c => shape_of(&c).family)
    }

    pub fn constants(self) -> Vec<(&'static str, u64)> {
        with_cell!(self, c => c.constants())
    }

    /// The entry point of its forward (or backward) step in its WGSL family.
    pub fn entry(self, backward: bool) -> &'static str {
        if backward { "step_backward" } else { "step_forward" }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cell::Rnn { relu: false } => "rnn_tanh",
            Cell::Rnn { relu: true } => "rnn_relu",
            c => c.family(),
        }
    }
}

/// A cell's shape, read through a value of its type.
fn shape_of<C: CellMath>(_: &C) -> Shape {
    C::SHAPE
}

impl Cell {
    pub fn from_name(name: &str) -> Option<Cell> {
        match name {
            "rnn" | "rnn_tanh" | "tanh" => Some(Cell::Rnn { relu: false }),
            "rnn_relu" | "relu" => Some(Cell::Rnn { relu: true }),
            "lstm" => Some(Cell::Lstm),
            "gru" => Some(Cell::Gru),
            _ => None,
        }
    }
}
