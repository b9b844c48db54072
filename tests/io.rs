//! Model files and checkpoints: round trips, parity with PyTorch on fixtures it produced,
//! exact resumption, and every malformed file refused with the tensor named.

mod common;

use rnn_gpu::ops::Op;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{devices, fixture, tmp};
use rnn_gpu::io::{self, Metadata, TensorData};
use rnn_gpu::rng::Rng;
use rnn_gpu::{
    Batch, Cell, Clip, Device, Head, InputKind, Loss, Model, ModelSpec, Optimizer, OutputMode, Start,
};

fn floats(f: &io::TensorFile, name: &str) -> Vec<f32> {
    match &f.tensors.get(name).unwrap_or_else(|| panic!("fixture lacks {name}")).1 {
        TensorData::F32(v) => v.clone(),
        TensorData::Int(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{what}[{i}]: rnn-gpu {g} PyTorch {w}");
    }
}

/// torch.nn.RNN/LSTM/GRU state_dicts and what PyTorch computed from them
/// (tests/fixtures/make_fixtures.py): outputs, final states, and every gradient, with padded
/// sequences, stacked and bidirectional, and LSTMs with projections (`proj_size`), on each device.
#[test]
fn pytorch_state_dicts_load_and_match_pytorch() {
    for (case, cell) in [
        ("rnn_tanh", Cell::Rnn { relu: false }),
        ("rnn_relu_bidir", Cell::Rnn { relu: true }),
        ("lstm", Cell::Lstm),
        ("lstm_bidir", Cell::Lstm),
        ("gru", Cell::Gru),
        ("gru_bidir", Cell::Gru),
        ("lstm_proj", Cell::Lstm),
        ("lstm_proj_bidir", Cell::Lstm),
    ] {
        let exp = io::read_tensors(&fixture(&format!("{case}.expected.safetensors"))).unwrap();
        let (t, b, _) = match exp.tensors["input"].0[..] {
            [t, b, i] => (t, b, i),
            _ => panic!("input shape"),
        };
        for device in devices() {
            let (mut m, _) =
                io::load_model(&fixture(&format!("{case}.model.safetensors")), &device, Some(cell)).unwrap();
            let lengths: Vec<usize> = floats(&exp, "lengths").iter().map(|&v| v as usize).collect();
            let batch = Batch::dense(t, b, floats(&exp, "input")).with_lengths(lengths);
            let h0 = floats(&exp, "h0");
            let c0 = exp.tensors.contains_key("c0").then(|| floats(&exp, "c0"));
            let start = Start::Given { h0: &h0, c0: c0.as_deref() };
            let f = m.forward(&batch, start).unwrap();
            let what = format!("{case} on {}", device.describe());
            close(&format!("{what} output"), &f.output, &floats(&exp, "output"));
            close(&format!("{what} h_n"), &f.h_n, &floats(&exp, "h_n"));
            if let Some(cn) = &f.c_n {
                close(&format!("{what} c_n"), cn, &floats(&exp, "c_n"));
            }
            // The projected cases' loss reaches the final states too.
            let state_grad = |name: &str| exp.tensors.contains_key(name).then(|| floats(&exp, name));
            let (d_hn, d_cn) = (state_grad("grad_h_n"), state_grad("grad_c_n"));
            let g = m
                .gradients(&batch, start, &floats(&exp, "grad_output"), d_hn.as_deref(), d_cn.as_deref())
                .unwrap();
            for (name, grad) in &g.params {
                let torch_name = format!("grad.{}", name.trim_start_matches("rnn."));
                close(&format!("{what} {torch_name}"), grad, &floats(&exp, &torch_name));
            }
            close(&format!("{what} grad.input"), g.input.as_ref().unwrap(), &floats(&exp, "grad.input"));
            close(&format!("{what} grad.h0"), &g.h0, &floats(&exp, "grad.h0"));
            if let Some(dc0) = &g.c0 {
                close(&format!("{what} grad.c0"), dc0, &floats(&exp, "grad.c0"));
            }
        }
    }
}

/// A bidirectional many-to-one model as PyTorch users build it: a 2-layer bidirectional GRU whose
/// top layer's final states of both directions (`h_n[-2]`, `h_n[-1]`) feed a Linear head, mean
/// squared error (tests/fixtures/make_fixtures.py). The reverse direction's final state is its
/// output at step 0: the head's output, the loss and every gradient match PyTorch's, with
/// variable lengths, on each device.
#[test]
fn bidirectional_many_to_one_reads_both_final_states_as_torch() {
    let f = io::read_tensors(&fixture("many_to_one_gru_bidir.safetensors")).unwrap();
    let spec = ModelSpec {
        layers: 2,
        bidirectional: true,
        head: Some(Head { outputs: 2, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(Cell::Gru, InputKind::Dense(3), 4)
    };
    let layout = rnn_gpu::model::params::ParamLayout::new(&spec);
    let mut params = vec![0.0; layout.total()];
    for e in layout.entries() {
        params[e.range()].copy_from_slice(&floats(&f, &e.name));
    }
    let lengths: Vec<usize> = floats(&f, "lengths").iter().map(|&v| v as usize).collect();
    let batch =
        Batch::dense(5, 3, floats(&f, "input")).with_lengths(lengths).with_values(floats(&f, "target"));
    for device in devices() {
        let what = format!("many-to-one on {}", device.describe());
        let mut m = Model::with_flat_params(spec.clone(), &device, &params, 1).unwrap();
        close(&format!("{what} pred"), &m.logits(&batch, Start::Fresh).unwrap(), &floats(&f, "pred"));
        let (loss, g) = m.loss_gradients(&batch, Start::Fresh).unwrap();
        close(&format!("{what} loss"), &[loss], &floats(&f, "loss"));
        for (name, grad) in &g.params {
            close(&format!("{what} grad.{name}"), grad, &floats(&f, &format!("grad.{name}")));
        }
    }
}

/// A PyTorch module for token input, `nn.Embedding` -> `nn.LSTM` -> `nn.Linear` named
/// `embedding`, `rnn` and `head`: its state_dict loads under its own names as a model with an
/// embedding, and the logits, the cross-entropy over the valid positions of padded sequences and
/// every gradient (the embedding's included) match PyTorch's on each device
/// (tests/fixtures/make_fixtures.py).
#[test]
fn pytorch_embedding_lstm_linear_loads_and_matches() {
    let exp = io::read_tensors(&fixture("embedding_lstm.expected.safetensors")).unwrap();
    let (t, b) = match exp.tensors["tokens"].0[..] {
        [t, b] => (t, b),
        _ => panic!("tokens shape"),
    };
    let ints = |name: &str| -> Vec<u32> { floats(&exp, name).iter().map(|&v| v as u32).collect() };
    let lengths: Vec<usize> = ints("lengths").iter().map(|&v| v as usize).collect();
    let batch = Batch::tokens(t, b, ints("tokens")).with_lengths(lengths).with_classes(ints("targets"));
    for device in devices() {
        let what = format!("embedding model on {}", device.describe());
        let (mut m, _) =
            io::load_model(&fixture("embedding_lstm.model.safetensors"), &device, Some(Cell::Lstm)).unwrap();
        assert_eq!(m.spec().input, InputKind::Embedding { vocab: 7, dim: 5 }, "{what}");
        close(&format!("{what} logits"), &m.logits(&batch, Start::Fresh).unwrap(), &floats(&exp, "logits"));
        let (loss, g) = m.loss_gradients(&batch, Start::Fresh).unwrap();
        close(&format!("{what} loss"), &[loss], &floats(&exp, "loss"));
        assert_eq!(g.params.len(), 1 + 2 * 4 + 2, "{what}: embedding, two layers, head");
        for (name, grad) in &g.params {
            close(&format!("{what} grad.{name}"), grad, &floats(&exp, &format!("grad.{name}")));
        }
        // Saved and loaded as an rnn-gpu model file, it is the same model.
        let path = tmp(&format!("embedding-{}.safetensors", device.describe().len()));
        io::save_model(&path, &mut m, &Metadata::new()).unwrap();
        let (mut again, _) = io::load_model(&path, &device, None).unwrap();
        assert_eq!(again.spec(), m.spec());
        assert_eq!(again.flat_params().unwrap(), m.flat_params().unwrap());
    }
}

fn specs() -> Vec<ModelSpec> {
    let mut v = Vec::new();
    for cell in [Cell::Rnn { relu: false }, Cell::Rnn { relu: true }, Cell::Lstm, Cell::Gru] {
        v.push(ModelSpec::char_model(cell, 7, 5, 2));
        v.push(ModelSpec {
            bidirectional: true,
            learn_initial_state: true,
            dropout: 0.1,
            output_dropout: 0.2,
            weight_drop: 0.15,
            head: Some(Head { outputs: 2, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
            ..ModelSpec::new(cell, InputKind::Dense(3), 4)
        });
        v.push(ModelSpec { layers: 3, ..ModelSpec::new(cell, InputKind::Dense(2), 3) });
        v.push(ModelSpec {
            input: InputKind::Embedding { vocab: 7, dim: 3 },
            ..ModelSpec::char_model(cell, 7, 5, 1)
        });
    }
    v.push(ModelSpec { proj: 3, bidirectional: true, ..ModelSpec::char_model(Cell::Lstm, 7, 5, 2) });
    v
}

#[test]
fn every_cell_and_layout_round_trips() {
    for device in devices() {
        for (i, spec) in specs().into_iter().enumerate() {
            let mut m = Model::new(spec.clone(), &device, i as u64).unwrap();
            let path = tmp(&format!("round{i}.safetensors"));
            let mut extra = Metadata::new();
            extra.insert("vocab".into(), "abc\n\"x".into());
            io::save_model(&path, &mut m, &extra).unwrap();
            let (mut back, meta) = io::load_model(&path, &device, None).unwrap();
            assert_eq!(back.spec(), &spec);
            assert_eq!(meta["vocab"], "abc\n\"x");
            assert_eq!(back.flat_params().unwrap(), m.flat_params().unwrap());
        }
    }
}

fn char_batches(n: usize) -> Vec<Batch> {
    let mut rng = Rng::seed_from_u64(9);
    (0..n)
        .map(|_| {
            let ids: Vec<u32> = (0..6 * 4).map(|_| rng.below(7) as u32).collect();
            let tg: Vec<u32> = (0..6 * 4).map(|_| rng.below(7) as u32).collect();
            Batch::tokens(6, 4, ids).with_classes(tg)
        })
        .collect()
}

/// Training over chunks with the state carried (truncated BPTT), stopped after three and resumed
/// from the checkpoint, gives the same losses as a run that was not stopped: the optimizer state,
/// the dropout generator and the carried state (of P values with a projection) all come back.
#[test]
fn resuming_a_checkpoint_gives_the_same_losses() {
    let start = |k: usize| if k == 0 { Start::Fresh } else { Start::Continue };
    for (device, proj) in devices().into_iter().flat_map(|d| [(d.clone(), 0), (d, 4)]) {
        let spec = ModelSpec { dropout: 0.3, proj, ..ModelSpec::char_model(Cell::Lstm, 7, 6, 2) };
        let batches = char_batches(6);
        let opt = Optimizer::adam(0.02);
        let clip = Clip { max_norm: 1.0, value: 0.0 };
        let mut straight = Model::new(spec.clone(), &device, 3).unwrap();
        straight.set_optimizer(opt, clip).unwrap();
        let expected: Vec<f32> = batches
            .iter()
            .enumerate()
            .map(|(k, b)| straight.train_step_stats(b, start(k)).unwrap().loss)
            .collect();

        let mut first = Model::new(spec.clone(), &device, 3).unwrap();
        first.set_optimizer(opt, clip).unwrap();
        let mut got: Vec<f32> = batches[..3]
            .iter()
            .enumerate()
            .map(|(k, b)| first.train_step_stats(b, start(k)).unwrap().loss)
            .collect();
        let path = tmp("resume.safetensors");
        let mut progress = Metadata::new();
        progress.insert("train.step".into(), "3".into());
        let carried = first.carried_state(batches[0].batch).unwrap().expect("a state to carry");
        assert!(carried.c.is_some(), "an LSTM carries its cell state too");
        io::save_checkpoint(&path, &mut first, Some(&carried), &progress).unwrap();
        drop(first);
        let ck = io::load_checkpoint(&path, &device).unwrap();
        let mut resumed = ck.model;
        assert_eq!(ck.metadata["train.step"], "3");
        assert_eq!(ck.carried.as_ref(), Some(&carried));
        assert_eq!(resumed.optimizer(), opt);
        let state = ck.carried.unwrap();
        for (k, b) in batches[3..].iter().enumerate() {
            let s = if k == 0 { state.start() } else { Start::Continue };
            got.push(resumed.train_step_stats(b, s).unwrap().loss);
        }
        assert_eq!(got, expected, "losses after resuming differ on {}", device.describe());
        assert_eq!(resumed.stats().unwrap().step, 6);
    }
}

/// A checkpoint written on one device resumes on every other: each continues from the same
/// weights, optimizer moments and carried state, and their losses agree to f32 rounding.
#[test]
fn a_checkpoint_resumes_on_any_device() {
    let spec = ModelSpec { dropout: 0.3, ..ModelSpec::char_model(Cell::Gru, 7, 6, 2) };
    let batches = char_batches(5);
    let mut first = Model::new(spec.clone(), &Device::Cpu, 3).unwrap();
    first.set_optimizer(Optimizer::adam(0.02), Clip { max_norm: 1.0, value: 0.0 }).unwrap();
    for (k, b) in batches[..2].iter().enumerate() {
        first.train_step_stats(b, if k == 0 { Start::Fresh } else { Start::Continue }).unwrap();
    }
    let path = tmp("any-device.safetensors");
    let carried = first.carried_state(batches[0].batch).unwrap().expect("a state to carry");
    io::save_checkpoint(&path, &mut first, Some(&carried), &Metadata::new()).unwrap();
    let mut curves = Vec::new();
    for device in devices() {
        let ck = io::load_checkpoint(&path, &device).unwrap();
        let (mut m, state) = (ck.model, ck.carried.unwrap());
        let losses: Vec<f32> = batches[2..]
            .iter()
            .enumerate()
            .map(|(k, b)| {
                m.train_step_stats(b, if k == 0 { state.start() } else { Start::Continue }).unwrap().loss
            })
            .collect();
        assert_eq!(m.stats().unwrap().step, 5, "{}", device.name());
        curves.push((device.name(), losses));
    }
    let (_, want) = &curves[0];
    for (name, got) in &curves[1..] {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-4 * w.abs() + 1e-5, "{name}: {got:?} against {want:?}");
        }
    }
}

/// Files are replaced atomically: the temporary file is gone afterwards, a failed write leaves no
/// file behind, and the temporary files of writers that were killed are cleaned up.
#[test]
fn writes_are_atomic() {
    let dir = common::test_dir("writes_are_atomic");
    let path = dir.join("atomic.bin");
    // A dead writer's leftover (no process has this id: Linux caps ids at 2^22) and a live
    // one's (process 1 always runs).
    let dead = dir.join(".atomic.bin.tmp999999999");
    let live = dir.join(".atomic.bin.tmp1");
    std::fs::write(&dead, b"half").unwrap();
    std::fs::write(&live, b"busy").unwrap();
    io::write_atomic(&path, b"first").unwrap();
    io::write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    if cfg!(target_os = "linux") {
        assert_eq!(names, [".atomic.bin.tmp1", "atomic.bin"], "what the writes left");
    }
    let missing = dir.join("no/such/dir/x.safetensors");
    assert!(io::write_atomic(&missing, b"x").is_err());
    assert!(!missing.exists());
}

fn write_raw(
    name: &str,
    tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    meta: Option<Metadata>,
) -> PathBuf {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = meta.map(|m| m.into_iter().collect());
    let bytes = safetensors::serialize(views, meta).unwrap();
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect()
}

/// A good file of a 1-layer GRU (I=2, H=3) with a head, to break in each test below.
fn good_tensors() -> Vec<(&'static str, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    use safetensors::Dtype::F32;
    vec![
        ("rnn.weight_ih_l0", F32, vec![9, 2], f32s(18)),
        ("rnn.weight_hh_l0", F32, vec![9, 3], f32s(27)),
        ("rnn.bias_ih_l0", F32, vec![9], f32s(9)),
        ("rnn.bias_hh_l0", F32, vec![9], f32s(9)),
        ("head.weight", F32, vec![2, 3], f32s(6)),
        ("head.bias", F32, vec![2], f32s(2)),
    ]
}

fn good_meta() -> Metadata {
    let spec = ModelSpec {
        head: Some(Head { outputs: 2, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
        ..ModelSpec::new(Cell::Gru, InputKind::Dense(2), 3)
    };
    io::spec_metadata(&spec)
}

fn refused(path: &Path, expected: &str) {
    let e = io::load_model(path, &Device::Cpu, None).err().expect("refused");
    let text = e.to_string();
    assert!(text.contains(expected), "expected {expected:?} in {text:?}");
}

#[test]
fn malformed_files_are_refused_naming_the_tensor() {
    use safetensors::Dtype;
    // The good file loads.
    let ok = write_raw("good.safetensors", good_tensors(), Some(good_meta()));
    io::load_model(&ok, &Device::Cpu, None).unwrap();

    // A wrong dtype.
    let mut t = good_tensors();
    t[1] = ("rnn.weight_hh_l0", Dtype::F16, vec![9, 3], vec![0; 54]);
    refused(&write_raw("dtype.safetensors", t, Some(good_meta())), "rnn.weight_hh_l0 has dtype F16");

    // A shape that disagrees with the metadata.
    let mut t = good_tensors();
    t[0] = ("rnn.weight_ih_l0", Dtype::F32, vec![9, 4], f32s(36));
    refused(&write_raw("shape.safetensors", t, Some(good_meta())), "rnn.weight_ih_l0 has shape [9, 4]");

    // A missing tensor.
    let mut t = good_tensors();
    t.remove(5);
    refused(&write_raw("missing.safetensors", t, Some(good_meta())), "missing tensor head.bias");

    // Integers where floats belong.
    let mut t = good_tensors();
    t[2] = ("rnn.bias_ih_l0", Dtype::I64, vec![9], vec![0; 72]);
    refused(&write_raw("ints.safetensors", t, Some(good_meta())), "rnn.bias_ih_l0 holds integers");

    // A non-finite value.
    let mut t = good_tensors();
    let mut nan = f32s(9);
    nan[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    t[3] = ("rnn.bias_hh_l0", Dtype::F32, vec![9], nan);
    refused(
        &write_raw("nan.safetensors", t, Some(good_meta())),
        "rnn.bias_hh_l0 holds a non-finite value at index 1",
    );

    // Absurd sizes in the metadata: refused before anything is allocated for them.
    let mut m = good_meta();
    m.insert("hidden".into(), "1000000000000".into());
    refused(&write_raw("absurd.safetensors", good_tensors(), Some(m)), "hidden = 1000000000000 is absurd");
    let mut m = good_meta();
    m.insert("cell".into(), "transformer".into());
    refused(&write_raw("cell.safetensors", good_tensors(), Some(m)), "unknown cell");

    // Truncated data, a header claiming more than the file holds, garbage, an empty file.
    let bytes = std::fs::read(&ok).unwrap();
    let cut = tmp("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    refused(&cut, "not a valid safetensors file");
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let huge_path = tmp("huge_header.safetensors");
    std::fs::write(&huge_path, huge).unwrap();
    refused(&huge_path, "not a valid safetensors file");
    let garbage = tmp("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a model").unwrap();
    refused(&garbage, "not a valid safetensors file");
    let empty = tmp("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    refused(&empty, "not a valid safetensors file");
    refused(&tmp("does-not-exist.safetensors"), "No such file");

    // A bare state_dict: its cell must be named, and its shapes must fit that cell.
    let bare: Vec<_> = good_tensors()
        .into_iter()
        .take(4)
        .map(|(n, d, s, b)| (n.trim_start_matches("rnn."), d, s, b))
        .collect();
    let bare_path = write_raw("bare.safetensors", bare, None);
    refused(&bare_path, "name its cell");
    let e = io::load_model(&bare_path, &Device::Cpu, Some(Cell::Lstm)).err().unwrap();
    assert!(e.to_string().contains("weight_hh_l0 has shape [9, 3]"), "{e}");
    let (m, _) = io::load_model(&bare_path, &Device::Cpu, Some(Cell::Gru)).unwrap();
    assert_eq!(m.spec().hidden, 3);
    assert_eq!(m.spec().input, InputKind::Dense(2));
    // A projected LSTM's, named as a GRU.
    let e =
        io::load_model(&fixture("lstm_proj.model.safetensors"), &Device::Cpu, Some(Cell::Gru)).err().unwrap();
    assert!(
        e.to_string().contains("weight_hr_l0 is an LSTM's projection, but the cell named is a gru"),
        "{e}"
    );

    // A checkpoint without its optimizer state.
    refused_checkpoint(&ok, "optimizer.name");
}

/// Files that describe something other than what they hold: every tensor must be used, sizes
/// are bounded before any allocation, and vocabularies must fit the model.
#[test]
fn inconsistent_files_are_refused_naming_the_problem() {
    use safetensors::Dtype;
    // A 4 KB file whose metadata claims a model of terabytes.
    let mut m = good_meta();
    m.insert("hidden".into(), "16384".into());
    m.insert("layers".into(), "1000".into());
    refused(
        &write_raw("terabytes.safetensors", good_tensors(), Some(m)),
        "the parameter count = 1609905864706 is out of range",
    );
    let mut m = good_meta();
    m.insert("hidden".into(), "16384".into());
    refused(
        &write_raw("big-hidden.safetensors", good_tensors(), Some(m)),
        "tensor rnn.weight_ih_l0 has shape [9, 2]; the model needs [49152, 2]",
    );

    // Tensors beyond the model the metadata describes: a second layer, or an unknown name.
    let mut t = good_tensors();
    t.push(("rnn.weight_ih_l1", Dtype::F32, vec![9, 3], f32s(27)));
    refused(
        &write_raw("extra-layer.safetensors", t, Some(good_meta())),
        "tensor rnn.weight_ih_l1 is not part",
    );
    let mut t = good_tensors();
    t.push(("mystery", Dtype::F32, vec![1], f32s(1)));
    refused(&write_raw("unknown.safetensors", t, Some(good_meta())), "tensor mystery is not part");

    // A bare 2-layer state_dict missing weight_ih_l1 does not run as one layer.
    let mut bare: Vec<_> = good_tensors()
        .into_iter()
        .take(4)
        .map(|(n, d, s, b)| (n.trim_start_matches("rnn."), d, s, b))
        .collect();
    bare.push(("weight_hh_l1", Dtype::F32, vec![9, 3], f32s(27)));
    bare.push(("bias_ih_l1", Dtype::F32, vec![9], f32s(9)));
    bare.push(("bias_hh_l1", Dtype::F32, vec![9], f32s(9)));
    let e = io::load_model(&write_raw("bare-gap.safetensors", bare, None), &Device::Cpu, Some(Cell::Gru));
    let e = e.err().unwrap().to_string();
    assert!(e.contains("tensor bias_hh_l1 is not part"), "{e}");

    // A seq2seq file marked attention=false that holds attention tensors.
    use rnn_gpu::seq2seq::{Seq2Seq, Seq2SeqSpec};
    let spec = Seq2SeqSpec {
        cell: Cell::Gru,
        src_vocab: 4,
        tgt_vocab: 5,
        embed: 3,
        enc_hidden: 4,
        enc_layers: 1,
        bidirectional: false,
        dec_hidden: 4,
        dec_layers: 1,
        attention: true,
        dropout: 0.0,
        bos: 3,
        eos: 4,
    };
    let path = tmp("s2s-attention.safetensors");
    let mut vocab = Metadata::new();
    vocab.insert("src_chars".into(), "abcd".into());
    vocab.insert("tgt_chars".into(), "xyz".into());
    Seq2Seq::new(spec.clone(), &Device::Cpu, 1).unwrap().save(&path, &vocab).unwrap();
    let mut f = io::read_tensors(&path).unwrap();
    let rewrite = |f: &io::TensorFile, name: &str| {
        let p = tmp(name);
        let t: Vec<_> = f.tensors.iter().map(|(n, (s, d))| (n.clone(), s.clone(), d.clone())).collect();
        io::write_tensors(&p, &t, &f.metadata).unwrap();
        p
    };
    f.metadata.insert("attention".into(), "false".into());
    let e = Seq2Seq::load(&rewrite(&f, "s2s-no-attention.safetensors"), &Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("is not part"), "{e}");
    f.metadata.insert("attention".into(), "true".into());
    f.metadata.insert("eos".into(), "3".into());
    let e = Seq2Seq::load(&rewrite(&f, "s2s-bos-eos.safetensors"), &Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("bos and eos are both 3"), "{e}");

    // Vocabularies: too short, a character twice, BOS/EOS not after the target characters.
    let (model, meta) = Seq2Seq::load(&path, &Device::Cpu).unwrap();
    let check = |key: &str, value: &str, expected: &str| {
        let mut m = meta.clone();
        m.insert(key.into(), value.into());
        let e = rnn_gpu::seq2seq::train::vocab_from_metadata(&path, &m, model.spec()).err().unwrap();
        assert!(e.to_string().contains(expected), "{key} = {value:?}: {e}");
    };
    check("src_chars", "abc", "the source vocabulary has 3 characters; the model has 4");
    check("src_chars", "abca", "'a' appears twice in the source vocabulary");
    check("tgt_chars", "xy", "the target vocabulary has 2 characters");
    let e = rnn_gpu::data::checked_vocab(&path, "character", "abcc", 4).err().unwrap();
    assert!(e.to_string().contains("'c' appears twice"), "{e}");
    // An unsorted vocabulary encodes by position.
    let corpus = rnn_gpu::data::TextCorpus { vocab: vec!['z', 'a', 'm'], ids: Vec::new() };
    assert_eq!(corpus.encode("maz").unwrap(), vec![2, 1, 0]);
}

/// A bounded fuzz of the loader: seeded byte flips and splices of a model file and of a
/// checkpoint, every truncation of the model file, and absurd header lengths. Each must load or
/// be refused with a message; never a panic, an abort or an allocation past the file's size.
#[test]
fn fuzzed_files_load_or_are_refused_never_panic() {
    let ok = write_raw("fuzz-good.safetensors", good_tensors(), Some(good_meta()));
    let model_bytes = std::fs::read(&ok).unwrap();
    let spec = ModelSpec::char_model(Cell::Lstm, 5, 3, 1);
    let mut m = Model::new(spec, &Device::Cpu, 1).unwrap();
    m.set_optimizer(Optimizer::adam(0.01), Clip::default()).unwrap();
    let ck_path = tmp("fuzz-checkpoint.safetensors");
    io::save_checkpoint(&ck_path, &mut m, None, &Metadata::new()).unwrap();
    let ck_bytes = std::fs::read(&ck_path).unwrap();

    let path = tmp("fuzz-case.safetensors");
    let try_load = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let a = io::load_model(&path, &Device::Cpu, None).map(|_| ());
            let b = io::load_checkpoint(&path, &Device::Cpu).map(|_| ());
            let c = io::load_model(&path, &Device::Cpu, Some(Cell::Gru)).map(|_| ());
            [a, b, c]
        });
        let results = outcome.unwrap_or_else(|_| panic!("the loader panicked on {what}"));
        for r in results {
            if let Err(e) = r {
                assert!(!e.to_string().is_empty(), "{what}: an empty message");
            }
        }
    };
    let mut rng = rnn_gpu::rng::Rng::seed_from_u64(2026);
    let mut cases = 0;
    for (name, bytes) in [("model", &model_bytes), ("checkpoint", &ck_bytes)] {
        for i in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len());
                match rng.below(3) {
                    0 => b[at] ^= 1 << rng.below(8),
                    1 => b[at] = rng.below(256) as u8,
                    // Digits in the JSON header become other digits: sizes and offsets change.
                    _ => b[at] = if b[at].is_ascii_digit() { b'0' + rng.below(10) as u8 } else { b[at] },
                }
            }
            try_load(&b, &format!("{name} mutation {i}"));
            cases += 1;
        }
    }
    for cut in 0..model_bytes.len() {
        try_load(&model_bytes[..cut], &format!("the model cut at {cut}"));
        cases += 1;
    }
    for header in [0u64, 1, 7, 8, 1 << 20, u32::MAX as u64, u64::MAX, u64::MAX / 2, model_bytes.len() as u64]
    {
        let mut b = model_bytes.clone();
        b[..8].copy_from_slice(&header.to_le_bytes());
        try_load(&b, &format!("header length {header}"));
        cases += 1;
    }
    assert!(cases > 900, "{cases} cases");
}

fn refused_checkpoint(path: &Path, expected: &str) {
    let e = io::load_checkpoint(path, &Device::Cpu).err().expect("refused");
    assert!(e.to_string().contains(expected), "expected {expected:?} in {e}");
}

#[test]
fn tensor_files_round_trip_floats_and_integers() {
    let path = tmp("tensors.safetensors");
    let t = vec![
        ("a".to_string(), vec![2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.5])),
        ("ids".to_string(), vec![3], TensorData::Int(vec![1, -2, 3])),
    ];
    let mut meta = Metadata::new();
    meta.insert("k".into(), "v".into());
    io::write_tensors(&path, &t, &meta).unwrap();
    let back = io::read_tensors(&path).unwrap();
    let expect: BTreeMap<String, (Vec<usize>, TensorData)> =
        t.into_iter().map(|(n, s, d)| (n, (s, d))).collect();
    assert_eq!(back.tensors, expect);
    assert_eq!(back.metadata["k"], "v");
}

/// Each update rule against torch.optim over five steps of the same gradients, on every CPU
/// device through its `update` op (tests/fixtures/make_fixtures.py; the GPU's update is checked
/// against the same twin by `verify`). AdamW's decoupled weight decay differs from Adam's L2 one
/// from the first step on, so the two fixtures tell them apart.
#[test]
fn update_rules_match_torch_optim() {
    use rnn_gpu::backend::Backend;
    use rnn_gpu::ops::step_state;
    use rnn_gpu::update::{Adagrad, Adam, AdamW, Sgd};
    let rules: [(&str, Optimizer); 4] = [
        ("adamw", AdamW(Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }).into()),
        ("adam", Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }.into()),
        ("sgd_nesterov", Sgd { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.1 }.into()),
        ("adagrad", Adagrad { lr: 0.1, eps: 1e-10, weight_decay: 0.1 }.into()),
    ];
    fn steps<B: Backend<Elem = f32>>(be: &mut B, rule: &Optimizer, p0: &[f32], grads: &[f32]) -> Vec<f32> {
        let n = p0.len();
        let alloc = |be: &mut B, v: &[f32]| {
            let t = be.alloc("test", v.len()).unwrap();
            be.write(&t, v).unwrap();
            t
        };
        let (param, grad) = (alloc(be, p0), alloc(be, &vec![0.0; n]));
        let slots: Vec<B::Buf> = (0..rule.state_slots()).map(|_| alloc(be, &vec![0.0; n])).collect();
        let state = alloc(be, &[0.0; step_state::LEN]);
        let mut after = Vec::new();
        for (t, g) in grads.chunks(n).enumerate() {
            let mut s = vec![0.0; step_state::LEN];
            (s[step_state::OK], s[step_state::STEP], s[step_state::LR], s[step_state::CLIP_SCALE]) =
                (1.0, (t + 1) as f32, rule.lr(), 1.0);
            be.write(&state, &s).unwrap();
            be.write(&grad, g).unwrap();
            be.run(Op::Update {
                param: &param,
                grad: &grad,
                slots: &slots.iter().collect::<Vec<_>>(),
                state: &state,
                rule,
            })
            .unwrap();
            after.extend(rnn_gpu::wait::block_on("test", be.read(&param)).unwrap());
        }
        after
    }
    for (name, rule) in rules {
        let f = io::read_tensors(&fixture(&format!("optim_{name}.safetensors"))).unwrap();
        let (p0, grads, want) = (floats(&f, "p0"), floats(&f, "grads"), floats(&f, "after"));
        let native = steps(&mut rnn_gpu::native::NativeBackend::new().unwrap(), &rule, &p0, &grads);
        let reference = steps(&mut rnn_gpu::reference::ReferenceBackend::<f32>::new(), &rule, &p0, &grads);
        close(&format!("{name} on the native device"), &native, &want);
        close(&format!("{name} on the reference"), &reference, &want);
    }
}
