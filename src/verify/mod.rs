//! Every kernel of a device against its twin in the reference, and whole-model gradients: the
//! cases behind the kernel tests and `rnn-gpu verify` (gpu/: the GPU's kernels; native.rs: the
//! native device's; steps.rs: the fused steps on any device).
//!
//! Outputs the kernel writes are poisoned with NaN before the run, so an element it fails to write
//! fails the comparison; outputs it accumulates into start from the same random values on both
//! sides. Tolerance: `|gpu - cpu| <= atol + rtol * |cpu|` (DESIGN.md), rtol 1e-4 and atol 1e-5 for
//! elementwise kernels; sums and dot products widen atol with their length, as each case says.

mod gpu;
mod native;
mod steps;

pub use gpu::*;
pub use native::kernel_checks as native_checks;

use std::fmt;

use crate::error::Result;
use crate::ops::step_state;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    /// DESIGN.md's tolerance for elementwise kernels.
    pub const ELEMENTWISE: Tolerance = Tolerance { atol: 1e-5, rtol: 1e-4 };

    /// For a sum of `len` products of values of magnitude about 1: f32 rounding grows with the
    /// length of the sum, and the two sides add in different orders. (On lavapipe the measured
    /// errors stay under a third of this bound.)
    pub fn accumulation(len: usize) -> Tolerance {
        Tolerance { atol: 1e-5 + 1e-7 * len as f64, rtol: 1e-4 }
    }
}

/// The copy_cols case both devices' checks run: `width` columns of `rows` rows between two wider
/// buffers, at odd offsets and strides.
pub(crate) fn copy_cols_case(rows: usize, width: usize, accumulate: bool) -> crate::ops::CopyCols {
    crate::ops::CopyCols {
        rows,
        width,
        y_stride: width + 3,
        y_offset: 2,
        x_stride: width + 5,
        x_offset: 1,
        accumulate,
    }
}

/// The worst element of a failed comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub gpu: f32,
    pub cpu: f32,
    pub allowed: f64,
}

/// The outcome of one kernel at one shape.
#[derive(Clone, Debug)]
pub struct Check {
    pub kernel: String,
    pub shape: String,
    pub max_err: f64,
    pub tol: Tolerance,
    pub mismatch: Option<Mismatch>,
}

impl Check {
    pub fn pass(&self) -> bool {
        self.mismatch.is_none()
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: max error {:.3e} (atol {:.1e}, rtol {:.1e})",
            self.kernel, self.shape, self.max_err, self.tol.atol, self.tol.rtol
        )?;
        if let Some(m) = &self.mismatch {
            write!(
                f,
                " FAILED at index {}: gpu {} cpu {} |diff| {:.3e} > allowed {:.3e}",
                m.index,
                m.gpu,
                m.cpu,
                (m.gpu as f64 - m.cpu as f64).abs(),
                m.allowed
            )?;
        }
        Ok(())
    }
}

/// Compares `gpu` with `cpu` element by element.
pub fn compare(kernel: &str, shape: String, gpu: &[f32], cpu: &[f32], tol: Tolerance) -> Check {
    let mut max_err = 0.0f64;
    let mut worst: Option<(f64, Mismatch)> = None;
    if gpu.len() != cpu.len() {
        let m = Mismatch { index: gpu.len().min(cpu.len()), gpu: f32::NAN, cpu: f32::NAN, allowed: 0.0 };
        worst = Some((f64::INFINITY, m));
    }
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let allowed = tol.atol + tol.rtol * (c as f64).abs();
        // NaN (an unwritten, poisoned element) is the worst possible error.
        let err = (g as f64 - c as f64).abs();
        let err = if err.is_nan() { f64::INFINITY } else { err };
        max_err = max_err.max(err);
        let excess = if allowed.is_nan() { f64::INFINITY } else { err - allowed };
        if excess > 0.0 && worst.as_ref().is_none_or(|(e, _)| excess > *e) {
            worst = Some((excess, Mismatch { index: i, gpu: g, cpu: c, allowed }));
        }
    }
    Check { kernel: kernel.to_string(), shape, max_err, tol, mismatch: worst.map(|(_, m)| m) }
}

/// Whole-model gradients on a CPU device (`rnn-gpu verify --device cpu` or `reference`), per cell
/// of a small stacked, bidirectional character model with variable lengths (and an LSTM with a
/// projection): the device's f32
/// gradients against the f64 reference of the same math, and the f64 backward against central
/// finite differences, on a spread of parameters.
pub fn gradient_checks(device: &crate::model::Device) -> Result<Vec<Check>> {
    use crate::backend::Backend;
    use crate::model::exec::Exec;
    use crate::model::params::ParamLayout;
    use crate::model::spec::{Cell, ModelSpec};
    use crate::model::{Model, Start};
    use crate::reference::ReferenceBackend;

    let mut out = Vec::new();
    let model = |cell, proj| ModelSpec { bidirectional: true, proj, ..ModelSpec::char_model(cell, 5, 4, 2) };
    let models = [(Cell::Rnn { relu: false }, 0), (Cell::Lstm, 0), (Cell::Gru, 0), (Cell::Lstm, 3)];
    for spec in models.map(|(cell, proj)| model(cell, proj)) {
        let name = match spec.proj {
            0 => spec.cell.name().to_string(),
            p => format!("{} proj {p}", spec.cell.name()),
        };
        let layout = ParamLayout::new(&spec);
        let mut rng = Rng::seed_from_u64(11);
        let (t, b) = (4, 3);
        let ids: Vec<u32> = (0..t * b).map(|_| rng.below(5) as u32).collect();
        let targets: Vec<u32> = (0..t * b).map(|_| rng.below(5) as u32).collect();
        let batch = crate::Batch::tokens(t, b, ids).with_lengths(vec![4, 2, 3]).with_classes(targets);
        let shape = format!("L2 D2 H4 V5 T{t} B{b}");

        let init = layout.init(3);
        let mut f32_model = Model::with_flat_params(spec.clone(), device, &init, 0)?;
        let (_, grads32) = f32_model.loss_gradients(&batch, Start::Fresh)?;
        let grads32: Vec<f32> = grads32.params.into_iter().flat_map(|(_, g)| g).collect();

        let init64: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        let mut exec = Exec::new(ReferenceBackend::<f64>::new(), &layout, &init64)?;
        exec.loss(&spec, &layout, &batch, Start::Fresh, None, true)?;
        let buf = exec.net.grads.clone();
        let all64 = crate::wait::block_on("verify::gradient_checks", exec.be.read(&buf))?;
        let grads64: Vec<f32> =
            layout.entries().iter().flat_map(|e| all64[e.range()].iter().map(|&g| g as f32)).collect();
        out.push(compare(
            &format!("{} f32 gradients vs f64 reference, {name}", device.name()),
            shape.clone(),
            &grads32,
            &grads64,
            Tolerance::accumulation(t * 5),
        ));

        // Central differences on every 7th parameter, in f64.
        let params = exec.net.params.clone();
        let state = exec.net.step_state.clone();
        let mut loss_at = |p: &[f64]| -> Result<f64> {
            exec.be.write(&params, p)?;
            exec.loss(&spec, &layout, &batch, Start::Fresh, None, false)?;
            Ok(crate::wait::block_on("verify::gradient_checks", exec.be.read(&state))?[step_state::LOSS])
        };
        let eps = 1e-6;
        let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
        for e in layout.entries() {
            for i in e.range().step_by(7) {
                let mut p = init64.clone();
                p[i] += eps;
                let up = loss_at(&p)?;
                p[i] -= 2.0 * eps;
                let down = loss_at(&p)?;
                analytic.push(all64[i] as f32);
                numeric.push(((up - down) / (2.0 * eps)) as f32);
            }
        }
        out.push(compare(
            &format!("reference f64 backward vs finite differences, {name}"),
            format!("{shape}, {} parameters", analytic.len()),
            &analytic,
            &numeric,
            Tolerance { atol: 1e-7, rtol: 1e-5 },
        ));
    }
    Ok(out)
}
