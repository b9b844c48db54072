//! Backpropagation through time, through the head, every layer and direction, and the initial
//! state.

use super::*;

impl Graph<'_> {
    /// Records backpropagation through time. Gradients accumulate into `net.grads`: the caller
    /// clears them first (a model of several stacks backpropagates through each in turn).
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        net: &Net<B>,
        ws: &Workspace<B>,
        o: BackwardOpts,
    ) -> Result<()> {
        let spec = self.spec;
        let Dims { t_len, b, tb, bh, bs, g, h, dh } = self.dims(ws);
        let top = spec.layers - 1;

        if o.from_loss {
            let (head, hw) = match (spec.head, &ws.head) {
                (Some(h), Some(w)) => (h, w),
                _ => return Err(Error::invalid("backward", "the model has no head")),
            };
            let out = head.outputs;
            let top_y = &ws.layers[top].y;
            let top_dy = &ws.layers[top].dy;
            let (z, dz) = match &hw.z {
                None => (top_y.clone(), top_dy.clone()),
                Some((z, dz)) => (z.clone(), dz.clone()),
            };
            // With output dropout the head read the dropped input, and its gradient passes back
            // through the same mask.
            let dropped = hw.dropped.as_ref().filter(|_| o.train);
            let (z_in, dz_in) = match dropped {
                Some((zd, dzd)) => (zd.clone(), dzd.clone()),
                None => (z.clone(), dz.clone()),
            };
            be.run(Op::Matmul {
                c: &self.grad(be, net, "head.weight")?,
                a: &hw.dlogits,
                b: &z_in,
                p: Matmul::new(out, dh, hw.rows).trans_a().accumulate(),
                bias: None,
            })?;
            be.run(Op::BiasGrad {
                db: &self.grad(be, net, "head.bias")?,
                dy: &hw.dlogits,
                rows: hw.rows,
                cols: out,
                db2: None,
            })?;
            be.run(Op::Matmul {
                c: &dz_in,
                a: &hw.dlogits,
                b: &self.param(be, net, "head.weight")?,
                p: Matmul::new(hw.rows, dh, out),
                bias: None,
            })?;
            if dropped.is_some() {
                be.run(Op::Clear { x: &dz })?;
                be.run(Op::Dropout {
                    out: &dz,
                    x: &dz_in,
                    seeds: &ws.seeds,
                    p: self.output_dropout(),
                    backward: true,
                })?;
            }
            if let Some((_, starts, list)) = &hw.last {
                be.run(Op::Clear { x: top_dy })?;
                be.run(Op::ScatterAdd {
                    dtable: top_dy,
                    dout: &dz,
                    starts,
                    rows: list,
                    p: Gather { n: tb * spec.directions(), ..self.last_rows(b) },
                })?;
            }
        }

        let init_grad = o.init_grad || o.model_init;
        // An embedding learns from the gradient of the first layer's input.
        let embedded = matches!(spec.input, InputKind::Embedding { .. });
        for k in (0..spec.layers).rev() {
            let lw = &ws.layers[k];
            let i = spec.layer_input(k);
            // Where the gradient of this layer's input goes: the layer below's dy (through the
            // dropout buffer when dropout was applied), or the batch's input gradient.
            let dropped = k > 0 && o.train && spec.dropout > 0.0;
            let dx: Option<B::Buf> = if k > 0 {
                if dropped { lw.dx_drop.clone() } else { Some(ws.layers[k - 1].dy.clone()) }
            } else if o.input_grad || embedded {
                ws.d_input.clone()
            } else {
                None
            };
            let x: Option<B::Buf> = if k == 0 {
                ws.input.clone()
            } else if dropped {
                lw.x_drop.clone()
            } else {
                Some(ws.layers[k - 1].y.clone())
            };
            for (d, dw) in lw.dirs.iter().enumerate() {
                let w = self.weights(be, net, (k, d), dw, o.train)?;
                if w.weight_drop.is_some() {
                    be.run(Op::Clear { x: &w.dw_hh })?;
                }
                let rows = k * spec.directions() + d;
                let (h_chunk, c_chunk) = (rows * bs, rows * bh);
                let last = be.view(&dw.states, dw.state_base + self.final_slot(d, t_len) * bh, bh)?;
                let dhn = be.view(&ws.dhn, h_chunk, bs)?;
                let carry_h = be.view(&dw.carry, 0, bh)?;
                let proj = self.projection(dw, &w)?;
                match &proj {
                    None => be.run(Op::Copy { src: &dhn, dst: &carry_h })?,
                    Some(pj) => self.unproject_gradient(be, pj, &lw.dy, &dhn, &last, &carry_h, (b, tb, d))?,
                }
                match &ws.dcn {
                    Some(dcn) => be.run(Op::Copy {
                        src: &be.view(dcn, c_chunk, bh)?,
                        dst: &be.view(&dw.carry, bh, bh)?,
                    })?,
                    None => be.run(Op::Clear { x: &be.view(&dw.carry, bh, bh)? })?,
                }
                // The gate gradients at their exact size (the buffers are padded to whole vec4s).
                let dgx = be.view(&dw.dg, 0, tb * g * h)?;
                let dgh = be.view(dw.dgh.as_ref().unwrap_or(&dw.dg), 0, tb * g * h)?;
                let mut base = self.base_step(b, d, dw.state_base, w.bias_hh);
                let (w_hh, y, dy) = match &proj {
                    None => (&w.w_hh, &lw.y, &lw.dy),
                    Some(pj) => {
                        (base.out_stride, base.out_col) = (h, 0);
                        (&pj.ws.w_eff, &pj.ws.r, &pj.ws.dr)
                    }
                };
                let bufs = StepBufs::<B::Buf, B::IBuf> {
                    states: &dw.states,
                    cells: dw.cells.as_ref(),
                    gates: dw.gates.as_ref(),
                    y,
                    xw: &dw.xw,
                    xw_rows: None,
                    w_hh,
                    factors: proj.as_ref().and_then(|pj| self.factors(&w, pj)),
                    bias: &w.bias,
                    lengths: &ws.lengths,
                    dy: Some(dy),
                    dg: Some(&dw.dg),
                    dgh: dw.dgh.as_ref(),
                    carry: Some(&dw.carry),
                };
                let mut later: Option<usize> = None;
                for s in (0..t_len).rev() {
                    let t = self.time(d, s, t_len);
                    let (in_slot, out_slot) = self.slots(d, t);
                    let (next_t, mode) = match later {
                        None => (t, StepMode::First),
                        Some(n) => (n, StepMode::Later),
                    };
                    be.run(Op::Step {
                        cell: spec.cell,
                        bufs,
                        s: Step { t, in_slot, out_slot, next_t, mode, ..base },
                        backward: true,
                    })?;
                    later = Some(t);
                }
                let dh0 = be.view(&ws.dh0, h_chunk, bs)?;
                match &proj {
                    // The initial state entered through the first steps' input projections.
                    Some(pj) => {
                        self.project_initial_backward(be, &w, pj.ws, &dgh, init_grad.then_some(&dh0), b)?
                    }
                    None if init_grad => {
                        let next_t = later.unwrap_or(0);
                        be.run(Op::Step {
                            cell: spec.cell,
                            bufs,
                            s: Step { next_t, mode: StepMode::Initial, ..base },
                            backward: true,
                        })?;
                        be.run(Op::Copy { src: &carry_h, dst: &dh0 })?;
                    }
                    None => {}
                }
                if let (true, Some(dc0)) = (init_grad, &ws.dc0) {
                    be.run(Op::Copy { src: &be.view(&dw.carry, bh, bh)?, dst: &be.view(dc0, c_chunk, bh)? })?;
                }
                // The bias gradients, then the weight gradients: one GEMM each over all steps.
                // b_ih and b_hh enter the same sums except in the GRU (b_hn is inside r * (.)),
                // so elsewhere they get the same gradient, summed once.
                if dw.dgh.is_some() {
                    be.run(Op::BiasGrad { db: &w.db_ih, dy: &dgx, rows: tb, cols: g * h, db2: None })?;
                    be.run(Op::BiasGrad { db: &w.db_hh, dy: &dgh, rows: tb, cols: g * h, db2: None })?;
                } else {
                    be.run(Op::BiasGrad {
                        db: &w.db_ih,
                        db2: Some(&w.db_hh),
                        dy: &dgx,
                        rows: tb,
                        cols: g * h,
                    })?;
                }
                let hprev_start = if d == 0 { 0 } else { dw.state_base + bh };
                let hprev = be.view(&dw.states, hprev_start, tb * h)?;
                match (&x, &ws.tokens) {
                    (Some(x), _) => be.run(Op::Matmul {
                        c: &w.dw_ih,
                        a: &dgx,
                        b: x,
                        p: Matmul::new(g * h, i, tb).trans_a().accumulate(),
                        bias: None,
                    })?,
                    (None, Some((_, starts, list))) => {
                        let p = Gather { n: i, width: g * h, idx_stride: 1, col_stride: i };
                        be.run(Op::ScatterAdd { dtable: &w.dw_ih, dout: &dgx, starts, rows: list, p })?;
                    }
                    (None, None) => return Err(Error::invalid("backward", "the workspace has no input")),
                }
                match &proj {
                    None => be.run(Op::Matmul {
                        c: &w.dw_hh,
                        a: &dgh,
                        b: &hprev,
                        p: Matmul::new(g * h, h, tb).trans_a().accumulate(),
                        bias: None,
                    })?,
                    // W_eff = W_hh · W_hr: its gradient, then theirs through the product.
                    Some(Projected { ws: pw, w_hr, dw_hr }) => {
                        let p = spec.proj;
                        let p_eff = Matmul::new(g * h, h, tb).trans_a();
                        be.run(Op::Matmul { c: &pw.dw_eff, a: &dgh, b: &hprev, p: p_eff, bias: None })?;
                        let p_hh = Matmul::new(g * h, p, h).trans_b().accumulate();
                        be.run(Op::Matmul { c: &w.dw_hh, a: &pw.dw_eff, b: w_hr, p: p_hh, bias: None })?;
                        let p_hr = Matmul::new(p, h, g * h).trans_a().accumulate();
                        be.run(Op::Matmul { c: dw_hr, a: &w.w_hh, b: &pw.dw_eff, p: p_hr, bias: None })?;
                    }
                }
                self.drop_weights_backward(be, &w, &ws.seeds)?;
                if let Some(dx) = &dx {
                    let mut p = Matmul::new(tb, i, g * h);
                    p.accumulate = d > 0;
                    be.run(Op::Matmul { c: dx, a: &dgx, b: &w.w_ih, p, bias: None })?;
                }
            }
            if dropped {
                let below = &ws.layers[k - 1].dy;
                let dxd =
                    lw.dx_drop.as_ref().ok_or_else(|| Error::invalid("backward", "no dropout buffer"))?;
                be.run(Op::Clear { x: below })?;
                be.run(Op::Dropout {
                    out: below,
                    x: dxd,
                    seeds: &ws.seeds,
                    p: Dropout { prob: spec.dropout, salt: k as u32 },
                    backward: true,
                })?;
            }
        }

        if let (InputKind::Embedding { vocab, dim }, Some(dx), Some((_, starts, list))) =
            (spec.input, &ws.d_input, &ws.tokens)
        {
            let p = Gather { n: vocab, width: dim, idx_stride: dim, col_stride: 1 };
            let dtable = self.grad(be, net, "embedding.weight")?;
            be.run(Op::ScatterAdd { dtable: &dtable, dout: dx, starts, rows: list, p })?;
        }
        if o.model_init {
            self.init_backward(be, net, ws)?;
        }
        Ok(())
    }

    /// Records, for a projected layer (`ProjWs`), W_hr's gradient from the outputs and the final
    /// state, and the gradients those send to r: the steps' `dy` (`dr`) and the carry.
    #[allow(clippy::too_many_arguments)]
    fn unproject_gradient<B: Backend>(
        &self,
        be: &mut B,
        pj: &Projected<B>,
        layer_dy: &B::Buf,
        dhn: &B::Buf,
        last: &B::Buf,
        carry_h: &B::Buf,
        (b, tb, d): (usize, usize, usize),
    ) -> Result<()> {
        let (h, p) = (self.spec.hidden, self.spec.proj);
        let (pw, w_hr, dw_hr) = (pj.ws, pj.w_hr, pj.dw_hr);
        be.run(Op::CopyCols { y: &pw.h, x: layer_dy, p: self.direction_cols(tb, d, true) })?;
        be.run(Op::Matmul { c: &pw.dr, a: &pw.h, b: w_hr, p: Matmul::new(tb, h, p), bias: None })?;
        be.run(Op::Matmul {
            c: dw_hr,
            a: &pw.h,
            b: &pw.r,
            p: Matmul::new(p, h, tb).trans_a().accumulate(),
            bias: None,
        })?;
        be.run(Op::Copy { src: dhn, dst: &pw.last_h })?;
        be.run(Op::Copy { src: last, dst: &pw.last_r })?;
        be.run(Op::Matmul { c: carry_h, a: &pw.last_h, b: w_hr, p: Matmul::new(b, h, p), bias: None })?;
        let p_hr = Matmul::new(p, h, b).trans_a().accumulate();
        be.run(Op::Matmul { c: dw_hr, a: &pw.last_h, b: &pw.last_r, p: p_hr, bias: None })
    }

    /// Records, for a projected layer, the gradients through `W_hh · h0` (`project_initial`):
    /// W_hh's from the first steps' gate gradients, and `dh0` when asked.
    fn project_initial_backward<B: Backend>(
        &self,
        be: &mut B,
        w: &LayerViews<B>,
        pw: &ProjWs<B>,
        dg: &B::Buf,
        dh0: Option<&B::Buf>,
        b: usize,
    ) -> Result<()> {
        let (gh, p) = (self.spec.cell.gates() * self.spec.hidden, self.spec.proj);
        let (rows, _, _) = &pw.first_rows;
        let lookup = Gather { n: b, width: gh, idx_stride: gh, col_stride: 1 };
        be.run(Op::Gather { out: &pw.first, table: dg, idx: rows, p: lookup })?;
        let p_hh = Matmul::new(gh, p, b).trans_a().accumulate();
        be.run(Op::Matmul { c: &w.dw_hh, a: &pw.first, b: &pw.h0, p: p_hh, bias: None })?;
        if let Some(dh0) = dh0 {
            be.run(Op::Matmul {
                c: &pw.last_h,
                a: &pw.first,
                b: &w.w_hh,
                p: Matmul::new(b, p, gh),
                bias: None,
            })?;
            be.run(Op::Copy { src: &pw.last_h, dst: dh0 })?;
        }
        Ok(())
    }

    /// Records the gradients of the model-made initial state from `dh0` (and `dc0`).
    fn init_backward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &Workspace<B>) -> Result<()> {
        let spec = self.spec;
        let iw = ws
            .init
            .as_ref()
            .ok_or_else(|| Error::invalid("backward", "this model makes no initial state"))?;
        let (b, h, rows) = (ws.batch, spec.hidden, spec.state_rows());
        for (which, grad, proj) in [("h", Some(&ws.dh0), &iw.h), ("c", ws.dc0.as_ref(), &iw.c)] {
            let Some(grad) = grad else { continue };
            match (spec.condition, proj) {
                (None, _) => {
                    let p = Gather { n: rows, width: h, idx_stride: h, col_stride: 1 };
                    be.run(Op::ScatterAdd {
                        dtable: &self.grad(be, net, &format!("rnn.{which}0"))?,
                        dout: grad,
                        starts: &iw.starts,
                        rows: &iw.list,
                        p,
                    })?;
                }
                (Some(c), Some((act, dact, dpre))) => {
                    let cond = ws
                        .condition
                        .as_ref()
                        .ok_or_else(|| Error::invalid("backward", "no condition buffer"))?;
                    let name = if which == "h" { "init" } else { "init_c" };
                    be.run(Op::Clear { x: dact })?;
                    be.run(Op::ScatterAdd {
                        dtable: dact,
                        dout: grad,
                        starts: &iw.starts,
                        rows: &iw.list,
                        p: Gather { n: rows * b, width: h, idx_stride: h, col_stride: 1 },
                    })?;
                    be.run(Op::Clear { x: dpre })?;
                    be.run(Op::TanhBackward { dx: dpre, y: act, dy: dact })?;
                    let dw = self.grad(be, net, &format!("{name}.weight"))?;
                    be.run(Op::Matmul {
                        c: &dw,
                        a: dpre,
                        b: cond,
                        p: Matmul::new(rows * h, c, b).trans_a().accumulate(),
                        bias: None,
                    })?;
                    be.run(Op::BiasGrad {
                        db: &self.grad(be, net, &format!("{name}.bias"))?,
                        dy: dpre,
                        rows: b,
                        cols: rows * h,
                        db2: None,
                    })?;
                }
                (Some(_), None) => return Err(Error::invalid("backward", "no conditioned state buffers")),
            }
        }
        Ok(())
    }
}
