//! The fused recurrent steps of every cell over whole sequences, forward and backward, on any
//! device against the reference: what `verify` and the kernel tests run for the steps.

use super::{Check, Tolerance, compare};
use crate::backend::{Backend, ProgramKey};
use crate::cell::Cell;
use crate::error::Result;
use crate::ops::{Op, Step, StepBufs, StepMode};
use crate::reference::ReferenceBackend;
use crate::rng::Rng;

pub(super) type Uploaded<B> = (Vec<<B as Backend>::Buf>, Vec<<B as Backend>::IBuf>);

pub(super) fn upload<B: Backend<Elem = f32>>(
    be: &mut B,
    f: &[Vec<f32>],
    u: &[Vec<u32>],
) -> Result<Uploaded<B>> {
    let mut fb = Vec::new();
    for v in f {
        let t = be.alloc("verify", v.len())?;
        be.write(&t, v)?;
        fb.push(t);
    }
    let mut ub = Vec::new();
    for v in u {
        let t = be.alloc_u32("verify", v.len())?;
        be.write_u32(&t, v)?;
        ub.push(t);
    }
    Ok((fb, ub))
}

pub(super) fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// The buffers of one step sequence, on one device, and what the sequence leaves in them.
#[derive(Clone)]
struct StepData {
    states: Vec<f32>,
    cells: Vec<f32>,
    gates: Vec<f32>,
    y: Vec<f32>,
    xw: Vec<f32>,
    w_hh: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
    dg: Vec<f32>,
    dgh: Vec<f32>,
    carry: Vec<f32>,
    lengths: Vec<u32>,
    /// The factors W_hh `[G*H, P]` and W_hr `[P, H]` of `w_hh`, where the device is given them.
    factors: Option<(Vec<f32>, Vec<f32>)>,
}

/// The fused steps of `cell` over a whole sequence, forward, then backward with W_hh halved in
/// between (as an update changes it), then the initial-state gradient: the GPU check's sequence.
/// Without `keep`, the forward steps alone, as inference runs them: given no gates to keep.
async fn run_steps<B: Backend<Elem = f32>>(
    be: &mut B,
    cell: Cell,
    d: &StepData,
    base: Step,
    reverse: bool,
    keep: bool,
) -> Result<StepData> {
    let factors = d.factors.clone().map_or(Vec::new(), |(w, r)| vec![w, r]);
    let (f, u) = upload(
        be,
        &[
            d.states.clone(),
            d.cells.clone(),
            d.gates.clone(),
            d.y.clone(),
            d.xw.clone(),
            d.w_hh.clone(),
            d.bias.clone(),
            d.dy.clone(),
            d.dg.clone(),
            d.dgh.clone(),
            d.carry.clone(),
        ]
        .into_iter()
        .chain(factors)
        .collect::<Vec<_>>(),
        std::slice::from_ref(&d.lengths),
    )?;
    let t_len = d.xw.len() / (base.batch * cell.gates() * base.hidden);
    let time = |s: usize| if reverse { t_len - 1 - s } else { s };
    let slots = |t: usize| if reverse { (t + 1, t) } else { (t, t + 1) };
    let bufs = StepBufs {
        states: &f[0],
        cells: Some(&f[1]),
        gates: Some(&f[2]),
        y: &f[3],
        xw: &f[4],
        xw_rows: None,
        w_hh: &f[5],
        bias: &f[6],
        lengths: &u[0],
        dy: Some(&f[7]),
        dg: Some(&f[8]),
        dgh: Some(&f[9]),
        carry: Some(&f[10]),
        factors: d.factors.as_ref().map(|_| (&f[11], &f[12])),
    };
    let key = |kind| ProgramKey {
        kind,
        steps: t_len,
        tgt_steps: 0,
        batch: base.batch,
        variant: Default::default(),
    };
    let forward = StepBufs { gates: keep.then_some(&f[2]), ..bufs };
    be.execute(key(if keep { "verify steps forward" } else { "verify steps inference" }), &mut |be| {
        for s in 0..t_len {
            let t = time(s);
            let (in_slot, out_slot) = slots(t);
            let s = Step { t, in_slot, out_slot, ..base };
            be.run(Op::Step { cell, bufs: forward, s, backward: false })?;
        }
        Ok(())
    })?;
    if !keep {
        let [states, cells, gates, y] = read_all(be, [&f[0], &f[1], &f[2], &f[3]]).await?;
        return Ok(StepData { states, cells, gates, y, ..d.clone() });
    }
    // W_hh changes between the passes, as an update changes it between steps: the backward
    // steps must read the new weights.
    let halve = |w: &[f32]| -> Vec<f32> { w.iter().map(|w| w * 0.5).collect() };
    be.write(&f[5], &halve(&d.w_hh))?;
    if let Some((w, _)) = &d.factors {
        be.write(&f[11], &halve(w))?;
    }
    be.execute(key("verify steps backward"), &mut |be| {
        for s in 0..=t_len {
            let (t, next_t, mode) = if s == t_len {
                (0, time(0), StepMode::Initial)
            } else {
                let t = time(t_len - 1 - s);
                let next_t = if s == 0 { t } else { time(t_len - s) };
                (t, next_t, if s == 0 { StepMode::First } else { StepMode::Later })
            };
            let (in_slot, out_slot) = slots(t);
            let s = Step { t, in_slot, out_slot, next_t, mode, ..base };
            be.run(Op::Step { cell, bufs, s, backward: true })?;
        }
        Ok(())
    })?;
    let [states, cells, gates, y, xw, w_hh, bias, dy, dg, dgh, carry] =
        read_all(be, std::array::from_fn(|i| &f[i])).await?;
    Ok(StepData {
        states,
        cells,
        gates,
        y,
        xw,
        w_hh,
        bias,
        dy,
        dg,
        dgh,
        carry,
        lengths: d.lengths.clone(),
        factors: d.factors.clone(),
    })
}

/// Reads each of `bufs`, in order.
pub(super) async fn read_all<B: Backend<Elem = f32>, const N: usize>(
    be: &mut B,
    bufs: [&B::Buf; N],
) -> Result<[Vec<f32>; N]> {
    let mut out: [Vec<f32>; N] = std::array::from_fn(|_| Vec::new());
    for (o, b) in out.iter_mut().zip(bufs) {
        *o = be.read(b).await?;
    }
    Ok(out)
}

/// The fused steps of `cell` over a whole sequence of `(T, B, H)`, forward then backward (W_hh
/// changed between the passes), in one direction, on the device of `be` against the reference:
/// every buffer the steps write. `label` names the device's variant in the shapes. With `proj`
/// (a projected LSTM's P), W_hh is the product of two factors, which the device is given too.
pub async fn check_steps<B: Backend<Elem = f32>>(
    mut be: B,
    label: &str,
    cell: Cell,
    (t_len, b, h): (usize, usize, usize),
    proj: usize,
    reverse: bool,
    seed: u64,
) -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(seed);
    let gh = cell.gates() * h;
    let state_base = if reverse { 4 } else { 0 };
    let state_len = state_base + (t_len + 1) * b * h;
    let out_stride = 2 * h;
    let out_col = if reverse { h } else { 0 };
    let bias_hh = gh + 3;
    let scale = 1.0 / (h as f32).sqrt();
    let mut lengths: Vec<u32> = (0..b).map(|_| 1 + rng.below(t_len) as u32).collect();
    lengths[0] = t_len as u32;
    let mut states = nan(state_len);
    let mut cells = nan(state_len);
    let first = state_base + (if reverse { t_len } else { 0 }) * b * h;
    for i in 0..b * h {
        states[first + i] = rng.uniform_in(-1.0, 1.0) as f32;
        cells[first + i] = rng.uniform_in(-1.0, 1.0) as f32;
    }
    let factors = (proj > 0).then(|| {
        let (w, r) = (rng.uniform_vec(gh * proj, -scale, scale), rng.uniform_vec(proj * h, -scale, scale));
        // W_hh = W · W_hr, as the graph forms it.
        let product: Vec<f32> =
            (0..gh * h).map(|i| (0..proj).map(|k| w[(i / h) * proj + k] * r[k * h + i % h]).sum()).collect();
        (product, (w, r))
    });
    let data = StepData {
        states,
        cells,
        gates: nan((t_len * b * cell.saved() * h).max(1)),
        y: nan(t_len * b * out_stride),
        xw: rng.uniform_vec(t_len * b * gh, -1.0, 1.0),
        w_hh: match &factors {
            None => rng.uniform_vec(gh * h, -scale, scale),
            Some((product, _)) => product.clone(),
        },
        bias: rng.uniform_vec(bias_hh + gh, -scale, scale),
        dy: rng.uniform_vec(t_len * b * out_stride, -1.0, 1.0),
        dg: nan(t_len * b * gh),
        dgh: nan(t_len * b * gh),
        carry: rng.uniform_vec(2 * b * h, -1.0, 1.0),
        lengths,
        factors: factors.map(|(_, f)| f),
    };
    let base = Step {
        t: 0,
        batch: b,
        hidden: h,
        in_slot: 0,
        out_slot: 0,
        state_base,
        out_stride,
        out_col,
        bias_hh,
        next_t: 0,
        mode: StepMode::First,
    };
    let n = run_steps(&mut be, cell, &data, base, reverse, true).await?;
    let inference = run_steps(&mut be, cell, &data, base, reverse, false).await?;
    // The reference multiplies by the product.
    let plain = StepData { factors: None, ..data.clone() };
    let r = run_steps(&mut ReferenceBackend::<f32>::new(), cell, &plain, base, reverse, true).await?;
    let shape = format!(
        "T{t_len} B{b} H{h}{}{}{}{label}",
        if proj > 0 { format!(" P{proj}") } else { String::new() },
        if reverse { " reverse" } else { "" },
        if label.is_empty() { "" } else { " " }
    );
    let tol = Tolerance::accumulation(gh);
    let name = cell.name();
    let written = |v: &[f32]| v[state_base..state_base + (t_len + 1) * b * h].to_vec();
    let own = |v: &[f32]| -> Vec<f32> {
        v.chunks(out_stride).flat_map(|row| row[out_col..out_col + h].to_vec()).collect()
    };
    // One comparison: the step and the buffer named, the native values against the reference's.
    let cmp = |what: &str, got: &[f32], want: &[f32], tol| {
        let (step, buffer) = what.split_once(' ').unwrap_or((what, ""));
        compare(&format!("{name}_step_{step}.{buffer}"), shape.clone(), got, want, tol)
    };
    let mut out = vec![
        cmp("forward states", &written(&n.states), &written(&r.states), tol),
        cmp("forward y", &own(&n.y), &own(&r.y), tol),
        cmp("forward y (inference)", &own(&inference.y), &own(&r.y), tol),
        cmp("forward states (inference)", &written(&inference.states), &written(&r.states), tol),
        cmp("backward dg", &n.dg, &r.dg, tol),
        cmp("backward carry", &n.carry, &r.carry, tol),
    ];
    if cell.saved() > 0 {
        out.push(cmp("forward gates", &n.gates, &r.gates, tol));
        // Inference keeps nothing: the gates are as they were given, NaN.
        let untouched: Vec<f32> = inference.gates.iter().map(|g| g.is_nan() as u8 as f32).collect();
        let all = vec![1.0; inference.gates.len()];
        out.push(cmp("forward gates untouched (inference)", &untouched, &all, Tolerance::ELEMENTWISE));
    }
    if cell == Cell::Lstm {
        out.push(cmp("forward cells", &written(&n.cells), &written(&r.cells), tol));
    }
    if cell == Cell::Gru {
        out.push(cmp("backward dgh", &n.dgh, &r.dgh, tol));
    }
    Ok(out)
}
