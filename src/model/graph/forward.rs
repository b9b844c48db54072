//! The forward pass over all steps (and the model's own initial state), and the loss.

use super::*;

impl Graph<'_> {
    /// Records the forward pass: every layer, then the head's logits.
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        net: &Net<B>,
        ws: &Workspace<B>,
        o: ForwardOpts,
    ) -> Result<()> {
        let spec = self.spec;
        let (t_len, b) = (ws.steps, ws.batch);
        let tb = t_len * b;
        let bh = self.bh(b);
        let (g, h) = (spec.cell.gates(), spec.hidden);
        let dh = spec.output_size();

        if o.model_init {
            self.init_forward(be, net, ws)?;
        }
        if let (InputKind::Embedding { dim, .. }, Some(x), Some((ids, _, _))) =
            (spec.input, &ws.input, &ws.tokens)
        {
            let p = Gather { n: tb, width: dim, idx_stride: dim, col_stride: 1 };
            be.run(Op::Gather { out: x, table: &self.param(be, net, "embedding.weight")?, idx: ids, p })?;
        }

        for k in 0..spec.layers {
            let lw = &ws.layers[k];
            // The layer's input: the batch, or the layer below (after dropout in training).
            let x: Option<B::Buf> = if k == 0 {
                ws.input.clone()
            } else if o.train && spec.dropout > 0.0 {
                let xd = lw.x_drop.as_ref().ok_or_else(|| Error::invalid("forward", "no dropout buffer"))?;
                be.run(Op::Dropout {
                    out: xd,
                    x: &ws.layers[k - 1].y,
                    seeds: &ws.seeds,
                    p: Dropout { prob: spec.dropout, salt: k as u32 },
                    backward: false,
                })?;
                Some(xd.clone())
            } else {
                Some(ws.layers[k - 1].y.clone())
            };
            let i = spec.layer_input(k);
            for (d, dw) in lw.dirs.iter().enumerate() {
                let w = self.weights(be, net, k, d)?;
                match (&x, &ws.tokens) {
                    (Some(x), _) => be.run(Op::Matmul {
                        c: &dw.xw,
                        a: x,
                        b: &w.w_ih,
                        p: Matmul::new(tb, g * h, i).trans_b(),
                        bias: None,
                    })?,
                    (None, Some((tokens, _, _))) => {
                        let p = Gather { n: tb, width: g * h, idx_stride: 1, col_stride: i };
                        be.run(Op::Gather { out: &dw.xw, table: &w.w_ih, idx: tokens, p })?;
                    }
                    (None, None) => return Err(Error::invalid("forward", "the workspace has no input")),
                }
                let chunk = (k * spec.directions() + d) * bh;
                let first = dw.state_base + self.first_slot(d, t_len) * bh;
                be.run(Op::Copy {
                    src: &be.view(&ws.h0, chunk, bh)?,
                    dst: &be.view(&dw.states, first, bh)?,
                })?;
                if let (Some(c0), Some(cells)) = (&ws.c0, &dw.cells) {
                    be.run(Op::Copy { src: &be.view(c0, chunk, bh)?, dst: &be.view(cells, first, bh)? })?;
                }
                let base = self.base_step(b, d, dw.state_base, w.bias_hh);
                let bufs = StepBufs::<B::Buf, B::IBuf> {
                    states: &dw.states,
                    cells: dw.cells.as_ref(),
                    gates: if o.keep { dw.gates.as_ref() } else { None },
                    y: &lw.y,
                    xw: &dw.xw,
                    w_hh: &w.w_hh,
                    bias: &w.bias,
                    lengths: &ws.lengths,
                    dy: None,
                    dg: None,
                    dgh: None,
                    carry: None,
                };
                for s in 0..t_len {
                    let t = self.time(d, s, t_len);
                    let (in_slot, out_slot) = self.slots(d, t);
                    be.run(Op::Step {
                        cell: spec.cell,
                        bufs,
                        s: Step { t, in_slot, out_slot, ..base },
                        backward: false,
                    })?;
                }
                let last = dw.state_base + self.final_slot(d, t_len) * bh;
                be.run(Op::Copy { src: &be.view(&dw.states, last, bh)?, dst: &be.view(&ws.hn, chunk, bh)? })?;
                if let (Some(cn), Some(cells)) = (&ws.cn, &dw.cells) {
                    be.run(Op::Copy { src: &be.view(cells, last, bh)?, dst: &be.view(cn, chunk, bh)? })?;
                }
            }
        }

        if let (Some(head), Some(hw)) = (spec.head, &ws.head) {
            let top = &ws.layers[spec.layers - 1].y;
            let z = match &hw.z {
                None => top.clone(),
                Some((z, _)) => {
                    let (last, _, _) =
                        hw.last.as_ref().ok_or_else(|| Error::invalid("forward", "no last-row list"))?;
                    be.run(Op::Gather { out: z, table: top, idx: last, p: self.last_rows(b) })?;
                    z.clone()
                }
            };
            let z = match &hw.dropped {
                Some((zd, _)) if o.train => {
                    be.run(Op::Dropout {
                        out: zd,
                        x: &z,
                        seeds: &ws.seeds,
                        p: self.output_dropout(),
                        backward: false,
                    })?;
                    zd.clone()
                }
                _ => z,
            };
            let o = head.outputs;
            be.run(Op::Matmul {
                c: &hw.logits,
                a: &z,
                b: &self.param(be, net, "head.weight")?,
                bias: Some(&self.param(be, net, "head.bias")?),
                p: Matmul::new(hw.rows, o, dh).trans_b(),
            })?;
        }
        // The final states become the next run's initial states (truncated BPTT, streaming);
        // a run that starts afresh overwrites them first.
        be.run(Op::Copy { src: &ws.hn, dst: &ws.h0 })?;
        if let (Some(cn), Some(c0)) = (&ws.cn, &ws.c0) {
            be.run(Op::Copy { src: cn, dst: c0 })?;
        }
        Ok(())
    }

    /// Records the loss: per-row losses and their gradient, summed into the step state.
    pub fn loss<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &Workspace<B>) -> Result<()> {
        let (head, hw) = match (self.spec.head, &ws.head) {
            (Some(h), Some(w)) => (h, w),
            _ => return Err(Error::invalid("loss", "the model has no head")),
        };
        let o = head.outputs;
        match head.loss {
            Loss::CrossEntropy => be.run(Op::SoftmaxXent {
                loss: &hw.loss_rows,
                dx: &hw.dlogits,
                logits: &hw.logits,
                targets: &hw.classes,
                weights: &hw.weights,
                rows: hw.rows,
                cols: o,
            })?,
            Loss::Mse => be.run(Op::Mse {
                loss: &hw.loss_rows,
                dx: &hw.dlogits,
                pred: &hw.logits,
                target: &hw.values,
                weights: &hw.weights,
                rows: hw.rows,
                cols: o,
            })?,
        }
        be.run(Op::Reduce {
            out: &net.step_state,
            x: &hw.loss_rows,
            p: Reduce { index: step_state::LOSS, square: false, accumulate: false },
        })
    }

    /// Records the model-made initial state: the learned `rnn.h0` broadcast over the batch, or
    /// `tanh(v · init.weightᵀ + init.bias)` from the conditioning vectors, into `h0` (and `c0`).
    fn init_forward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &Workspace<B>) -> Result<()> {
        let spec = self.spec;
        let iw =
            ws.init.as_ref().ok_or_else(|| Error::invalid("forward", "this model makes no initial state"))?;
        let (b, h, rows) = (ws.batch, spec.hidden, spec.state_rows());
        let lookup = Gather { n: rows * b, width: h, idx_stride: h, col_stride: 1 };
        let targets = [("h", &ws.h0, &iw.h), ("c", &ws.c0.clone().unwrap_or_else(|| ws.h0.clone()), &iw.c)];
        for (which, dst, proj) in targets {
            if which == "c" && ws.c0.is_none() {
                continue;
            }
            match (spec.condition, proj) {
                (None, _) => be.run(Op::Gather {
                    out: dst,
                    table: &self.param(be, net, &format!("rnn.{which}0"))?,
                    idx: &iw.rows,
                    p: lookup,
                })?,
                (Some(c), Some((act, _, pre))) => {
                    let cond = ws
                        .condition
                        .as_ref()
                        .ok_or_else(|| Error::invalid("forward", "no condition buffer"))?;
                    let name = if which == "h" { "init" } else { "init_c" };
                    // The pre-activation goes through the gradient buffer, unused until backward.
                    let p = Matmul::new(b, rows * h, c).trans_b();
                    let (w, bias) = (
                        self.param(be, net, &format!("{name}.weight"))?,
                        self.param(be, net, &format!("{name}.bias"))?,
                    );
                    be.run(Op::Matmul { c: pre, a: cond, b: &w, bias: Some(&bias), p })?;
                    be.run(Op::TanhForward { y: act, x: pre })?;
                    be.run(Op::Gather { out: dst, table: act, idx: &iw.rows, p: lookup })?;
                }
                (Some(_), None) => return Err(Error::invalid("forward", "no conditioned state buffers")),
            }
        }
        Ok(())
    }
}
