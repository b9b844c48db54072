//! A batch of sequences as the caller gives it, checked against the model, and the derived arrays
//! the kernels read (per-row loss weights, index lists).

use super::spec::{InputKind, Loss, ModelSpec, OutputMode};
use crate::error::{Error, Result, check_finite};

/// `[B, T, W]` (PyTorch's `batch_first=True`) as `[T, B, W]`, the layout batches and outputs
/// have here; an error when `x` is not `batch * steps * width` long.
pub fn batch_first_to_time_major<T: Copy>(
    x: &[T],
    batch: usize,
    steps: usize,
    width: usize,
) -> Result<Vec<T>> {
    transpose(x, batch, steps, width)
}

/// `[T, B, W]` (an output, `Forward::output` or `logits`) as `[B, T, W]`.
pub fn time_major_to_batch_first<T: Copy>(
    x: &[T],
    steps: usize,
    batch: usize,
    width: usize,
) -> Result<Vec<T>> {
    transpose(x, steps, batch, width)
}

/// `[R, C, W]` as `[C, R, W]`.
fn transpose<T: Copy>(x: &[T], rows: usize, cols: usize, width: usize) -> Result<Vec<T>> {
    let n = rows.checked_mul(cols).and_then(|rc| rc.checked_mul(width));
    if n != Some(x.len()) {
        return Err(Error::shape("transpose", "values", &[x.len()], &[rows, cols, width]));
    }
    let mut out = Vec::with_capacity(x.len());
    for c in 0..cols {
        for r in 0..rows {
            out.extend_from_slice(&x[(r * cols + c) * width..][..width]);
        }
    }
    Ok(out)
}

/// Inputs of a batch, time-major (see `batch_first_to_time_major` for PyTorch's
/// `batch_first` layout).
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// `[T, B, I]`
    Dense(Vec<f32>),
    /// `[T, B]`
    Tokens(Vec<u32>),
}

/// Targets: classes for cross-entropy, values for mean squared error. Many-to-many targets are
/// `[T, B]` or `[T, B, O]`; many-to-one `[B]` or `[B, O]`. Targets at padded positions are ignored.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    Classes(Vec<u32>),
    Values(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub steps: usize,
    pub batch: usize,
    pub input: Input,
    /// Per-sequence lengths, each in 1..=steps; `None` means all sequences are `steps` long.
    pub lengths: Option<Vec<usize>>,
    pub targets: Option<Targets>,
    /// Per-sequence vectors `[B, C]` for a model whose initial state is conditioned.
    pub condition: Option<Vec<f32>>,
}

impl Batch {
    pub fn tokens(steps: usize, batch: usize, ids: Vec<u32>) -> Batch {
        Batch { steps, batch, input: Input::Tokens(ids), lengths: None, targets: None, condition: None }
    }

    pub fn dense(steps: usize, batch: usize, data: Vec<f32>) -> Batch {
        Batch { steps, batch, input: Input::Dense(data), lengths: None, targets: None, condition: None }
    }

    /// Features `[B, T, I]`, as PyTorch's `batch_first=True` has them.
    pub fn dense_batch_first(batch: usize, steps: usize, width: usize, data: &[f32]) -> Result<Batch> {
        Ok(Batch::dense(steps, batch, batch_first_to_time_major(data, batch, steps, width)?))
    }

    /// Token ids `[B, T]`, as PyTorch's `batch_first=True` has them.
    pub fn tokens_batch_first(batch: usize, steps: usize, ids: &[u32]) -> Result<Batch> {
        Ok(Batch::tokens(steps, batch, batch_first_to_time_major(ids, batch, steps, 1)?))
    }

    pub fn with_lengths(mut self, lengths: Vec<usize>) -> Batch {
        self.lengths = Some(lengths);
        self
    }

    pub fn with_classes(mut self, classes: Vec<u32>) -> Batch {
        self.targets = Some(Targets::Classes(classes));
        self
    }

    pub fn with_condition(mut self, condition: Vec<f32>) -> Batch {
        self.condition = Some(condition);
        self
    }

    pub fn with_values(mut self, values: Vec<f32>) -> Batch {
        self.targets = Some(Targets::Values(values));
        self
    }

    /// Each sequence's length (all `steps` when none were given).
    pub fn lengths_u32(&self) -> Vec<u32> {
        match &self.lengths {
            Some(l) => l.iter().map(|&v| v as u32).collect(),
            None => vec![self.steps as u32; self.batch],
        }
    }

    fn is_valid(&self, t: usize, b: usize) -> bool {
        self.lengths.as_ref().is_none_or(|l| t < l[b])
    }

    /// Checks shapes, lengths, ids and values against `spec`. Targets are required when
    /// `need_targets`.
    pub fn validate(&self, spec: &ModelSpec, need_targets: bool) -> Result<()> {
        const OP: &str = "Batch";
        let (t, b) = (self.steps, self.batch);
        if t == 0 || b == 0 {
            return Err(Error::shape(OP, "batch [steps, batch]", &[t, b], &[1, 1]));
        }
        match (&self.input, spec.input) {
            (Input::Dense(x), InputKind::Dense(i)) => {
                if x.len() != t * b * i {
                    return Err(Error::shape(OP, "dense input", &[x.len()], &[t, b, i]));
                }
                check_finite(OP, "input", x)?;
            }
            (Input::Tokens(ids), InputKind::Tokens(v) | InputKind::Embedding { vocab: v, .. }) => {
                if ids.len() != t * b {
                    return Err(Error::shape(OP, "token input", &[ids.len()], &[t, b]));
                }
                if let Some((pos, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= v) {
                    return Err(Error::range(
                        OP,
                        format!("token id at position {pos}"),
                        id,
                        format!("below the vocabulary size {v}"),
                    ));
                }
            }
            (Input::Dense(_), InputKind::Tokens(_) | InputKind::Embedding { .. }) => {
                return Err(Error::invalid(
                    OP,
                    "the model reads token ids, but the batch holds dense features",
                ));
            }
            (Input::Tokens(_), InputKind::Dense(_)) => {
                return Err(Error::invalid(
                    OP,
                    "the model reads dense features, but the batch holds token ids",
                ));
            }
        }
        if let Some(lengths) = &self.lengths {
            if lengths.len() != b {
                return Err(Error::shape(OP, "lengths", &[lengths.len()], &[b]));
            }
            if let Some((i, &l)) = lengths.iter().enumerate().find(|&(_, &l)| l == 0 || l > t) {
                return Err(Error::range(OP, format!("length of sequence {i}"), l, format!("in 1..={t}")));
            }
        }
        match (&self.targets, spec.head) {
            (None, _) if !need_targets => Ok(()),
            (None, _) => Err(Error::invalid(OP, "training needs targets")),
            (Some(_), None) => Err(Error::invalid(OP, "the model has no head to compare targets with")),
            (Some(targets), Some(head)) => {
                let per_step = head.mode == OutputMode::ManyToMany;
                let rows = if per_step { t * b } else { b };
                let row_shape = if per_step { vec![t, b] } else { vec![b] };
                let counted = |r: usize| !per_step || self.is_valid(r / b, r % b);
                match (targets, head.loss) {
                    (Targets::Classes(c), Loss::CrossEntropy) => {
                        if c.len() != rows {
                            return Err(Error::shape(OP, "class targets", &[c.len()], &row_shape));
                        }
                        for (r, &class) in c.iter().enumerate() {
                            if counted(r) && class as usize >= head.outputs {
                                return Err(Error::range(
                                    OP,
                                    format!("class target at row {r}"),
                                    class,
                                    format!("below the {} outputs", head.outputs),
                                ));
                            }
                        }
                        Ok(())
                    }
                    (Targets::Values(v), Loss::Mse) => {
                        let o = head.outputs;
                        if v.len() != rows * o {
                            let mut want = row_shape.clone();
                            want.push(o);
                            return Err(Error::shape(OP, "value targets", &[v.len()], &want));
                        }
                        for r in (0..rows).filter(|&r| counted(r)) {
                            check_finite(OP, &format!("value targets of row {r}"), &v[r * o..(r + 1) * o])?;
                        }
                        Ok(())
                    }
                    (Targets::Classes(_), Loss::Mse) => {
                        Err(Error::invalid(OP, "a mean-squared-error head needs value targets"))
                    }
                    (Targets::Values(_), Loss::CrossEntropy) => {
                        Err(Error::invalid(OP, "a cross-entropy head needs class targets"))
                    }
                }
            }
        }
    }

    /// Rows the head reads: every (t, b) many-to-many, one per sequence many-to-one.
    pub fn head_rows(&self, mode: OutputMode) -> usize {
        match mode {
            OutputMode::ManyToMany => self.steps * self.batch,
            OutputMode::ManyToOne => self.batch,
        }
    }

    /// Rank `rank`'s share of the sequences for data parallelism over `ranks` ranks (as
    /// `distributed::share` cuts it), with their inputs, lengths,
    /// targets (many-to-many or many-to-one, as `mode` reads them) and condition vectors.
    pub fn shard(&self, mode: OutputMode, rank: usize, ranks: usize) -> Result<Batch> {
        let b = self.batch;
        let mine = crate::distributed::share(b, rank, ranks)?;
        let (first, n) = (mine.start, mine.len());
        let t = self.steps;
        // Columns first..first+n of `x`, `rows` rows of `b` columns of `width` values; an error
        // naming `what` when `x` is not whole rows of `b` columns.
        fn columns<T: Copy>(
            x: &[T],
            rows: usize,
            b: usize,
            cols: std::ops::Range<usize>,
            what: &str,
        ) -> Result<Vec<T>> {
            if rows * b == 0 || x.len() % (rows * b) != 0 {
                return Err(Error::invalid(
                    "shard",
                    format!("{what} holds {} values, not {rows} rows of {b} sequences", x.len()),
                ));
            }
            let width = x.len() / (rows * b);
            let row = |r: usize| x[(r * b + cols.start) * width..(r * b + cols.end) * width].iter().copied();
            Ok((0..rows).flat_map(row).collect())
        }
        let target_rows = match mode {
            OutputMode::ManyToMany => self.steps,
            OutputMode::ManyToOne => 1,
        };
        let lengths = match &self.lengths {
            Some(l) if l.len() != b => {
                return Err(Error::invalid("shard", format!("{} lengths for {b} sequences", l.len())));
            }
            l => l.as_ref().map(|l| l[first..first + n].to_vec()),
        };
        Ok(Batch {
            steps: self.steps,
            batch: n,
            input: match &self.input {
                Input::Dense(x) => Input::Dense(columns(x, t, b, mine.clone(), "input")?),
                Input::Tokens(x) => Input::Tokens(columns(x, t, b, mine.clone(), "input")?),
            },
            lengths,
            targets: match &self.targets {
                None => None,
                Some(Targets::Classes(c)) => {
                    Some(Targets::Classes(columns(c, target_rows, b, mine.clone(), "targets")?))
                }
                Some(Targets::Values(v)) => {
                    Some(Targets::Values(columns(v, target_rows, b, mine.clone(), "targets")?))
                }
            },
            condition: match &self.condition {
                None => None,
                Some(c) => Some(columns(c, 1, b, mine.clone(), "condition")?),
            },
        })
    }

    /// The rows the loss averages over: the valid steps many-to-many, the sequences many-to-one.
    pub fn loss_rows(&self, mode: OutputMode) -> usize {
        match mode {
            OutputMode::ManyToMany => {
                self.lengths.as_ref().map_or(self.steps * self.batch, |l| l.iter().sum())
            }
            OutputMode::ManyToOne => self.batch,
        }
    }

    /// Per-row loss weights: 0 at padded positions, else 1/count (cross-entropy) or
    /// 1/(count*O) (mean squared error), so that the sum of the weighted row losses is the mean.
    pub fn loss_weights(&self, mode: OutputMode, loss: Loss, outputs: usize) -> Vec<f32> {
        let (t, b) = (self.steps, self.batch);
        let per = if loss == Loss::Mse { outputs } else { 1 };
        let w = 1.0 / (self.loss_rows(mode) * per) as f32;
        match mode {
            OutputMode::ManyToMany => {
                (0..t * b).map(|r| if self.is_valid(r / b, r % b) { w } else { 0.0 }).collect()
            }
            OutputMode::ManyToOne => vec![w; b],
        }
    }

    /// Class targets with the ignored ones replaced by 0 (a kernel must not index past O).
    pub fn class_targets(&self, mode: OutputMode) -> Vec<u32> {
        let b = self.batch;
        match &self.targets {
            Some(Targets::Classes(c)) => c
                .iter()
                .enumerate()
                .map(
                    |(r, &v)| {
                        if mode == OutputMode::ManyToOne || self.is_valid(r / b, r % b) { v } else { 0 }
                    },
                )
                .collect(),
            _ => vec![0; self.head_rows(mode)],
        }
    }

    /// Value targets with the ignored ones replaced by 0.
    pub fn value_targets(&self, mode: OutputMode, outputs: usize) -> Vec<f32> {
        let b = self.batch;
        match &self.targets {
            Some(Targets::Values(v)) => v
                .chunks(outputs)
                .enumerate()
                .flat_map(|(r, row)| {
                    let keep = mode == OutputMode::ManyToOne || self.is_valid(r / b, r % b);
                    row.iter().map(move |&x| if keep { x } else { 0.0 })
                })
                .collect(),
            _ => vec![0.0; self.head_rows(mode) * outputs],
        }
    }

    /// Where a many-to-one head reads each sequence's final output, per direction: the forward
    /// direction's at its last valid step `t = len - 1`, the reverse direction's at `t = 0` (where
    /// that direction ends, having read the whole sequence), as a PyTorch model built on the final
    /// states reads them. The outputs `[T, B, D*H]` are taken as `T*B*D` rows of H (of P with a projection): sequence b,
    /// direction d is row `(t * B + b) * D + d`, listed in that order (b, then d).
    pub fn last_rows(&self, directions: usize) -> Vec<u32> {
        let lengths = self.lengths_u32();
        let mut rows = Vec::with_capacity(self.batch * directions);
        for b in 0..self.batch {
            for d in 0..directions {
                let t = if d == 0 { lengths[b] as usize - 1 } else { 0 };
                rows.push(((t * self.batch + b) * directions + d) as u32);
            }
        }
        rows
    }
}
