//! The encoder-decoder as a sequence of ops, written once for both devices like the single-stack
//! model (src/model/graph), whose stacks it reuses:
//!   source ids -> encoder.embedding -> encoder stack -> final states -> bridge -> decoder's
//!   initial states; target ids (shifted right, BOS first) -> decoder.embedding -> decoder stack
//!   -> (attention over the encoder's outputs) -> decoder.head -> softmax cross-entropy.
//! Backward runs the same path in reverse: the loss reaches the encoder through the attention (its
//! outputs) and through the bridge (its final states).

use super::Seq2SeqSpec;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::graph::{BackwardOpts, ForwardOpts, Graph, LayerWs, Net, Workspace};
use crate::model::params::ParamLayout;
use crate::model::spec::ModelSpec;
use crate::ops::{Attention, CopyCols, Gather, Matmul, Op, Reduce, step_state};

/// Attention buffers, all `[T_t * B, ...]`.
pub struct AttnWs<B: Backend> {
    q: B::Buf,
    scores: B::Buf,
    pub probs: B::Buf,
    ctx: B::Buf,
    z: B::Buf,
    pre: B::Buf,
    st: B::Buf,
    dq: B::Buf,
    dprobs: B::Buf,
    dscores: B::Buf,
    dctx: B::Buf,
    dz: B::Buf,
    dpre: B::Buf,
    dst: B::Buf,
    pub logits: B::Buf,
    dlogits: B::Buf,
    loss_rows: B::Buf,
    pub classes: B::IBuf,
    pub weights: B::Buf,
}

/// Token ids with the scatter lists of their embedding gradient.
pub struct Tokens<B: Backend> {
    pub ids: B::IBuf,
    pub starts: B::IBuf,
    pub list: B::IBuf,
}

pub struct S2sWs<B: Backend> {
    pub src_steps: usize,
    pub tgt_steps: usize,
    pub batch: usize,
    pub enc: Workspace<B>,
    pub dec: Workspace<B>,
    pub src: Tokens<B>,
    pub tgt: Tokens<B>,
    bridge_in: B::Buf,
    bridge_out: B::Buf,
    dbridge_out: B::Buf,
    dbridge_in: B::Buf,
    pub attn: Option<AttnWs<B>>,
    /// Beam search: the decoder state rows to keep, and a scratch for the reorder.
    pub parents: B::IBuf,
    reorder: B::Buf,
}

pub struct S2sGraph<'a> {
    pub spec: &'a Seq2SeqSpec,
    pub layout: &'a ParamLayout,
    pub enc_spec: ModelSpec,
    pub dec_spec: ModelSpec,
}

fn tokens<B: Backend>(be: &mut B, what: &str, n: usize, vocab: usize) -> Result<Tokens<B>> {
    Ok(Tokens {
        ids: be.alloc_u32(what, n)?,
        starts: be.alloc_u32(what, vocab + 1)?,
        list: be.alloc_u32(what, n)?,
    })
}

impl<'a> S2sGraph<'a> {
    pub fn new(spec: &'a Seq2SeqSpec, layout: &'a ParamLayout) -> S2sGraph<'a> {
        S2sGraph { spec, layout, enc_spec: spec.encoder(), dec_spec: spec.decoder() }
    }

    fn enc(&self) -> Graph<'_> {
        Graph { spec: &self.enc_spec, layout: self.layout, prefix: "encoder." }
    }

    fn dec(&self) -> Graph<'_> {
        Graph { spec: &self.dec_spec, layout: self.layout, prefix: "decoder." }
    }

    fn param<B: Backend>(&self, be: &B, net: &Net<B>, name: &str) -> Result<B::Buf> {
        let e = self.layout.get(name)?;
        be.view(&net.params, e.offset, e.len())
    }

    fn grad<B: Backend>(&self, be: &B, net: &Net<B>, name: &str) -> Result<B::Buf> {
        let e = self.layout.get(name)?;
        be.view(&net.grads, e.offset, e.len())
    }

    pub fn workspace<B: Backend>(
        &self,
        be: &mut B,
        src_steps: usize,
        tgt_steps: usize,
        batch: usize,
    ) -> Result<S2sWs<B>> {
        let s = self.spec;
        let (a, hd, b) = (s.enc_output(), s.dec_hidden, batch);
        let rows = tgt_steps * b;
        let attn = if s.attention {
            let alloc = |be: &mut B, what: &str, n: usize| be.alloc(what, n);
            Some(AttnWs {
                q: alloc(be, "attention query", rows * a)?,
                scores: alloc(be, "attention scores", rows * src_steps)?,
                probs: alloc(be, "attention weights", rows * src_steps)?,
                ctx: alloc(be, "attention context", rows * a)?,
                z: alloc(be, "context and state", rows * (a + hd))?,
                pre: alloc(be, "attentional pre-activation", rows * hd)?,
                st: alloc(be, "attentional state", rows * hd)?,
                dq: alloc(be, "query gradient", rows * a)?,
                dprobs: alloc(be, "weights gradient", rows * src_steps)?,
                dscores: alloc(be, "scores gradient", rows * src_steps)?,
                dctx: alloc(be, "context gradient", rows * a)?,
                dz: alloc(be, "context and state gradient", rows * (a + hd))?,
                dpre: alloc(be, "pre-activation gradient", rows * hd)?,
                dst: alloc(be, "attentional state gradient", rows * hd)?,
                logits: alloc(be, "logits", rows * s.tgt_vocab)?,
                dlogits: alloc(be, "logits gradient", rows * s.tgt_vocab)?,
                loss_rows: alloc(be, "row losses", rows)?,
                classes: be.alloc_u32("targets", rows)?,
                weights: alloc(be, "loss weights", rows)?,
            })
        } else {
            None
        };
        let states = self.dec_spec.state_rows() * b * hd;
        Ok(S2sWs {
            src_steps,
            tgt_steps,
            batch,
            enc: self.enc().workspace(be, src_steps, batch)?,
            dec: self.dec().workspace(be, tgt_steps, batch)?,
            src: tokens(be, "source tokens", src_steps * b, s.src_vocab)?,
            tgt: tokens(be, "target tokens", rows, s.tgt_vocab)?,
            bridge_in: be.alloc("bridge input", b * a)?,
            bridge_out: be.alloc("bridge output", b * hd)?,
            dbridge_out: be.alloc("bridge output gradient", b * hd)?,
            dbridge_in: be.alloc("bridge input gradient", b * a)?,
            attn,
            parents: be.alloc_u32("beam parents", self.dec_spec.state_rows() * b)?,
            reorder: be.alloc("beam reorder", states)?,
        })
    }

    /// The encoder's final states of layer `k` as `[B, D*He]` rows in `bridge_in` (directions
    /// side by side), from `states` (`hn` or `cn`).
    fn gather_final<B: Backend>(&self, be: &mut B, ws: &S2sWs<B>, states: &B::Buf, k: usize) -> Result<()> {
        let (he, d, b) = (self.spec.enc_hidden, self.enc_spec.directions(), ws.batch);
        for dir in 0..d {
            let p = CopyCols {
                rows: b,
                width: he,
                y_stride: d * he,
                y_offset: dir * he,
                x_stride: he,
                x_offset: (k * d + dir) * b * he,
                accumulate: false,
            };
            be.run(Op::CopyCols { y: &ws.bridge_in, x: states, p })?;
        }
        Ok(())
    }

    /// Decoder layer `l` starts from encoder layer `min(l, Le - 1)`.
    fn source_layer(&self, l: usize) -> usize {
        l.min(self.spec.enc_layers - 1)
    }

    fn bridge_forward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>) -> Result<()> {
        let (hd, b) = (self.spec.dec_hidden, ws.batch);
        let lstm = ws.dec.c0.is_some();
        for which in 0..(1 + lstm as usize) {
            let (src, dst, name) = if which == 0 {
                (&ws.enc.hn, &ws.dec.h0, "bridge")
            } else {
                let cn =
                    ws.enc.cn.as_ref().ok_or_else(|| Error::invalid("bridge", "no encoder cell state"))?;
                let c0 =
                    ws.dec.c0.as_ref().ok_or_else(|| Error::invalid("bridge", "no decoder cell state"))?;
                (cn, c0, "bridge_c")
            };
            for l in 0..self.spec.dec_layers {
                self.gather_final(be, ws, src, self.source_layer(l))?;
                let from = if self.spec.bridged() {
                    let p = Matmul::new(b, hd, self.spec.enc_output()).trans_b();
                    be.run(Op::Matmul {
                        c: &ws.bridge_out,
                        a: &ws.bridge_in,
                        b: &self.param(be, net, &format!("{name}.weight"))?,
                        bias: Some(&self.param(be, net, &format!("{name}.bias"))?),
                        p,
                    })?;
                    &ws.bridge_out
                } else {
                    &ws.bridge_in
                };
                be.run(Op::CopyCols { y: dst, x: from, p: CopyCols::flat(b * hd, l * b * hd, 0, false) })?;
            }
        }
        Ok(())
    }

    fn bridge_backward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>) -> Result<()> {
        let (he, d, hd, b) =
            (self.spec.enc_hidden, self.enc_spec.directions(), self.spec.dec_hidden, ws.batch);
        let a = self.spec.enc_output();
        let lstm = ws.dec.dc0.is_some();
        for which in 0..(1 + lstm as usize) {
            let (dstate, dsrc, src, name) = if which == 0 {
                (&ws.dec.dh0, &ws.enc.dhn, &ws.enc.hn, "bridge")
            } else {
                let dc0 =
                    ws.dec.dc0.as_ref().ok_or_else(|| Error::invalid("bridge", "no cell state gradient"))?;
                let dcn =
                    ws.enc.dcn.as_ref().ok_or_else(|| Error::invalid("bridge", "no cell state gradient"))?;
                let cn = ws.enc.cn.as_ref().ok_or_else(|| Error::invalid("bridge", "no cell state"))?;
                (dc0, dcn, cn, "bridge_c")
            };
            be.run(Op::Clear { x: dsrc })?;
            for l in 0..self.spec.dec_layers {
                let k = self.source_layer(l);
                be.run(Op::CopyCols {
                    y: &ws.dbridge_out,
                    x: dstate,
                    p: CopyCols::flat(b * hd, 0, l * b * hd, false),
                })?;
                let dfrom = if self.spec.bridged() {
                    self.gather_final(be, ws, src, k)?;
                    let dw = self.grad(be, net, &format!("{name}.weight"))?;
                    be.run(Op::Matmul {
                        c: &dw,
                        a: &ws.dbridge_out,
                        b: &ws.bridge_in,
                        p: Matmul::new(hd, a, b).trans_a().accumulate(),
                        bias: None,
                    })?;
                    be.run(Op::BiasGrad {
                        db: &self.grad(be, net, &format!("{name}.bias"))?,
                        dy: &ws.dbridge_out,
                        rows: b,
                        cols: hd,
                        db2: None,
                    })?;
                    let w = self.param(be, net, &format!("{name}.weight"))?;
                    be.run(Op::Matmul {
                        c: &ws.dbridge_in,
                        a: &ws.dbridge_out,
                        b: &w,
                        p: Matmul::new(b, a, hd),
                        bias: None,
                    })?;
                    &ws.dbridge_in
                } else {
                    &ws.dbridge_out
                };
                for dir in 0..d {
                    let p = CopyCols {
                        rows: b,
                        width: he,
                        y_stride: he,
                        y_offset: (k * d + dir) * b * he,
                        x_stride: a,
                        x_offset: dir * he,
                        accumulate: true,
                    };
                    be.run(Op::CopyCols { y: dsrc, x: dfrom, p })?;
                }
            }
        }
        Ok(())
    }

    /// The attention's sizes, the two layer outputs it joins, and its buffers.
    fn attention<'w, B: Backend>(&self, ws: &'w S2sWs<B>) -> Result<Joined<'w, B>> {
        let s = self.spec;
        let (a, hd, rows) = (s.enc_output(), s.dec_hidden, ws.tgt_steps * ws.batch);
        let aw = ws.attn.as_ref().ok_or_else(|| Error::invalid("attention", "no attention buffers"))?;
        Ok(Joined {
            a,
            hd,
            rows,
            dims: Attention { tgt: ws.tgt_steps, batch: ws.batch, src: ws.src_steps, width: a },
            dec: &ws.dec.layers[s.dec_layers - 1],
            enc: &ws.enc.layers[s.enc_layers - 1],
            aw,
        })
    }

    fn attention_forward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>) -> Result<()> {
        let Joined { a, hd, rows, dims, dec, enc, aw } = self.attention(ws)?;
        let (top_dec, enc_y) = (&dec.y, &enc.y);
        be.run(Op::Matmul {
            c: &aw.q,
            a: top_dec,
            b: &self.param(be, net, "attention.w_a")?,
            p: Matmul::new(rows, a, hd),
            bias: None,
        })?;
        be.run(Op::AttentionDots {
            out: &aw.scores,
            x: &aw.q,
            enc: enc_y,
            src_len: &ws.enc.lengths,
            a: dims,
            mask: true,
        })?;
        be.run(Op::SoftmaxRows { y: &aw.probs, x: &aw.scores, rows, cols: ws.src_steps })?;
        be.run(Op::AttentionMix {
            out: &aw.ctx,
            w: &aw.probs,
            x: enc_y,
            a: dims,
            accumulate: false,
            transposed: false,
        })?;
        be.run(Op::CopyCols { y: &aw.z, x: &aw.ctx, p: CopyCols::columns(rows, a + hd, (a, 0), false) })?;
        be.run(Op::CopyCols { y: &aw.z, x: top_dec, p: CopyCols::columns(rows, a + hd, (hd, a), false) })?;
        be.run(Op::Matmul {
            c: &aw.pre,
            a: &aw.z,
            b: &self.param(be, net, "attention.w_c")?,
            p: Matmul::new(rows, hd, a + hd).trans_b(),
            bias: None,
        })?;
        be.run(Op::TanhForward { y: &aw.st, x: &aw.pre })?;
        be.run(Op::Matmul {
            c: &aw.logits,
            a: &aw.st,
            b: &self.param(be, net, "decoder.head.weight")?,
            bias: Some(&self.param(be, net, "decoder.head.bias")?),
            p: Matmul::new(rows, self.spec.tgt_vocab, hd).trans_b(),
        })
    }

    fn attention_backward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>) -> Result<()> {
        let Joined { a, hd, rows, dims, dec, enc, aw } = self.attention(ws)?;
        let v = self.spec.tgt_vocab;
        let (top_dec, top_ddec, enc_y, enc_dy) = (&dec.y, &dec.dy, &enc.y, &enc.dy);
        let head_w = self.param(be, net, "decoder.head.weight")?;
        be.run(Op::Matmul {
            c: &self.grad(be, net, "decoder.head.weight")?,
            a: &aw.dlogits,
            b: &aw.st,
            p: Matmul::new(v, hd, rows).trans_a().accumulate(),
            bias: None,
        })?;
        be.run(Op::BiasGrad {
            db: &self.grad(be, net, "decoder.head.bias")?,
            dy: &aw.dlogits,
            rows,
            cols: v,
            db2: None,
        })?;
        be.run(Op::Matmul {
            c: &aw.dst,
            a: &aw.dlogits,
            b: &head_w,
            p: Matmul::new(rows, hd, v),
            bias: None,
        })?;
        be.run(Op::Clear { x: &aw.dpre })?;
        be.run(Op::TanhBackward { dx: &aw.dpre, y: &aw.st, dy: &aw.dst })?;
        let w_c = self.param(be, net, "attention.w_c")?;
        be.run(Op::Matmul {
            c: &self.grad(be, net, "attention.w_c")?,
            a: &aw.dpre,
            b: &aw.z,
            p: Matmul::new(hd, a + hd, rows).trans_a().accumulate(),
            bias: None,
        })?;
        be.run(Op::Matmul { c: &aw.dz, a: &aw.dpre, b: &w_c, p: Matmul::new(rows, a + hd, hd), bias: None })?;
        be.run(Op::CopyCols { y: &aw.dctx, x: &aw.dz, p: CopyCols::columns(rows, a + hd, (a, 0), true) })?;
        be.run(Op::CopyCols { y: top_ddec, x: &aw.dz, p: CopyCols::columns(rows, a + hd, (hd, a), true) })?;
        be.run(Op::AttentionDots {
            out: &aw.dprobs,
            x: &aw.dctx,
            enc: enc_y,
            src_len: &ws.enc.lengths,
            a: dims,
            mask: false,
        })?;
        be.run(Op::AttentionMix {
            out: enc_dy,
            w: &aw.probs,
            x: &aw.dctx,
            a: dims,
            accumulate: false,
            transposed: true,
        })?;
        be.run(Op::SoftmaxBackward {
            dx: &aw.dscores,
            y: &aw.probs,
            dy: &aw.dprobs,
            rows,
            cols: ws.src_steps,
        })?;
        be.run(Op::AttentionMix {
            out: &aw.dq,
            w: &aw.dscores,
            x: enc_y,
            a: dims,
            accumulate: false,
            transposed: false,
        })?;
        be.run(Op::AttentionMix {
            out: enc_dy,
            w: &aw.dscores,
            x: &aw.q,
            a: dims,
            accumulate: true,
            transposed: true,
        })?;
        let w_a = self.param(be, net, "attention.w_a")?;
        be.run(Op::Matmul {
            c: &self.grad(be, net, "attention.w_a")?,
            a: top_dec,
            b: &aw.dq,
            p: Matmul::new(hd, a, rows).trans_a().accumulate(),
            bias: None,
        })?;
        be.run(Op::Matmul {
            c: top_ddec,
            a: &aw.dq,
            b: &w_a,
            p: Matmul::new(rows, hd, a).trans_b().accumulate(),
            bias: None,
        })
    }

    fn embed<B: Backend>(
        &self,
        be: &mut B,
        net: &Net<B>,
        out: &B::Buf,
        t: &Tokens<B>,
        name: &str,
        n: usize,
    ) -> Result<()> {
        let e = self.spec.embed;
        be.run(Op::Gather {
            out,
            table: &self.param(be, net, name)?,
            idx: &t.ids,
            p: Gather { n, width: e, idx_stride: e, col_stride: 1 },
        })
    }

    /// Records the encoder (from zero states) and the bridge into the decoder's initial states.
    pub fn encode<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>, fo: ForwardOpts) -> Result<()> {
        be.run(Op::Clear { x: &ws.enc.h0 })?;
        if let Some(c0) = &ws.enc.c0 {
            be.run(Op::Clear { x: c0 })?;
        }
        let input =
            ws.enc.input.as_ref().ok_or_else(|| Error::invalid("encode", "no encoder input buffer"))?;
        self.embed(be, net, input, &ws.src, "encoder.embedding.weight", ws.src_steps * ws.batch)?;
        self.enc().forward(be, net, &ws.enc, fo)?;
        self.bridge_forward(be, net, ws)
    }

    /// Records the decoder over its target steps from its current initial states, then the
    /// attention and the head: the logits.
    pub fn decode<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>, fo: ForwardOpts) -> Result<()> {
        let input =
            ws.dec.input.as_ref().ok_or_else(|| Error::invalid("decode", "no decoder input buffer"))?;
        self.embed(be, net, input, &ws.tgt, "decoder.embedding.weight", ws.tgt_steps * ws.batch)?;
        self.dec().forward(be, net, &ws.dec, fo)?;
        if ws.attn.is_some() {
            self.attention_forward(be, net, ws)?;
        }
        Ok(())
    }

    /// Records the loss into the step state.
    pub fn loss<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>) -> Result<()> {
        match &ws.attn {
            None => self.dec().loss(be, net, &ws.dec),
            Some(aw) => {
                let rows = ws.tgt_steps * ws.batch;
                be.run(Op::SoftmaxXent {
                    loss: &aw.loss_rows,
                    dx: &aw.dlogits,
                    logits: &aw.logits,
                    targets: &aw.classes,
                    weights: &aw.weights,
                    rows,
                    cols: self.spec.tgt_vocab,
                })?;
                be.run(Op::Reduce {
                    out: &net.step_state,
                    x: &aw.loss_rows,
                    p: Reduce { index: step_state::LOSS, square: false, accumulate: false },
                })
            }
        }
    }

    /// Records backpropagation from the loss through the decoder, the attention, the bridge and
    /// the encoder, into both embeddings. Clears the gradients first.
    pub fn backward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &S2sWs<B>, train: bool) -> Result<()> {
        let s = self.spec;
        be.run(Op::Clear { x: &net.grads })?;
        let enc_dy = &ws.enc.layers[s.enc_layers - 1].dy;
        match ws.attn.is_some() {
            true => self.attention_backward(be, net, ws)?,
            false => be.run(Op::Clear { x: enc_dy })?,
        }
        let opts = |from_loss| BackwardOpts {
            train,
            from_loss,
            input_grad: true,
            init_grad: true,
            model_init: false,
        };
        self.dec().backward(be, net, &ws.dec, opts(ws.attn.is_none()))?;
        let d_in =
            ws.dec.d_input.as_ref().ok_or_else(|| Error::invalid("backward", "no decoder input gradient"))?;
        let e = s.embed;
        let p = |n| Gather { n, width: e, idx_stride: e, col_stride: 1 };
        be.run(Op::ScatterAdd {
            dtable: &self.grad(be, net, "decoder.embedding.weight")?,
            dout: d_in,
            starts: &ws.tgt.starts,
            rows: &ws.tgt.list,
            p: p(s.tgt_vocab),
        })?;
        self.bridge_backward(be, net, ws)?;
        self.enc().backward(be, net, &ws.enc, BackwardOpts { init_grad: false, ..opts(false) })?;
        let d_in =
            ws.enc.d_input.as_ref().ok_or_else(|| Error::invalid("backward", "no encoder input gradient"))?;
        be.run(Op::ScatterAdd {
            dtable: &self.grad(be, net, "encoder.embedding.weight")?,
            dout: d_in,
            starts: &ws.src.starts,
            rows: &ws.src.list,
            p: p(s.src_vocab),
        })
    }

    /// Beam search: keeps the decoder states of the rows in `parents` (row i takes row
    /// `parents[i]`'s state), in place.
    pub fn reorder<B: Backend>(&self, be: &mut B, ws: &S2sWs<B>) -> Result<()> {
        let hd = self.spec.dec_hidden;
        let p = Gather { n: self.dec_spec.state_rows() * ws.batch, width: hd, idx_stride: hd, col_stride: 1 };
        for state in [Some(&ws.dec.h0), ws.dec.c0.as_ref()].into_iter().flatten() {
            be.run(Op::Gather { out: &ws.reorder, table: state, idx: &ws.parents, p })?;
            be.run(Op::Copy { src: &ws.reorder, dst: state })?;
        }
        Ok(())
    }
}

/// What the attention joins, and its buffers: the top decoder layer's outputs (`rows` = T_tgt·B of `hd`) with the
/// top encoder layer's (`a` wide), over `dims`.
struct Joined<'w, B: Backend> {
    a: usize,
    hd: usize,
    rows: usize,
    dims: Attention,
    dec: &'w LayerWs<B>,
    enc: &'w LayerWs<B>,
    aw: &'w AttnWs<B>,
}
