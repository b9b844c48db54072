//! `forward`: a model (or a bare PyTorch state_dict) on tensors from a file, with gradients.

use super::*;

#[derive(Args)]
pub(crate) struct ForwardArgs {
    /// A model file, or a bare PyTorch nn.RNN/LSTM/GRU state_dict (then give --cell).
    #[arg(long)]
    model: PathBuf,
    /// safetensors with `input` [T, B, I] floats or `tokens` [T, B] integers, and optionally
    /// `h0`, `c0` [L*D, B, H] (`h0` [L*D, B, P] with a projection) and `lengths` [B].
    #[arg(long)]
    input: PathBuf,
    /// safetensors with `output` [T, B, D*H], the gradient of the outputs (and optionally `h_n`,
    /// `c_n`): then the gradients of every parameter, the input and the initial states are
    /// written too.
    #[arg(long)]
    grad_output: Option<PathBuf>,
    /// Where to write `output`, `h_n`, `c_n`, `logits` and the `grad.*` tensors.
    #[arg(long)]
    out: PathBuf,
    /// The cell of a bare PyTorch state_dict (one of the names `train --cell` takes).
    #[arg(long)]
    cell: Option<String>,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

pub(crate) fn forward(a: ForwardArgs) -> rnn_gpu::Result<ExitCode> {
    use rnn_gpu::io::{self, TensorData};
    use rnn_gpu::{Batch, Error, InputKind, Start};
    let device = Device::from_name(&a.device)?;
    let cell = a.cell.as_deref().map(parse_cell).transpose()?;
    let (mut model, meta) = io::load_model(&a.model, &device, cell)?;
    let spec = model.spec().clone();
    let bare = !meta.contains_key("format");
    let file = io::read_tensors(&a.input)?;
    let bad = |m: String| Error::File { path: a.input.clone(), message: m };
    let floats = |name: &str| -> rnn_gpu::Result<Option<(Vec<usize>, Vec<f32>)>> {
        match file.tensors.get(name) {
            None => Ok(None),
            Some((s, TensorData::F32(v))) => Ok(Some((s.clone(), v.clone()))),
            Some((s, TensorData::Int(v))) => Ok(Some((s.clone(), v.iter().map(|&x| x as f32).collect()))),
        }
    };
    let ints = |name: &str| -> rnn_gpu::Result<Option<(Vec<usize>, Vec<i64>)>> {
        match file.tensors.get(name) {
            None => Ok(None),
            Some((s, TensorData::Int(v))) => Ok(Some((s.clone(), v.clone()))),
            Some(_) => Err(bad(format!("tensor {name} must hold integers"))),
        }
    };
    let mut batch = match spec.input {
        InputKind::Dense(_) => {
            let (shape, x) =
                floats("input")?.ok_or_else(|| bad("missing tensor `input` [T, B, I]".into()))?;
            let [t, b, _] = shape[..] else {
                return Err(bad(format!("tensor input has shape {shape:?}; expected [T, B, I]")));
            };
            Batch::dense(t, b, x)
        }
        InputKind::Tokens(_) | InputKind::Embedding { .. } => {
            let (shape, ids) = ints("tokens")?.ok_or_else(|| bad("missing tensor `tokens` [T, B]".into()))?;
            let [t, b] = shape[..] else {
                return Err(bad(format!("tensor tokens has shape {shape:?}; expected [T, B]")));
            };
            let ids: Vec<u32> = ids
                .iter()
                .map(|&v| u32::try_from(v).map_err(|_| bad(format!("token id {v} is negative or too large"))))
                .collect::<rnn_gpu::Result<_>>()?;
            Batch::tokens(t, b, ids)
        }
    };
    if let Some((_, l)) = ints("lengths")? {
        let lengths = l
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| bad(format!("length {v} is negative or too large"))))
            .collect::<rnn_gpu::Result<_>>()?;
        batch = batch.with_lengths(lengths);
    }
    let (t, b) = (batch.steps, batch.batch);
    // The hidden state has P values with a projection; the cell state has H.
    let state_shape = vec![spec.state_rows(), b, spec.state_size()];
    let cell_shape = vec![spec.state_rows(), b, spec.hidden];
    let input_name = match spec.input {
        InputKind::Dense(_) => "input",
        InputKind::Tokens(_) | InputKind::Embedding { .. } => "tokens",
    };
    only_known(&a.input, &file, &[input_name, "lengths", "h0", "c0"])?;
    let state = |name: &str, want: &[usize]| -> rnn_gpu::Result<Option<Vec<f32>>> {
        match floats(name)? {
            None => Ok(None),
            Some((shape, v)) if shape == want => Ok(Some(v)),
            Some((shape, _)) => Err(bad(format!("tensor {name} has shape {shape:?}; expected {want:?}"))),
        }
    };
    let (h0, c0) = (state("h0", &state_shape)?, state("c0", &cell_shape)?);
    if c0.is_some() && !spec.cell.has_cell_state() {
        return Err(bad(format!("tensor c0 is given, but a {} has no cell state", spec.cell.name())));
    }
    if c0.is_some() && h0.is_none() {
        return Err(bad("tensor c0 is given without h0; give both or neither".into()));
    }
    let start = match &h0 {
        Some(h) => Start::Given { h0: h, c0: c0.as_deref() },
        None => Start::Fresh,
    };
    let f = model.forward(&batch, start)?;
    let mut out = vec![
        ("output".to_string(), vec![t, b, spec.output_size()], TensorData::F32(f.output)),
        ("h_n".to_string(), state_shape.clone(), TensorData::F32(f.h_n)),
    ];
    if let Some(c) = f.c_n {
        out.push(("c_n".into(), cell_shape.clone(), TensorData::F32(c)));
    }
    if let (Some(l), Some(head)) = (f.logits, spec.head) {
        let shape = match head.mode {
            rnn_gpu::OutputMode::ManyToMany => vec![t, b, head.outputs],
            rnn_gpu::OutputMode::ManyToOne => vec![b, head.outputs],
        };
        out.push(("logits".into(), shape, TensorData::F32(l)));
    }
    if let Some(path) = &a.grad_output {
        let g = io::read_tensors(path)?;
        only_known(path, &g, &["output", "h_n", "c_n"])?;
        let get = |name: &str, shape: &[usize]| -> rnn_gpu::Result<Option<Vec<f32>>> {
            let bad = |m: String| Error::File { path: path.clone(), message: m };
            match g.tensors.get(name) {
                None => Ok(None),
                Some((s, TensorData::F32(v))) if s == shape => Ok(Some(v.clone())),
                Some((s, TensorData::F32(_))) => {
                    Err(bad(format!("tensor {name} has shape {s:?}; expected {shape:?}")))
                }
                Some(_) => Err(bad(format!("tensor {name} holds integers; a gradient must be floats"))),
            }
        };
        let dy = get("output", &[t, b, spec.output_size()])?.ok_or_else(|| Error::File {
            path: path.clone(),
            message: "missing tensor `output` [T, B, D*H]".into(),
        })?;
        let d_hn = get("h_n", &state_shape)?;
        let d_cn = get("c_n", &cell_shape)?;
        if d_cn.is_some() && !spec.cell.has_cell_state() {
            return Err(Error::File {
                path: path.clone(),
                message: format!("tensor c_n is given, but a {} has no cell state", spec.cell.name()),
            });
        }
        let grads = model.gradients(&batch, start, &dy, d_hn.as_deref(), d_cn.as_deref())?;
        for (name, v) in grads.params {
            let e = model.layout().get(&name)?;
            let file_name = if bare { name.trim_start_matches("rnn.").to_string() } else { name.clone() };
            out.push((format!("grad.{file_name}"), e.shape.clone(), TensorData::F32(v)));
        }
        if let Some(d) = grads.input {
            out.push(("grad.input".into(), vec![t, b, spec.input.size()], TensorData::F32(d)));
        }
        out.push(("grad.h0".into(), state_shape.clone(), TensorData::F32(grads.h0)));
        if let Some(d) = grads.c0 {
            out.push(("grad.c0".into(), cell_shape, TensorData::F32(d)));
        }
    }
    io::write_tensors(&a.out, &out, &Default::default())?;
    outln!("wrote {} tensors to {}", out.len(), a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Refuses a tensor file holding tensors `forward` would not read, naming the first: a misspelt
/// name (PyTorch's `h_0`) would otherwise be ignored without a word.
pub(crate) fn only_known(
    path: &std::path::Path,
    file: &rnn_gpu::io::TensorFile,
    known: &[&str],
) -> rnn_gpu::Result<()> {
    match file.tensors.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(name) => Err(rnn_gpu::Error::File {
            path: path.to_path_buf(),
            message: format!("tensor {name} is not one forward reads; expected {}", known.join(", ")),
        }),
    }
}
