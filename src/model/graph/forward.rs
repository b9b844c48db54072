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
        let Dims { t_len, b, tb, bh, bs, g, h, dh } = self.dims(ws);

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
                let w = self.weights(be, net, (k, d), dw, o.train)?;
                self.drop_weights(be, &w, &ws.seeds)?;
                match (&x, &ws.tokens) {
                    (Some(x), _) => be.run(Op::Matmul {
                        c: &dw.xw,
                        a: x,
                        b: &w.w_ih,
                        p: Matmul::new(tb, g * h, i).trans_b(),
                        bias: None,
                    })?,
                    (None, Some((tokens, _, _))) => {
                        // Row r of W_ihᵀ, or of the projection, is column `idx[r]` of W_ih.
                        let (out, idx, n) = match &dw.table {
                            Some((table, list)) => (table, list, B::ilen(list)),
                            None => (&dw.xw, tokens, tb),
                        };
                        let p = Gather { n, width: g * h, idx_stride: 1, col_stride: i };
                        be.run(Op::Gather { out, table: &w.w_ih, idx, p })?;
                    }
                    (None, None) => return Err(Error::invalid("forward", "the workspace has no input")),
                }
                let rows = k * spec.directions() + d;
                let (h_chunk, c_chunk) = (rows * bs, rows * bh);
                let first = dw.state_base + self.first_slot(d, t_len) * bh;
                let h0 = be.view(&ws.h0, h_chunk, bs)?;
                let proj = self.projection(dw, &w)?;
                let first_state = be.view(&dw.states, first, bh)?;
                match &proj {
                    None => be.run(Op::Copy { src: &h0, dst: &first_state })?,
                    Some(pj) => self.project_initial(be, &w, &dw.xw, pj, &h0, &first_state, (b, tb))?,
                }
                if let (Some(c0), Some(cells)) = (&ws.c0, &dw.cells) {
                    be.run(Op::Copy { src: &be.view(c0, c_chunk, bh)?, dst: &be.view(cells, first, bh)? })?;
                }
                let mut base = self.base_step(b, d, dw.state_base, w.bias_hh);
                // A projected layer's steps output r into a buffer of their own (ProjWs).
                let (w_hh, y) = match &proj {
                    None => (&w.w_hh, &lw.y),
                    Some(pj) => {
                        (base.out_stride, base.out_col) = (h, 0);
                        (&pj.ws.w_eff, &pj.ws.r)
                    }
                };
                let factors = proj.as_ref().and_then(|pj| self.factors(&w, pj));
                let bufs = StepBufs::<B::Buf, B::IBuf> {
                    states: &dw.states,
                    cells: dw.cells.as_ref(),
                    gates: if o.keep { dw.gates.as_ref() } else { None },
                    y,
                    xw: dw.table.as_ref().map_or(&dw.xw, |(table, _)| table),
                    xw_rows: dw.table.as_ref().and(ws.tokens.as_ref()).map(|(tokens, _, _)| tokens),
                    w_hh,
                    factors,
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
                let final_at = dw.state_base + self.final_slot(d, t_len) * bh;
                let last = be.view(&dw.states, final_at, bh)?;
                let hn = be.view(&ws.hn, h_chunk, bs)?;
                match &proj {
                    None => be.run(Op::Copy { src: &last, dst: &hn })?,
                    Some(pj) => {
                        // h = r · W_hrᵀ: the outputs of all steps, and the final state.
                        let (p, pw) = (spec.proj, pj.ws);
                        let p_out = Matmul::new(tb, p, h).trans_b();
                        be.run(Op::Matmul { c: &pw.h, a: &pw.r, b: pj.w_hr, p: p_out, bias: None })?;
                        be.run(Op::CopyCols { y: &lw.y, x: &pw.h, p: self.direction_cols(tb, d, false) })?;
                        be.run(Op::Copy { src: &last, dst: &pw.last_r })?;
                        let p_hn = Matmul::new(b, p, h).trans_b();
                        be.run(Op::Matmul { c: &pw.last_h, a: &pw.last_r, b: pj.w_hr, p: p_hn, bias: None })?;
                        be.run(Op::Copy { src: &pw.last_h, dst: &hn })?;
                    }
                }
                if let (Some(cn), Some(cells)) = (&ws.cn, &dw.cells) {
                    be.run(Op::Copy {
                        src: &be.view(cells, final_at, bh)?,
                        dst: &be.view(cn, c_chunk, bh)?,
                    })?;
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

    /// Records a projected layer's start (see `ProjWs`): `W_eff = W_hh · W_hr` where the device's
    /// steps read it, the steps from r = 0, and `W_hh · h0` added to the input projection of each
    /// sequence's first step.
    #[allow(clippy::too_many_arguments)]
    fn project_initial<B: Backend>(
        &self,
        be: &mut B,
        w: &LayerViews<B>,
        xw: &B::Buf,
        pj: &Projected<B>,
        h0: &B::Buf,
        first_state: &B::Buf,
        (b, tb): (usize, usize),
    ) -> Result<()> {
        let (gh, h, p) = (self.spec.cell.gates() * self.spec.hidden, self.spec.hidden, self.spec.proj);
        let (pw, w_hr) = (pj.ws, pj.w_hr);
        if self.factors(w, pj).is_none() {
            be.run(Op::Matmul {
                c: &be.view(&pw.w_eff, 0, gh * h)?,
                a: &w.w_hh,
                b: w_hr,
                p: Matmul::new(gh, h, p),
                bias: None,
            })?;
        }
        be.run(Op::Clear { x: first_state })?;
        be.run(Op::Copy { src: h0, dst: &pw.h0 })?;
        be.run(Op::Matmul {
            c: &pw.first,
            a: &pw.h0,
            b: &w.w_hh,
            p: Matmul::new(b, gh, p).trans_b(),
            bias: None,
        })?;
        let (_, starts, list) = &pw.first_rows;
        let scatter = Gather { n: tb, width: gh, idx_stride: gh, col_stride: 1 };
        be.run(Op::ScatterAdd { dtable: xw, dout: &pw.first, starts, rows: list, p: scatter })
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
