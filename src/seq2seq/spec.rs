//! The encoder-decoder's description: sizes, vocabularies, the decoding limits, its parameter
//! layout and file metadata.

use crate::error::{Error, Result, check_nonzero};
use crate::io::{self, Metadata};
use crate::model::params::{Init, ParamLayout};
use crate::model::spec::{Cell, Head, InputKind, Loss, ModelSpec, OutputMode};

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
