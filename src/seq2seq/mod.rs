//! Sequence to sequence: an encoder and a decoder, each a stack of the engine's cells, for outputs
//! of another length than the inputs (translation, normalisation).
//!
//! Parameters (a PyTorch module tree of the same shape would name them so):
//! `encoder.embedding.weight [Vs, E]`, `encoder.rnn.*`, `decoder.embedding.weight [Vt, E]`,
//! `decoder.rnn.*`, `bridge.weight [Hd, D*He]`, `bridge.bias` (and `bridge_c.*` for an LSTM) when
//! the encoder's final state and the decoder's state differ in size, `attention.w_a [Hd, D*He]`
//! and `attention.w_c [Hd, D*He + Hd]` with attention, and `decoder.head.weight [Vt, Hd]`,
//! `decoder.head.bias [Vt]`. Decoder layer l starts from encoder layer min(l, Le - 1), its
//! directions side by side.
//!
//! Training is teacher-forced: the decoder reads BOS then the target, and predicts the target then
//! EOS; one training step is one program, one submit. Inference decodes greedily or by beam search,
//! the decoder's state kept on the device between steps.

pub mod graph;
pub mod train;

use std::collections::HashMap;

use crate::backend::{Backend, ProgramKey};
use crate::error::{Error, Result, check_flat_params, check_nonzero};
use crate::gpu::GpuBackend;
use crate::io::{self, Metadata};
use crate::model::Device;
use crate::model::StepStats;
use crate::model::graph::Net;
use crate::model::params::{Init, ParamLayout};
use crate::model::spec::{Cell, Head, InputKind, Loss, ModelSpec, OutputMode};
use crate::native::NativeBackend;
use crate::ops::index_lists;
use crate::real::Real;
use crate::reference::ReferenceBackend;
use crate::rng::Rng;
use crate::update::{Clip, Optimizer};
use graph::{S2sGraph, S2sWs};

/// The longest output of one decoding, in tokens: a model that never emits EOS stops there.
pub const MAX_DECODE: usize = 1 << 16;
/// The widest beam.
pub const MAX_BEAM: usize = 1 << 10;

/// Refuses a beam width (1: greedy) or an output length that decoding cannot honour.
pub fn check_decoding(width: usize, max_len: usize) -> Result<()> {
    check_nonzero("beam", "width", width)?;
    if width > MAX_BEAM {
        return Err(Error::range("beam", "width", width, format!("at most {MAX_BEAM}")));
    }
    check_nonzero("decode", "max_len", max_len)?;
    if max_len > MAX_DECODE {
        return Err(Error::range("decode", "max_len", max_len, format!("at most {MAX_DECODE} tokens")));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub struct Seq2SeqSpec {
    pub cell: Cell,
    pub src_vocab: usize,
    /// Including BOS and EOS.
    pub tgt_vocab: usize,
    pub embed: usize,
    pub enc_hidden: usize,
    pub enc_layers: usize,
    pub bidirectional: bool,
    pub dec_hidden: usize,
    pub dec_layers: usize,
    pub attention: bool,
    pub dropout: f32,
    /// Target ids that start and end every target sequence.
    pub bos: u32,
    pub eos: u32,
}

impl Seq2SeqSpec {
    pub fn encoder(&self) -> ModelSpec {
        ModelSpec {
            layers: self.enc_layers,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
            ..ModelSpec::new(self.cell, InputKind::Dense(self.embed), self.enc_hidden)
        }
    }

    pub fn decoder(&self) -> ModelSpec {
        let head = (!self.attention).then_some(Head {
            outputs: self.tgt_vocab,
            mode: OutputMode::ManyToMany,
            loss: Loss::CrossEntropy,
        });
        ModelSpec {
            layers: self.dec_layers,
            dropout: self.dropout,
            head,
            ..ModelSpec::new(self.cell, InputKind::Dense(self.embed), self.dec_hidden)
        }
    }

    /// Features of the encoder's outputs and final states per layer: `D*He`.
    pub fn enc_output(&self) -> usize {
        self.encoder().output_size()
    }

    /// Whether a learned bridge maps the encoder's final states to the decoder's size.
    pub fn bridged(&self) -> bool {
        self.enc_output() != self.dec_hidden
    }

    pub fn validate(&self) -> Result<()> {
        const OP: &str = "Seq2SeqSpec";
        self.encoder().validate()?;
        self.decoder().validate()?;
        check_nonzero(OP, "source vocabulary", self.src_vocab)?;
        check_nonzero(OP, "target vocabulary", self.tgt_vocab)?;
        if self.bos == self.eos {
            return Err(Error::invalid(OP, format!("bos and eos are both {}; they must differ", self.bos)));
        }
        for (what, id) in [("bos", self.bos), ("eos", self.eos)] {
            if id as usize >= self.tgt_vocab {
                return Err(Error::range(
                    OP,
                    what,
                    id,
                    format!("below the target vocabulary {}", self.tgt_vocab),
                ));
            }
        }
        Ok(())
    }

    pub fn layout(&self) -> ParamLayout {
        let mut l = ParamLayout::empty();
        let (a, hd, e) = (self.enc_output(), self.dec_hidden, self.embed);
        let lin = |fan_in: usize| Init::Uniform(1.0 / (fan_in as f32).sqrt());
        l.push("encoder.embedding.weight".into(), vec![self.src_vocab, e], Init::Normal(1.0));
        l.push_stack(&self.encoder(), "encoder.");
        l.push("decoder.embedding.weight".into(), vec![self.tgt_vocab, e], Init::Normal(1.0));
        l.push_stack(&self.decoder(), "decoder.");
        if self.bridged() {
            l.push("bridge.weight".into(), vec![hd, a], lin(a));
            l.push("bridge.bias".into(), vec![hd], lin(a));
            if self.cell.has_cell_state() {
                l.push("bridge_c.weight".into(), vec![hd, a], lin(a));
                l.push("bridge_c.bias".into(), vec![hd], lin(a));
            }
        }
        if self.attention {
            l.push("attention.w_a".into(), vec![hd, a], lin(a));
            l.push("attention.w_c".into(), vec![hd, a + hd], lin(a + hd));
            l.push("decoder.head.weight".into(), vec![self.tgt_vocab, hd], lin(hd));
            l.push("decoder.head.bias".into(), vec![self.tgt_vocab], lin(hd));
        }
        l
    }

    pub fn metadata(&self) -> Metadata {
        let mut m = Metadata::new();
        m.insert("format".into(), io::FORMAT.into());
        m.insert("kind".into(), "seq2seq".into());
        m.insert("cell".into(), self.cell.name().into());
        for (k, v) in [
            ("src_vocab", self.src_vocab),
            ("tgt_vocab", self.tgt_vocab),
            ("embed", self.embed),
            ("enc_hidden", self.enc_hidden),
            ("enc_layers", self.enc_layers),
            ("dec_hidden", self.dec_hidden),
            ("dec_layers", self.dec_layers),
            ("bos", self.bos as usize),
            ("eos", self.eos as usize),
        ] {
            m.insert(k.into(), v.to_string());
        }
        m.insert("bidirectional".into(), self.bidirectional.to_string());
        m.insert("attention".into(), self.attention.to_string());
        m.insert("dropout".into(), self.dropout.to_string());
        m
    }

    pub fn from_metadata(path: &std::path::Path, m: &Metadata) -> Result<Seq2SeqSpec> {
        if m.get("kind").map(|s| s.as_str()) != Some("seq2seq") {
            return Err(Error::file(
                path,
                "not a sequence-to-sequence model file (metadata `kind` is not seq2seq)",
            ));
        }
        let cell_name = io::field(path, m, "cell")?;
        let size = |k: &str| -> Result<usize> { io::size(path, k, io::parse(path, m, k)?) };
        let spec = Seq2SeqSpec {
            cell: Cell::from_name(cell_name)
                .ok_or_else(|| Error::file(path, format!("unknown cell {cell_name:?}")))?,
            src_vocab: size("src_vocab")?,
            tgt_vocab: size("tgt_vocab")?,
            embed: size("embed")?,
            enc_hidden: size("enc_hidden")?,
            enc_layers: size("enc_layers")?,
            bidirectional: io::parse(path, m, "bidirectional")?,
            dec_hidden: size("dec_hidden")?,
            dec_layers: size("dec_layers")?,
            attention: io::parse(path, m, "attention")?,
            dropout: io::parse(path, m, "dropout")?,
            bos: io::parse(path, m, "bos")?,
            eos: io::parse(path, m, "eos")?,
        };
        spec.validate().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(spec)
    }
}

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

fn to_elem<T: Real>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

/// Running an encoder-decoder on one backend.
pub struct S2sExec<B: Backend> {
    pub be: B,
    pub net: Net<B>,
    workspaces: HashMap<(usize, usize, usize), S2sWs<B>>,
    /// Shapes, least recently used first (at most `MAX_SHAPES` are kept, as for `Model`).
    recent: Vec<(usize, usize, usize)>,
}

const TRAIN: &str = "seq2seq train";
const EVALUATE: &str = "seq2seq evaluate";
const LOSS_GRAD: &str = "seq2seq loss gradient";
const ENCODE: &str = "seq2seq encode";
const STEP: &str = "seq2seq step";
const REORDER: &str = "seq2seq reorder";

impl<B: Backend> S2sExec<B> {
    pub fn new(mut be: B, layout: &ParamLayout, params: &[B::Elem]) -> Result<Self> {
        let net = Net::new(&mut be, layout, params)?;
        Ok(S2sExec { be, net, workspaces: HashMap::new(), recent: Vec::new() })
    }

    fn ensure(&mut self, graph: &S2sGraph<'_>, src: usize, tgt: usize, batch: usize) -> Result<()> {
        let key = (src, tgt, batch);
        self.recent.retain(|&k| k != key);
        self.recent.push(key);
        if !self.workspaces.contains_key(&key) {
            let ws = graph.workspace(&mut self.be, src, tgt, batch)?;
            self.workspaces.insert(key, ws);
        }
        while self.recent.len() > crate::model::exec::MAX_SHAPES {
            let old = self.recent.remove(0);
            self.workspaces.remove(&old);
            self.be.drop_programs(old.0, old.1, old.2);
        }
        Ok(())
    }

    fn write_tokens(be: &mut B, t: &graph::Tokens<B>, ids: &[u32], vocab: usize) -> Result<()> {
        be.write_u32(&t.ids, ids)?;
        let (s, l) = index_lists(ids, vocab);
        be.write_u32(&t.starts, &s)?;
        be.write_u32(&t.list, &l)
    }

    fn upload(&mut self, spec: &Seq2SeqSpec, p: &Prepared) -> Result<()> {
        let ws = &self.workspaces[&(p.src_steps, p.tgt_steps, p.batch)];
        let be = &mut self.be;
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

    fn key(kind: &'static str, src: usize, tgt: usize, batch: usize, variant: u32) -> ProgramKey {
        ProgramKey { kind, steps: src, tgt_steps: tgt, batch, variant }
    }

    fn write_seed(&mut self, p: &Prepared, seed: u32) -> Result<()> {
        let ws = &self.workspaces[&(p.src_steps, p.tgt_steps, p.batch)];
        self.be.write_u32(&ws.enc.seeds, &[seed])?;
        self.be.write_u32(&ws.dec.seeds, &[seed ^ 0x9e37_79b9])
    }

    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        pairs: &[(Vec<u32>, Vec<u32>)],
        opt: &Optimizer,
        clip: Clip,
        seed: u32,
        code: u32,
    ) -> Result<()> {
        let p = prepare(spec, pairs)?;
        let graph = S2sGraph::new(spec, layout);
        if self.net.opt.len() != opt.state_slots() {
            self.net.reset_optimizer(&mut self.be, layout, opt)?;
        }
        self.ensure(&graph, p.src_steps, p.tgt_steps, p.batch)?;
        self.upload(spec, &p)?;
        self.write_seed(&p, seed)?;
        let lr = self.be.view(&self.net.step_state, crate::ops::step_state::LR, 1)?;
        self.be.write(&lr, &[B::Elem::from_f32(opt.lr())])?;
        let (net, ws) = (&self.net, &self.workspaces[&(p.src_steps, p.tgt_steps, p.batch)]);
        let opt = *opt;
        self.be.execute(Self::key(TRAIN, p.src_steps, p.tgt_steps, p.batch, code), &mut |be| {
            graph.encode(be, net, ws, true)?;
            graph.decode(be, net, ws, true)?;
            graph.loss(be, net, ws)?;
            graph.backward(be, net, ws, true)?;
            graph.update(be, net, &opt, clip)
        })
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
        self.ensure(&graph, p.src_steps, p.tgt_steps, p.batch)?;
        self.upload(spec, &p)?;
        let (net, ws) = (&self.net, &self.workspaces[&(p.src_steps, p.tgt_steps, p.batch)]);
        let kind = if gradients { LOSS_GRAD } else { EVALUATE };
        self.be.execute(Self::key(kind, p.src_steps, p.tgt_steps, p.batch, 0), &mut |be| {
            graph.encode(be, net, ws, false)?;
            graph.decode(be, net, ws, false)?;
            graph.loss(be, net, ws)?;
            if gradients {
                graph.backward(be, net, ws, false)?;
            }
            Ok(())
        })
    }

    /// Encodes `src` into the decoder's initial state of the one-step workspace.
    fn encode(&mut self, spec: &Seq2SeqSpec, layout: &ParamLayout, src: &[Vec<u32>]) -> Result<usize> {
        let (steps, ids, len) = prepare_sources(spec, src)?;
        let b = src.len();
        let graph = S2sGraph::new(spec, layout);
        self.ensure(&graph, steps, 1, b)?;
        let ws = &self.workspaces[&(steps, 1, b)];
        Self::write_tokens(&mut self.be, &ws.src, &ids, spec.src_vocab)?;
        self.be.write_u32(&ws.enc.lengths, &len)?;
        self.be.write_u32(&ws.dec.lengths, &vec![1; b])?;
        let (net, ws) = (&self.net, &self.workspaces[&(steps, 1, b)]);
        self.be.execute(Self::key(ENCODE, steps, 1, b, 0), &mut |be| graph.encode(be, net, ws, false))?;
        Ok(steps)
    }

    /// One decoder step from the carried state: feeds `tokens` (one per row), returns the logits.
    fn step(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        src_steps: usize,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        let b = tokens.len();
        let graph = S2sGraph::new(spec, layout);
        let ws = &self.workspaces[&(src_steps, 1, b)];
        Self::write_tokens(&mut self.be, &ws.tgt, tokens, spec.tgt_vocab)?;
        let (net, ws) = (&self.net, &self.workspaces[&(src_steps, 1, b)]);
        self.be.execute(Self::key(STEP, src_steps, 1, b, 0), &mut |be| graph.decode(be, net, ws, false))?;
        let ws = &self.workspaces[&(src_steps, 1, b)];
        let logits = match (&ws.attn, &ws.dec.head) {
            (Some(a), _) => a.logits.clone(),
            (None, Some(h)) => h.logits.clone(),
            (None, None) => return Err(Error::invalid("seq2seq", "the decoder has no head")),
        };
        Ok(self.be.read(&logits)?.into_iter().map(|v| v.to_f32()).collect())
    }

    fn reorder(
        &mut self,
        spec: &Seq2SeqSpec,
        layout: &ParamLayout,
        src_steps: usize,
        b: usize,
        parents: &[u32],
    ) -> Result<()> {
        let graph = S2sGraph::new(spec, layout);
        let ws = &self.workspaces[&(src_steps, 1, b)];
        self.be.write_u32(&ws.parents, parents)?;
        let ws = &self.workspaces[&(src_steps, 1, b)];
        self.be.execute(Self::key(REORDER, src_steps, 1, b, 0), &mut |be| graph.reorder(be, ws))
    }

    fn stats(&mut self) -> Result<StepStats> {
        let s = self.be.read(&self.net.step_state)?;
        let f = |i: usize| s[i].to_f32();
        use crate::ops::step_state as st;
        Ok(StepStats {
            loss: f(st::LOSS),
            grad_norm: f(st::GRAD_NORM),
            step: f(st::STEP) as u64,
            skipped: f(st::SKIPPED) as u32,
        })
    }
}

enum Engine {
    Cpu(S2sExec<NativeBackend>),
    Reference(S2sExec<ReferenceBackend<f32>>),
    Gpu(S2sExec<GpuBackend>),
}

macro_rules! with_exec {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            Engine::Cpu($e) => $body,
            Engine::Reference($e) => $body,
            Engine::Gpu($e) => $body,
        }
    };
}

/// An encoder-decoder model resident on its device.
pub struct Seq2Seq {
    spec: Seq2SeqSpec,
    layout: ParamLayout,
    engine: Engine,
    optimizer: Optimizer,
    clip: Clip,
    rng: Rng,
    skipped_seen: u32,
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    row.iter().map(|&v| v - lse).collect()
}

impl Seq2Seq {
    pub fn new(spec: Seq2SeqSpec, device: &Device, seed: u64) -> Result<Seq2Seq> {
        spec.validate()?;
        let layout = spec.layout();
        crate::model::check_host_memory("the encoder-decoder", layout.count() as u64, device)?;
        let params = layout.init(seed);
        Self::with_flat_params(spec, device, &params, seed)
    }

    pub fn with_flat_params(
        spec: Seq2SeqSpec,
        device: &Device,
        params: &[f32],
        seed: u64,
    ) -> Result<Seq2Seq> {
        spec.validate()?;
        let layout = spec.layout();
        check_flat_params("Seq2Seq", params, layout.total())?;
        let engine = match device {
            Device::Cpu => Engine::Cpu(S2sExec::new(NativeBackend::new()?, &layout, params)?),
            Device::Reference => Engine::Reference(S2sExec::new(ReferenceBackend::new(), &layout, params)?),
            Device::Gpu(ctx) => Engine::Gpu(S2sExec::new(GpuBackend::new(ctx)?, &layout, params)?),
        };
        Ok(Seq2Seq {
            spec,
            layout,
            engine,
            optimizer: Optimizer::adam(1e-3),
            clip: Clip::default(),
            rng: Rng::seed_from_u64(seed ^ 0x5e95_e95e),
            skipped_seen: 0,
        })
    }

    pub fn spec(&self) -> &Seq2SeqSpec {
        &self.spec
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    pub fn set_optimizer(&mut self, optimizer: Optimizer, clip: Clip) -> Result<()> {
        optimizer.validate()?;
        clip.validate()?;
        let layout = &self.layout;
        with_exec!(&mut self.engine, e => e.net.reset_optimizer(&mut e.be, layout, &optimizer))?;
        self.optimizer = optimizer;
        self.clip = clip;
        Ok(())
    }

    /// One teacher-forced training step on (source, target) id pairs; one submit. Call `stats`
    /// for the loss.
    pub fn train_step(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<()> {
        let seed = self.rng.next_u32();
        let mut keyed = self.optimizer;
        keyed.set_lr(0.0);
        let code = format!("{keyed:?}{:?}", self.clip)
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        let (spec, layout, opt, clip) = (&self.spec, &self.layout, self.optimizer, self.clip);
        with_exec!(&mut self.engine, e => e.train_step(spec, layout, pairs, &opt, clip, seed, code))
    }

    /// The step state after the last training step; an error when a step was refused.
    pub fn stats(&mut self) -> Result<StepStats> {
        let s = with_exec!(&mut self.engine, e => e.stats())?;
        if s.skipped > self.skipped_seen {
            self.skipped_seen = s.skipped;
            return Err(Error::NonFiniteStep { loss: s.loss, grad_norm: s.grad_norm, skipped: s.skipped });
        }
        Ok(s)
    }

    /// The mean cross-entropy per target token (EOS included) on `pairs`, without updating.
    pub fn evaluate(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<f32> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => { e.evaluate(spec, layout, pairs, false)?; Ok(e.stats()?.loss) })
    }

    /// The loss and the gradient of every parameter, by name.
    pub fn loss_gradients(
        &mut self,
        pairs: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<(f32, Vec<(String, Vec<f32>)>)> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => {
            e.evaluate(spec, layout, pairs, true)?;
            let loss = e.stats()?.loss;
            let g = e.net.grads.clone();
            let flat: Vec<f32> = e.be.read(&g)?.into_iter().map(|v| v.to_f32()).collect();
            Ok((loss, layout.entries().iter().map(|p| (p.name.clone(), flat[p.range()].to_vec())).collect()))
        })
    }

    pub fn flat_params(&mut self) -> Result<Vec<f32>> {
        with_exec!(&mut self.engine, e => {
            let p = e.net.params.clone();
            Ok(e.be.read(&p)?.into_iter().map(|v| v.to_f32()).collect())
        })
    }

    /// Greedy decoding: the most likely token at each step, until EOS or `max_len` tokens (EOS
    /// not included in the result).
    pub fn greedy(&mut self, sources: &[Vec<u32>], max_len: usize) -> Result<Vec<Vec<u32>>> {
        check_decoding(1, max_len)?;
        let (spec, layout) = (&self.spec, &self.layout);
        let v = spec.tgt_vocab;
        with_exec!(&mut self.engine, e => {
            let steps = e.encode(spec, layout, sources)?;
            let b = sources.len();
            let mut out = vec![Vec::new(); b];
            let mut done = vec![false; b];
            let mut tokens = vec![spec.bos; b];
            for _ in 0..max_len {
                let logits = e.step(spec, layout, steps, &tokens)?;
                for i in 0..b {
                    let row = &logits[i * v..(i + 1) * v];
                    let best = row.iter().enumerate().fold(0, |m, (j, &x)| if x > row[m] { j } else { m }) as u32;
                    tokens[i] = best;
                    if !done[i] {
                        if best == spec.eos { done[i] = true } else { out[i].push(best) }
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Beam search of `width` hypotheses per source, scored by log-probability divided by length
    /// (EOS counted); stops when `width` hypotheses have ended or at `max_len`. Width 1 is greedy.
    pub fn beam(&mut self, sources: &[Vec<u32>], width: usize, max_len: usize) -> Result<Vec<Vec<u32>>> {
        check_decoding(width, max_len)?;
        let (spec, layout) = (&self.spec, &self.layout);
        let (v, k, b) = (spec.tgt_vocab, width, sources.len());
        let rows = b * k;
        let layers = spec.dec_layers;
        let replicated: Vec<Vec<u32>> =
            sources.iter().flat_map(|s| std::iter::repeat_n(s.clone(), k)).collect();
        with_exec!(&mut self.engine, e => {
            let steps = e.encode(spec, layout, &replicated)?;
            // Live hypotheses per source: (tokens, log-probability); at first one per source.
            let mut live: Vec<Vec<(Vec<u32>, f32)>> = vec![vec![(Vec::new(), 0.0)]; b];
            let mut finished: Vec<Vec<(Vec<u32>, f32)>> = vec![Vec::new(); b];
            let mut tokens = vec![spec.bos; rows];
            for t in 0..max_len {
                // At the last step a live hypothesis can no longer end, so every ending counts.
                let last = t + 1 == max_len;
                let logits = e.step(spec, layout, steps, &tokens)?;
                let mut parents = vec![0u32; rows];
                for s in 0..b {
                    if finished[s].len() >= k || live[s].is_empty() {
                        for i in 0..k {
                            parents[s * k + i] = (s * k + i) as u32;
                        }
                        continue;
                    }
                    let mut cands: Vec<(f32, usize, u32)> = Vec::new();
                    for (i, (_, lp)) in live[s].iter().enumerate() {
                        let row = log_softmax(&logits[(s * k + i) * v..(s * k + i + 1) * v]);
                        let mut best: Vec<(f32, u32)> = row.iter().enumerate().map(|(t, &x)| (lp + x, t as u32)).collect();
                        best.sort_by(|a, c| c.0.total_cmp(&a.0));
                        cands.extend(best.into_iter().take(2 * k).map(|(sc, t)| (sc, i, t)));
                    }
                    cands.sort_by(|a, c| c.0.total_cmp(&a.0));
                    let mut next = Vec::new();
                    for (score, parent, tok) in cands {
                        let mut seq = live[s][parent].0.clone();
                        if tok == spec.eos {
                            if finished[s].len() < k {
                                finished[s].push((seq.clone(), score / (seq.len() + 1) as f32));
                            }
                        } else if next.len() < k {
                            seq.push(tok);
                            parents[s * k + next.len()] = (s * k + parent) as u32;
                            tokens[s * k + next.len()] = tok;
                            next.push((seq, score));
                        }
                        if next.len() == k && !last {
                            break;
                        }
                    }
                    live[s] = next;
                }
                if (0..b).all(|s| finished[s].len() >= k || live[s].is_empty()) {
                    break;
                }
                // The state rows [L, B*k, H] follow their hypotheses.
                let map: Vec<u32> = (0..layers * rows).map(|r| ((r / rows) * rows) as u32 + parents[r % rows]).collect();
                e.reorder(spec, layout, steps, rows, &map)?;
            }
            Ok((0..b)
                .map(|s| {
                    let pool: Vec<(Vec<u32>, f32)> = if finished[s].is_empty() {
                        live[s].iter().map(|(t, lp)| (t.clone(), lp / (t.len() + 1) as f32)).collect()
                    } else {
                        finished[s].clone()
                    };
                    pool.into_iter().max_by(|a, c| a.1.total_cmp(&c.1)).map(|p| p.0).unwrap_or_default()
                })
                .collect())
        })
    }

    fn param_tensors(&mut self) -> Result<Vec<(String, Vec<usize>, io::TensorData)>> {
        let flat = self.flat_params()?;
        Ok(self
            .layout
            .entries()
            .iter()
            .map(|e| (e.name.clone(), e.shape.clone(), io::TensorData::F32(flat[e.range()].to_vec())))
            .collect())
    }

    /// Saves the model with its description and `extra` metadata (vocabularies).
    pub fn save(&mut self, path: &std::path::Path, extra: &Metadata) -> Result<()> {
        let tensors = self.param_tensors()?;
        let mut meta = self.spec.metadata();
        meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        io::write_tensors(path, &tensors, &meta)
    }

    /// Loads a model saved by `save` (or a checkpoint, whose training state it leaves).
    pub fn load(path: &std::path::Path, device: &Device) -> Result<(Seq2Seq, Metadata)> {
        let (model, meta, _) = Self::read(path, device)?;
        Ok((model, meta))
    }

    fn read(
        path: &std::path::Path,
        device: &Device,
    ) -> Result<(Seq2Seq, Metadata, std::collections::BTreeMap<String, (Vec<usize>, io::TensorData)>)> {
        let file = io::read_tensors(path)?;
        let spec = Seq2SeqSpec::from_metadata(path, &file.metadata)?;
        let layout = spec.layout();
        let checkpoint = file.metadata.contains_key("optimizer.name");
        let extra = |name: &str| checkpoint && io::is_checkpoint_tensor(name);
        let params = io::flat_params(path, &layout, &file.tensors, "rnn.", &extra)?;
        let model = Seq2Seq::with_flat_params(spec, device, &params, 0)?;
        let rest = file.tensors.into_iter().filter(|(k, _)| extra(k)).collect();
        Ok((model, file.metadata, rest))
    }

    /// The optimizer, its state, the step state and the random generator (see `Model`).
    pub fn training_state(&mut self) -> Result<crate::train::TrainingState> {
        let (optimizer, clip, rng) = (self.optimizer, self.clip, &self.rng);
        with_exec!(&mut self.engine, e => e.net.training_state(&mut e.be, optimizer, clip, rng))
    }

    pub fn set_training_state(&mut self, state: &crate::train::TrainingState) -> Result<()> {
        self.set_optimizer(state.optimizer, state.clip)?;
        with_exec!(&mut self.engine, e => e.net.write_training(&mut e.be, &state.slots, &state.step_state))?;
        self.skipped_seen = state.step_state[crate::ops::step_state::SKIPPED] as u32;
        self.rng = Rng::from_state(state.rng);
        Ok(())
    }

    /// Saves the model with its training state and `extra` metadata, to resume exactly.
    pub fn save_checkpoint(&mut self, path: &std::path::Path, extra: &Metadata) -> Result<()> {
        let mut tensors = self.param_tensors()?;
        let mut meta = self.spec.metadata();
        let state = self.training_state()?;
        tensors.extend(io::training_tensors(&state, self.layout.total(), &mut meta));
        meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        io::write_tensors(path, &tensors, &meta)
    }

    /// Loads a checkpoint saved by `save_checkpoint`, ready to continue training.
    pub fn load_checkpoint(path: &std::path::Path, device: &Device) -> Result<(Seq2Seq, Metadata)> {
        let (mut model, meta, extra) = Self::read(path, device)?;
        let state = io::training_state(path, &meta, &extra, model.layout.total())?;
        model.set_training_state(&state).map_err(|e| Error::file(path, e.to_string()))?;
        Ok((model, meta))
    }
}
