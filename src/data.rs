//! Data for the examples and the CLI: character corpora cut into training batches.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::batch::Batch;
use crate::rng::Rng;

/// A text as character ids, with its vocabulary (the distinct characters, sorted).
#[derive(Clone, Debug, PartialEq)]
pub struct TextCorpus {
    pub vocab: Vec<char>,
    pub ids: Vec<u32>,
}

impl TextCorpus {
    pub fn from_text(text: &str) -> Result<TextCorpus> {
        let vocab: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
        if vocab.is_empty() {
            return Err(Error::invalid("TextCorpus", "the text is empty"));
        }
        let ids = text.chars().map(|c| vocab.binary_search(&c).expect("in vocabulary") as u32).collect();
        Ok(TextCorpus { vocab, ids })
    }

    pub fn load(path: &Path) -> Result<TextCorpus> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_text(&text).map_err(|e| Error::file(path, e.to_string()))
    }

    /// Ids of `text` in this vocabulary; an error names the first unknown character.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                position(&self.vocab, c).ok_or_else(|| {
                    Error::invalid("encode", format!("character {c:?} is not in the model's vocabulary"))
                })
            })
            .collect()
    }

    pub fn decode(vocab: &[char], ids: &[u32]) -> String {
        ids.iter().map(|&i| vocab.get(i as usize).copied().unwrap_or('\u{fffd}')).collect()
    }

    /// The first `1 - valid` of the ids for training, the rest for validation, same vocabulary.
    pub fn split(&self, valid: f64) -> (TextCorpus, TextCorpus) {
        let cut = ((self.ids.len() as f64) * (1.0 - valid)).round() as usize;
        let cut = cut.clamp(0, self.ids.len());
        (
            TextCorpus { vocab: self.vocab.clone(), ids: self.ids[..cut].to_vec() },
            TextCorpus { vocab: self.vocab.clone(), ids: self.ids[cut..].to_vec() },
        )
    }

    /// `batch` windows of `steps` characters at random offsets, each predicting the next
    /// character (time-major).
    pub fn random_batch(&self, rng: &mut Rng, steps: usize, batch: usize) -> Result<Batch> {
        if self.ids.len() < steps + 2 {
            return Err(Error::range(
                "random_batch",
                "text length",
                self.ids.len(),
                format!("at least {}", steps + 2),
            ));
        }
        let starts: Vec<usize> = (0..batch).map(|_| rng.below(self.ids.len() - steps - 1)).collect();
        Ok(self.batch_at(&starts, steps))
    }

    /// The windows starting at `starts`.
    pub fn batch_at(&self, starts: &[usize], steps: usize) -> Batch {
        let b = starts.len();
        let mut input = vec![0u32; steps * b];
        let mut target = vec![0u32; steps * b];
        for (j, &s) in starts.iter().enumerate() {
            for t in 0..steps {
                input[t * b + j] = self.ids[s + t];
                target[t * b + j] = self.ids[s + t + 1];
            }
        }
        Batch::tokens(steps, b, input).with_classes(target)
    }

    /// Consecutive chunks of `batch` parallel streams over the text, for truncated BPTT: chunk
    /// `k` of stream `j` continues chunk `k - 1` of the same stream.
    pub fn stream_batches(&self, steps: usize, batch: usize) -> Vec<Batch> {
        let per_stream = (self.ids.len().saturating_sub(1)) / batch.max(1);
        let chunks = per_stream / steps.max(1);
        (0..chunks)
            .map(|k| {
                let starts: Vec<usize> = (0..batch).map(|j| j * per_stream + k * steps).collect();
                self.batch_at(&starts, steps)
            })
            .collect()
    }
}

/// Character vocabularies of (source, target) text pairs, for sequence-to-sequence models: the
/// target vocabulary ends with BOS and EOS.
#[derive(Clone, Debug, PartialEq)]
pub struct PairVocab {
    pub src: Vec<char>,
    pub tgt: Vec<char>,
}

impl PairVocab {
    pub fn from_pairs(pairs: &[(String, String)]) -> PairVocab {
        let src: BTreeSet<char> = pairs.iter().flat_map(|p| p.0.chars()).collect();
        let tgt: BTreeSet<char> = pairs.iter().flat_map(|p| p.1.chars()).collect();
        PairVocab { src: src.into_iter().collect(), tgt: tgt.into_iter().collect() }
    }

    /// From the two strings a model file stores.
    pub fn from_strings(src: &str, tgt: &str) -> PairVocab {
        PairVocab { src: src.chars().collect(), tgt: tgt.chars().collect() }
    }

    pub fn src_size(&self) -> usize {
        self.src.len()
    }

    /// Target characters plus BOS and EOS.
    pub fn tgt_size(&self) -> usize {
        self.tgt.len() + 2
    }

    pub fn bos(&self) -> u32 {
        self.tgt.len() as u32
    }

    pub fn eos(&self) -> u32 {
        self.tgt.len() as u32 + 1
    }

    fn encode_with(chars: &[char], text: &str, side: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                position(chars, c).ok_or_else(|| {
                    Error::invalid(
                        "encode",
                        format!("character {c:?} is not in the model's {side} vocabulary"),
                    )
                })
            })
            .collect()
    }

    pub fn encode_src(&self, text: &str) -> Result<Vec<u32>> {
        Self::encode_with(&self.src, text, "source")
    }

    pub fn encode_tgt(&self, text: &str) -> Result<Vec<u32>> {
        Self::encode_with(&self.tgt, text, "target")
    }

    pub fn decode_tgt(&self, ids: &[u32]) -> String {
        ids.iter().filter_map(|&i| self.tgt.get(i as usize)).collect()
    }

    /// Encodes text pairs into id pairs.
    pub fn encode_pairs(&self, pairs: &[(String, String)]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        pairs.iter().map(|(s, t)| Ok((self.encode_src(s)?, self.encode_tgt(t)?))).collect()
    }
}

/// The id of `c`: its position in the vocabulary, whatever the vocabulary's order.
fn position(vocab: &[char], c: char) -> Option<u32> {
    vocab.iter().position(|&v| v == c).map(|i| i as u32)
}

/// A vocabulary read from a model file's metadata, checked against the model: exactly `size`
/// characters, none twice. A character's id is its position.
pub fn checked_vocab(path: &Path, what: &str, chars: &str, size: usize) -> Result<Vec<char>> {
    let vocab: Vec<char> = chars.chars().collect();
    if vocab.len() != size {
        return Err(Error::file(
            path,
            format!("the {what} vocabulary has {} characters; the model has {size}", vocab.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(c) = vocab.iter().find(|c| !seen.insert(**c)) {
        return Err(Error::file(path, format!("character {c:?} appears twice in the {what} vocabulary")));
    }
    Ok(vocab)
}

/// Reads tab-separated `source<TAB>target` lines (blank lines skipped); an error names the first
/// malformed line.
pub fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (s, t) = line.split_once('\t').ok_or_else(|| {
            Error::file(path, format!("line {} has no tab between source and target", n + 1))
        })?;
        if s.is_empty() {
            return Err(Error::file(path, format!("line {} has an empty source", n + 1)));
        }
        pairs.push((s.to_string(), t.to_string()));
    }
    if pairs.is_empty() {
        return Err(Error::file(path, "no pairs"));
    }
    Ok(pairs)
}

/// How labeled text is cut into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// Lowercased runs of letters, digits and apostrophes; everything else separates them.
    Words,
    Chars,
}

impl Tokens {
    pub fn name(self) -> &'static str {
        match self {
            Tokens::Words => "word",
            Tokens::Chars => "char",
        }
    }

    pub fn from_name(name: &str) -> Result<Tokens> {
        match name {
            "word" => Ok(Tokens::Words),
            "char" => Ok(Tokens::Chars),
            _ => Err(Error::invalid("tokens", format!("unknown tokens {name:?}; use word or char"))),
        }
    }

    pub fn split(self, text: &str) -> Vec<String> {
        match self {
            Tokens::Words => text
                .to_lowercase()
                .split(|c: char| !(c.is_alphanumeric() || c == '\''))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect(),
            Tokens::Chars => text.chars().map(|c| c.to_string()).collect(),
        }
    }
}

/// Texts with labels (`text<TAB>label` lines), for classification.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledText {
    pub texts: Vec<String>,
    /// Index into `labels`, per text.
    pub classes: Vec<u32>,
    /// The distinct labels, sorted.
    pub labels: Vec<String>,
}

impl LabeledText {
    /// Parses `text<TAB>label` lines (blank lines skipped); an error names the first malformed
    /// line. `labels`, when given, is the label set to use (a trained model's): a label outside it
    /// is refused by name.
    pub fn parse(source: &str, content: &str, labels: Option<&[String]>) -> Result<LabeledText> {
        let mut pairs = Vec::new();
        for (n, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: &str| Error::invalid("labeled text", format!("{source} line {}: {why}", n + 1));
            let (text, label) =
                line.rsplit_once('\t').ok_or_else(|| bad("no TAB between the text and its label"))?;
            let (text, label) = (text.trim(), label.trim());
            if text.is_empty() {
                return Err(bad("the text is empty"));
            }
            if label.is_empty() {
                return Err(bad("the label is empty"));
            }
            pairs.push((text.to_string(), label.to_string()));
        }
        let given = labels.is_some();
        let labels: Vec<String> = match labels {
            Some(l) => l.to_vec(),
            None => pairs.iter().map(|(_, l)| l.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
        };
        if !given && labels.len() == 1 {
            return Err(Error::invalid(
                "labeled text",
                format!("{source} has one label only ({:?}); a classifier needs two or more", labels[0]),
            ));
        }
        let mut classes = Vec::with_capacity(pairs.len());
        for (text, label) in &pairs {
            let c = labels.iter().position(|l| l == label).ok_or_else(|| {
                Error::invalid(
                    "labeled text",
                    format!(
                        "{source}: label {label:?} (of {text:?}) is not one of the model's: {}",
                        labels.join(", ")
                    ),
                )
            })?;
            classes.push(c as u32);
        }
        if pairs.is_empty() {
            return Err(Error::invalid("labeled text", format!("{source} holds no text<TAB>label line")));
        }
        Ok(LabeledText { texts: pairs.into_iter().map(|(t, _)| t).collect(), classes, labels })
    }
}

/// A token vocabulary: id 0 stands for every token outside it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenVocab {
    pub tokens: Tokens,
    /// Tokens by id, from 1 (id 0 is the unknown token).
    pub words: Vec<String>,
    ids: std::collections::HashMap<String, u32>,
}

impl TokenVocab {
    /// The at most `size - 1` most frequent tokens of `texts` seen at least `min_count` times (ties
    /// broken alphabetically), after the unknown token.
    pub fn build(tokens: Tokens, texts: &[String], size: usize, min_count: usize) -> TokenVocab {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for t in texts {
            for w in tokens.split(t) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut by_count: Vec<(String, usize)> =
            counts.into_iter().filter(|(_, c)| *c >= min_count).collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by_count.truncate(size.saturating_sub(1));
        TokenVocab::from_words(tokens, by_count.into_iter().map(|(w, _)| w).collect())
    }

    /// The vocabulary of `words` (ids from 1), as a model file stores it.
    pub fn from_words(tokens: Tokens, words: Vec<String>) -> TokenVocab {
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32 + 1)).collect();
        TokenVocab { tokens, words, ids }
    }

    /// Ids, the unknown token included.
    pub fn len(&self) -> usize {
        self.words.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// `text`'s ids, at most `max_len` of them (the first), and at least one (the unknown token
    /// for a text with no token).
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .tokens
            .split(text)
            .iter()
            .take(max_len)
            .map(|w| self.ids.get(w).copied().unwrap_or(0))
            .collect();
        if ids.is_empty() {
            ids.push(0);
        }
        ids
    }
}

/// A batch of token sequences of different lengths, time-major and padded with the unknown
/// token, with their lengths.
pub fn padded_batch(seqs: &[Vec<u32>]) -> Batch {
    let steps = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let b = seqs.len();
    let mut ids = vec![0u32; steps * b];
    for (j, s) in seqs.iter().enumerate() {
        for (t, &id) in s.iter().enumerate() {
            ids[t * b + j] = id;
        }
    }
    Batch::tokens(steps, b, ids).with_lengths(seqs.iter().map(|s| s.len().max(1)).collect())
}

/// One numeric column of a CSV file with a header row: `column` by name, or by position from 0.
/// An error names the line of a ragged row or of a value that is not a finite number.
pub fn csv_column(source: &str, content: &str, column: &str) -> Result<Vec<f64>> {
    let bad = |msg: String| Error::invalid("csv", format!("{source}: {msg}"));
    let mut lines = content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad("empty file".into()))?;
    let names: Vec<&str> = header.split(',').map(|s| s.trim().trim_matches('"')).collect();
    let col = match names.iter().position(|n| *n == column) {
        Some(c) => c,
        None => column
            .parse::<usize>()
            .ok()
            .filter(|&c| c < names.len())
            .ok_or_else(|| bad(format!("no column {column:?}; the header has {}", names.join(", "))))?,
    };
    let mut values = Vec::new();
    for (n, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != names.len() {
            return Err(bad(format!(
                "line {} has {} fields; the header has {}",
                n + 1,
                cells.len(),
                names.len()
            )));
        }
        let cell = cells[col].trim().trim_matches('"');
        let v: f64 = cell.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| {
            bad(format!("line {}: {cell:?} in column {} is not a number", n + 1, names[col]))
        })?;
        values.push(v);
    }
    Ok(values)
}
