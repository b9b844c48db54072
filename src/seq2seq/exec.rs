//! The encoder-decoder's programs on the shared executor (`crate::exec`): batches of pairs
//! padded time-major, their workspaces of `(source steps, target steps, B)` shapes, training,
//! evaluation, and the one-step programs of decoding.

use super::Seq2SeqSpec;
use super::graph::{self, S2sGraph, S2sWs};
use crate::backend::{Backend, Variant};
use crate::error::{Error, Result};
use crate::exec::{Executor, Shape, record_update, to_elem};
use crate::model::graph::ForwardOpts;
use crate::model::params::ParamLayout;
use crate::ops::index_lists;
use crate::update::{Clip, Optimizer};

/// A batch of (source, target) id sequences, padded and time-major, with what the kernels need.
struct Prepared {
    src_steps: usize,
    tgt_steps: usize,
    batch: usize,
    src: Vec<u32>,
    src_len: Vec<u32>,
    /// BOS, then the target: what the decoder reads.
    dec_in: Vec<u32>,
    /// The target, then EOS: what it must predict.
    targets: Vec<u32>,
    tgt_len: Vec<u32>,
    weights: Vec<f32>,
}

impl Prepared {
    fn shape(&self) -> Shape {
        shape(self.src_steps, self.tgt_steps, self.batch)
    }
}

fn check_ids(what: &str, seqs: &[Vec<u32>], vocab: usize) -> Result<()> {
    for (i, s) in seqs.iter().enumerate() {
        if let Some(&id) = s.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::range(
                "seq2seq",
                format!("{what} id in sequence {i}"),
                id,
                format!("below the vocabulary size {vocab}"),
            ));
        }
    }
    Ok(())
}

fn pad_time_major(seqs: &[Vec<u32>], steps: usize) -> Vec<u32> {
    let b = seqs.len();
    let mut out = vec![0u32; steps * b];
    for (j, s) in seqs.iter().enumerate() {
        for (t, &id) in s.iter().enumerate() {
            out[t * b + j] = id;
        }
    }
    out
}

fn prepare_sources(spec: &Seq2SeqSpec, src: &[Vec<u32>]) -> Result<(usize, Vec<u32>, Vec<u32>)> {
    if src.is_empty() {
        return Err(Error::invalid("seq2seq", "an empty batch"));
    }
    if let Some(i) = src.iter().position(|s| s.is_empty()) {
        return Err(Error::invalid("seq2seq", format!("source sequence {i} is empty")));
    }
    check_ids("source", src, spec.src_vocab)?;
    let steps = src.iter().map(|s| s.len()).max().unwrap_or(1);
    Ok((steps, pad_time_major(src, steps), src.iter().map(|s| s.len() as u32).collect()))
}

fn prepare(spec: &Seq2SeqSpec, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Prepared> {
    let src: Vec<Vec<u32>> = pairs.iter().map(|p| p.0.clone()).collect();
    let tgt: Vec<Vec<u32>> = pairs.iter().map(|p| p.1.clone()).collect();
    let (src_steps, src_ids, src_len) = prepare_sources(spec, &src)?;
    check_ids("target", &tgt, spec.tgt_vocab)?;
    let b = pairs.len();
    let tgt_steps = tgt.iter().map(|t| t.len() + 1).max().unwrap_or(1);
    let dec_in: Vec<Vec<u32>> =
        tgt.iter().map(|t| std::iter::once(spec.bos).chain(t.iter().copied()).collect()).collect();
    let targets: Vec<Vec<u32>> =
        tgt.iter().map(|t| t.iter().copied().chain(std::iter::once(spec.eos)).collect()).collect();
    let tgt_len: Vec<u32> = targets.iter().map(|t| t.len() as u32).collect();
    let count: u32 = tgt_len.iter().sum();
    let weights = (0..tgt_steps * b)
        .map(|r| if ((r / b) as u32) < tgt_len[r % b] { 1.0 / count as f32 } else { 0.0 })
        .collect();
    Ok(Prepared {
        src_steps,
        tgt_steps,
        batch: b,
        src: src_ids,
        src_len,
        dec_in: pad_time_major(&dec_in, tgt_steps),
        targets: pad_time_major(&targets, tgt_steps),
        tgt_len,
        weights,
    })
}

/// The executor of an encoder-decoder: its workspaces are `S2sWs`s of
/// `(source steps, target steps, B)` shapes.
pub type S2sExec<B> = Executor<B, S2sWs<B>>;

const TRAIN: &str = "seq2seq train";
const TRAIN_GRAD: &str = "seq2seq train gradient";
const EVALUATE: &str = "seq2seq evaluate";
const LOSS_GRAD: &str = "seq2seq loss gradient";
const ENCODE: &str = "seq2seq encode";
const STEP: &str = "seq2seq step";
const REORDER: &str = "seq2seq reorder";

/// Encoding and decoding for inference: no dropout, nothing kept for a backward pass.
const INFER: ForwardOpts = ForwardOpts { train: false, keep: false, model_init: false };

fn shape(src: usize, tgt: usize, batch: usize) -> Shape {
    Shape { steps: src, tgt_steps: tgt, batch }
}

impl<B: Backend> S2sExec<B> {
    fn workspace(&mut self, graph: &S2sGraph<'_>, s: Shape) -> Result<()> {
        self.ensure(s, |be, _| graph.workspace(be, s.steps, s.tgt_steps, s.batch))
    }

    fn write_tokens(be: &mut B, t: &graph::Tokens<B>, ids: &[u32], vocab: usize) -> Result<()> {
        be.write_u32(&t.ids, ids)?;
        let (s, l) = index_lists(ids, vocab);
        be.write_u32(&t.starts, &s)?;
        be.write_u32(&t.list, &l)
    }

    fn upload(&mut self, spec: &Seq2SeqSpec, p: &Prepared) -> Result<()> {
        let (be, ws) = self.with_ws(p.shape())?;
        Self::write_tokens(be, &ws.src, &p.src, spec.src_vocab)?;
        Self::write_tokens(be, &ws.tgt, &p.dec_in, spec.tgt_vocab)?;
        be.write_u32(&ws.enc.lengths, &p.src_len)?;
        be.write_u32(&ws.dec.lengths, &p.tgt_len)?;
        let (classes, weights) = match (&ws.attn, &ws.dec.head) {
            (Some(a), _) => (&a.classes, &a.weights),
            (None, Some(h)) => (&h.classes, &h.weights),
            (None, None) => return Err(Error::invalid("seq2seq", "the decoder has no head")),
        };
        be.write_u32(classes, &p.targets)?;
        be.write(weights, &to_elem(&p.weights))
    }

    fn write_seed(&mut self, p: &Prepared, seed: u32) -> Result<()> {
        let (be, ws) = self.with_ws(p.shape())?;
        be.write_u32(&ws.enc.seeds, &[seed])?;
        be.write_u32(&ws.dec.seeds, &[seed ^ 0x9e37_79b9])
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_step(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        pairs: &[(Vec<u32>, Vec<u32>)],
        opt: &Optimizer,
        clip: Clip,
        seed: u32,
        update: bool,
    ) -> Result<usize> {
        let p = prepare(spec, pairs)?;
        let graph = S2sGraph::new(spec, layout);
        if update {
            self.prepare_update(layout, opt)?;
        }
        self.workspace(&graph, p.shape())?;
        self.upload(spec, &p)?;
        self.write_seed(&p, seed)?;
        let variant = Variant { train: true, ..Variant::default() };
        let (kind, variant) = match update {
            true => (TRAIN, variant.with_update(opt, clip)),
            false => (TRAIN_GRAD, variant),
        };
        let opt = *opt;
        self.run(kind, p.shape(), variant, |be, net, ws| {
            let fo = ForwardOpts { train: true, keep: true, model_init: false };
            graph.encode(be, net, ws, fo)?;
            graph.decode(be, net, ws, fo)?;
            graph.loss(be, net, ws)?;
            graph.backward(be, net, ws, true)?;
            if update { record_update(be, net, &opt, clip) } else { Ok(()) }
        })?;
        Ok(p.tgt_len.iter().map(|&l| l as usize).sum())
    }

    /// The loss (and, with `gradients`, its gradients in `net.grads`) without any update.
    pub fn evaluate(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        pairs: &[(Vec<u32>, Vec<u32>)],
        gradients: bool,
    ) -> Result<()> {
        let p = prepare(spec, pairs)?;
        let graph = S2sGraph::new(spec, layout);
        self.workspace(&graph, p.shape())?;
        self.upload(spec, &p)?;
        let kind = if gradients { LOSS_GRAD } else { EVALUATE };
        self.run(kind, p.shape(), Variant::default(), |be, net, ws| {
            let fo = ForwardOpts { train: false, keep: gradients, model_init: false };
            graph.encode(be, net, ws, fo)?;
            graph.decode(be, net, ws, fo)?;
            graph.loss(be, net, ws)?;
            if gradients {
                graph.backward(be, net, ws, false)?;
            }
            Ok(())
        })
    }

    /// Encodes `src` into the decoder's initial state of the one-step workspace.
    pub(super) fn encode(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        src: &[Vec<u32>],
    ) -> Result<usize> {
        let (steps, ids, len) = prepare_sources(spec, src)?;
        let b = src.len();
        let graph = S2sGraph::new(spec, layout);
        self.workspace(&graph, shape(steps, 1, b))?;
        let (be, ws) = self.with_ws(shape(steps, 1, b))?;
        Self::write_tokens(be, &ws.src, &ids, spec.src_vocab)?;
        be.write_u32(&ws.enc.lengths, &len)?;
        be.write_u32(&ws.dec.lengths, &vec![1; b])?;
        self.run(ENCODE, shape(steps, 1, b), Variant::default(), |be, net, ws| {
            graph.encode(be, net, ws, INFER)
        })?;
        Ok(steps)
    }

    /// One decoder step from the carried state: feeds `tokens` (one per row), returns the logits.
    pub(super) async fn step(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        src_steps: usize,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        let s = shape(src_steps, 1, tokens.len());
        let graph = S2sGraph::new(spec, layout);
        let (be, ws) = self.with_ws(s)?;
        Self::write_tokens(be, &ws.tgt, tokens, spec.tgt_vocab)?;
        self.run(STEP, s, Variant::default(), |be, net, ws| graph.decode(be, net, ws, INFER))?;
        let ws = self.ws(s)?;
        let logits = match (&ws.attn, &ws.dec.head) {
            (Some(a), _) => a.logits.clone(),
            (None, Some(h)) => h.logits.clone(),
            (None, None) => return Err(Error::invalid("seq2seq", "the decoder has no head")),
        };
        self.read_async(&logits).await
    }

    /// Reorders the decoder's carried state by `parents` (beam search).
    pub(super) fn reorder(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        src_steps: usize,
        b: usize,
        parents: &[u32],
    ) -> Result<()> {
        let graph = S2sGraph::new(spec, layout);
        let (be, ws) = self.with_ws(shape(src_steps, 1, b))?;
        be.write_u32(&ws.parents, parents)?;
        self.run(REORDER, shape(src_steps, 1, b), Variant::default(), |be, _, ws| graph.reorder(be, ws))
    }
}
