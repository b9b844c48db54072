//! Whole models, the native CPU device and the GPU against the plain-loop reference: losses over
//! several training steps with each optimizer, then every gradient, for every cell, stacked and
//! bidirectional, with padded sequences, dropout, token and dense inputs, both heads and both
//! losses.

mod common;

use common::gpu;
use rnn_gpu::backend::Backend;
use rnn_gpu::rng::Rng;
use rnn_gpu::{
    Batch, Cell, Clip, Device, Head, InputKind, Loss, Model, ModelSpec, Optimizer, OutputMode, Start,
};

fn batch_for(spec: &ModelSpec, steps: usize, batch: usize, rng: &mut Rng) -> Batch {
    let mut b = match spec.input {
        InputKind::Dense(i) => Batch::dense(steps, batch, rng.uniform_vec(steps * batch * i, -1.0, 1.0)),
        InputKind::Tokens(v) | InputKind::Embedding { vocab: v, .. } => {
            Batch::tokens(steps, batch, (0..steps * batch).map(|_| rng.below(v) as u32).collect())
        }
    };
    let lengths: Vec<usize> = (0..batch).map(|i| if i == 0 { steps } else { 1 + rng.below(steps) }).collect();
    b = b.with_lengths(lengths);
    if let Some(c) = spec.condition {
        b = b.with_condition(rng.uniform_vec(batch * c, -1.0, 1.0));
    }
    let head = spec.head.unwrap();
    let rows = if head.mode == OutputMode::ManyToMany { steps * batch } else { batch };
    match head.loss {
        Loss::CrossEntropy => b.with_classes((0..rows).map(|_| rng.below(head.outputs) as u32).collect()),
        Loss::Mse => b.with_values(rng.uniform_vec(rows * head.outputs, -1.0, 1.0)),
    }
}

/// f32 on both sides, summed in different orders: relative 1e-3 of the tensor's scale.
fn assert_tensor(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (&g, &c)) in got.iter().zip(want).enumerate() {
        let allowed = 1e-3 * scale + 1e-3 * c.abs();
        assert!(
            (g - c).abs() <= allowed,
            "{what}[{i}]: device {g} reference {c} |diff| {} > {allowed} (scale {scale})",
            (g - c).abs()
        );
    }
}

/// The devices checked against the reference: the native CPU device, and the GPU.
fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpu().map(Device::Gpu));
    d
}

fn compare(spec: ModelSpec, steps: usize, batch: usize, optimizer: Optimizer, clip: Clip) {
    for device in devices() {
        compare_on(&device, spec.clone(), steps, batch, optimizer, clip);
    }
}

fn compare_on(
    device: &Device,
    spec: ModelSpec,
    steps: usize,
    batch: usize,
    optimizer: Optimizer,
    clip: Clip,
) {
    let mut rng = Rng::seed_from_u64(3);
    let batches: Vec<Batch> = (0..5).map(|_| batch_for(&spec, steps, batch, &mut rng)).collect();
    let mut on_gpu = Model::new(spec.clone(), device, 5).unwrap();
    let mut on_cpu = Model::new(spec.clone(), &Device::Reference, 5).unwrap();
    for m in [&mut on_gpu, &mut on_cpu] {
        m.set_optimizer(optimizer, clip).unwrap();
    }
    let name = format!(
        "{} {} L{} D{} {:?}",
        device.name(),
        spec.cell.name(),
        spec.layers,
        spec.directions(),
        optimizer
    );
    for (i, b) in batches.iter().enumerate() {
        let g = on_gpu.train_step_stats(b, Start::Fresh).unwrap();
        let c = on_cpu.train_step_stats(b, Start::Fresh).unwrap();
        let allowed = 1e-4 * c.loss.abs() + 1e-5;
        assert!(
            (g.loss - c.loss).abs() <= allowed,
            "{name} step {i}: loss device {} reference {}",
            g.loss,
            c.loss
        );
        assert!(
            (g.grad_norm - c.grad_norm).abs() <= 1e-3 * c.grad_norm + 1e-5,
            "{name} step {i}: grad norm device {} reference {}",
            g.grad_norm,
            c.grad_norm
        );
        assert_eq!(g.step, c.step);
    }
    // After the steps: every gradient, of the parameters, the input and the initial states.
    let probe = &batches[0];
    let (gl, gg) = on_gpu.loss_gradients(probe, Start::Fresh).unwrap();
    let (cl, cg) = on_cpu.loss_gradients(probe, Start::Fresh).unwrap();
    assert!((gl - cl).abs() <= 1e-4 * cl.abs() + 1e-5, "{name}: loss device {gl} reference {cl}");
    for ((n, g), (_, c)) in gg.params.iter().zip(&cg.params) {
        assert_tensor(&format!("{name} grad {n}"), g, c);
    }
    if let (Some(g), Some(c)) = (&gg.input, &cg.input) {
        assert_tensor(&format!("{name} input grad"), g, c);
    }
    assert_tensor(&format!("{name} h0 grad"), &gg.h0, &cg.h0);
    assert_eq!(gg.c0.is_some(), spec.cell == Cell::Lstm, "{name}: a c0 gradient only for an LSTM");
    assert_eq!(cg.c0.is_some(), spec.cell == Cell::Lstm, "{name}: a c0 gradient only for an LSTM");
    if let (Some(g), Some(c)) = (&gg.c0, &cg.c0) {
        assert_tensor(&format!("{name} c0 grad"), g, c);
    }
    let gp = on_gpu.flat_params().unwrap();
    let cp = on_cpu.flat_params().unwrap();
    assert_tensor(&format!("{name} parameters"), &gp, &cp);
}

fn stacked(cell: Cell, hidden: usize, bidirectional: bool) -> ModelSpec {
    ModelSpec {
        layers: 2,
        bidirectional,
        dropout: 0.25,
        output_dropout: 0.2,
        weight_drop: 0.3,
        head: Some(Head { outputs: 7, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
        ..ModelSpec::new(cell, InputKind::Dense(6), hidden)
    }
}

fn optimizers() -> [(Optimizer, Clip); 3] {
    [
        (Optimizer::sgd(0.5, 0.9), Clip { max_norm: 1.0, value: 0.0 }),
        (Optimizer::adagrad(0.05), Clip { max_norm: 0.0, value: 0.5 }),
        (Optimizer::adam(0.01), Clip { max_norm: 0.5, value: 0.0 }),
    ]
}

#[test]
fn lstm_matches_the_reference() {
    for (opt, clip) in optimizers() {
        compare(stacked(Cell::Lstm, 8, false), 6, 5, opt, clip);
    }
    let without_weight_drop = ModelSpec { weight_drop: 0.0, ..stacked(Cell::Lstm, 5, true) };
    compare(without_weight_drop, 5, 9, Optimizer::adam(0.01), Clip::default());
}

#[test]
fn gru_matches_the_reference() {
    for (opt, clip) in optimizers() {
        compare(stacked(Cell::Gru, 8, true), 6, 5, opt, clip);
    }
    compare(stacked(Cell::Gru, 5, false), 5, 9, Optimizer::sgd(0.1, 0.0), Clip::default());
}

#[test]
fn rnn_matches_the_reference() {
    for relu in [false, true] {
        for (opt, clip) in optimizers() {
            compare(stacked(Cell::Rnn { relu }, 8, relu), 6, 5, opt, clip);
        }
    }
}

#[test]
fn projected_lstm_matches_the_reference() {
    let projected = |bidirectional| ModelSpec { proj: 3, ..stacked(Cell::Lstm, 8, bidirectional) };
    for (opt, clip) in optimizers() {
        compare(projected(false), 6, 5, opt, clip);
    }
    compare(projected(true), 5, 9, Optimizer::adamw(0.01), Clip::default());
    let many_to_one = ModelSpec {
        head: Some(Head { outputs: 3, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        input: InputKind::Tokens(11),
        ..projected(true)
    };
    compare(many_to_one, 7, 10, Optimizer::adam(0.01), Clip { max_norm: 1.0, value: 0.0 });
    // P near H: the native device's steps read the product W_hh·W_hr, as the GPU's do, where
    // multiplying by the factors would take more work.
    let wide = ModelSpec { proj: 7, ..stacked(Cell::Lstm, 8, true) };
    assert!(!rnn_gpu::native::NativeBackend::steps_take_factors(4, 8, 7));
    assert!(rnn_gpu::native::NativeBackend::steps_take_factors(4, 8, 3));
    compare(wide, 5, 9, Optimizer::adam(0.01), Clip::default());
}

#[test]
fn tokens_many_to_one_and_learned_state_match_the_reference() {
    for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn { relu: false }] {
        let spec = common::regressor(cell, InputKind::Tokens(11), 12, 3);
        compare(spec, 7, 10, Optimizer::adam(0.01), Clip { max_norm: 1.0, value: 0.0 });
    }
}

#[test]
fn embedding_input_matches_the_reference() {
    for cell in [Cell::Lstm, Cell::Gru] {
        let spec = ModelSpec {
            layers: 2,
            bidirectional: true,
            head: Some(Head { outputs: 11, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
            ..ModelSpec::new(cell, InputKind::Embedding { vocab: 11, dim: 6 }, 8)
        };
        compare(spec, 7, 5, Optimizer::adam(0.01), Clip { max_norm: 1.0, value: 0.0 });
    }
}

#[test]
fn char_model_matches_the_reference_at_a_realistic_size() {
    let spec = ModelSpec::char_model(Cell::Lstm, 65, 64, 2);
    compare(spec, 16, 8, Optimizer::adam(2e-3), Clip { max_norm: 5.0, value: 0.0 });
}

#[test]
fn forward_outputs_and_states_match_the_reference() {
    for (device, cell) in devices()
        .iter()
        .flat_map(|d| [Cell::Lstm, Cell::Gru, Cell::Rnn { relu: false }].map(|c| (d.clone(), c)))
    {
        let spec = stacked(cell, 6, true);
        let mut rng = Rng::seed_from_u64(8);
        let b = batch_for(&spec, 5, 4, &mut rng);
        let mut g = Model::new(spec.clone(), &device, 1).unwrap();
        let mut c = Model::new(spec.clone(), &Device::Reference, 1).unwrap();
        let (fg, fc) = (g.forward(&b, Start::Fresh).unwrap(), c.forward(&b, Start::Fresh).unwrap());
        assert_tensor("output", &fg.output, &fc.output);
        assert_tensor("h_n", &fg.h_n, &fc.h_n);
        assert_tensor("logits", fg.logits.as_ref().unwrap(), fc.logits.as_ref().unwrap());
        assert_eq!(fg.c_n.is_some(), cell == Cell::Lstm);
        assert_eq!(fc.c_n.is_some(), cell == Cell::Lstm);
        if let (Some(a), Some(b)) = (&fg.c_n, &fc.c_n) {
            assert_tensor("c_n", a, b);
        }
    }
}

#[test]
fn conditioned_initial_state_matches_the_reference() {
    for cell in [Cell::Lstm, Cell::Gru] {
        let spec = ModelSpec { condition: Some(5), ..stacked(cell, 8, true) };
        compare(spec, 6, 9, Optimizer::adam(0.01), Clip::default());
    }
}

/// The execution model, counted as `rnn-gpu bench --verbose --profile` counts it: after warm-up a
/// training step is one submit, no host wait and no allocation, runs the dispatches its program
/// records, and its profile times each of them within the span of the whole replay.
#[test]
fn a_training_step_is_one_submit_without_waits_or_allocation() {
    let Some(ctx) = gpu() else { return };
    let gpu = Device::Gpu(ctx.clone());
    let case = rnn_gpu::bench::quick_cases().remove(0);
    let r = rnn_gpu::bench::time(&case, &gpu, 1, 1).unwrap();
    let step = r.per_step.expect("the GPU counts its work");
    assert_eq!((step.submits, step.host_waits, step.bytes_allocated), (1, 0, 0), "{step:?}");
    let dispatches = r.dispatches().unwrap();
    assert_eq!(step.dispatches as usize, dispatches);
    // 2T + c for one layer: one recurrence kernel per time step each way, the rest batched, and
    // no more than 2T + 17 (the count before the GPU kernel redesign).
    assert!(dispatches >= 2 * case.steps && dispatches <= 2 * case.steps + 17, "{dispatches} dispatches");
    // The mapping names every dispatch, and counts the products' work.
    let mapping = r.mapping.as_ref().unwrap();
    let steps = mapping.iter().filter(|m| m.kernel.starts_with("step_")).count();
    assert!(steps >= 2 * case.steps, "{mapping:?}");
    assert!(mapping.iter().filter(|m| m.kernel == "matmul").all(|m| m.macs > 0 && m.threads == 256));
    assert!(mapping.iter().filter(|m| m.kernel == "step_forward").all(|m| m.macs_per_thread() > 0));
    if ctx.has_timestamps() {
        let p = rnn_gpu::bench::profile(&case, &gpu).unwrap();
        assert_eq!(p.kernels.iter().map(|k| k.1).sum::<usize>(), dispatches);
        assert!(p.kernel_seconds() > 0.0 && p.kernel_seconds() <= p.span * 1.001, "{p:?}");
    }
}

/// An application's own wgpu device (a game engine's, a UI's): rnn-gpu runs on it beside the
/// application's buffers (`GpuContext::from_device`), and trains to the losses it reaches on a
/// context of its own on the same adapter, while the application's buffer keeps its contents.
#[test]
fn a_model_runs_on_the_applications_own_device() {
    let Some(own) = gpu() else { return };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .find(|a| a.get_info().name == own.adapter_info().name)
        .expect("the test context's adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("the application's device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let app_data: Vec<u8> = (0..64u8).collect();
    let app_buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("the application's buffer"),
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    queue.write_buffer(&app_buffer, 0, &app_data);
    let shared = rnn_gpu::gpu::GpuContext::from_device(adapter.get_info(), device.clone(), queue).unwrap();

    let spec = stacked(Cell::Lstm, 8, true);
    let mut rng = Rng::seed_from_u64(31);
    let batch = batch_for(&spec, 5, 3, &mut rng);
    let losses = |device: Device| -> Vec<f32> {
        let mut m = Model::new(spec.clone(), &device, 3).unwrap();
        m.set_optimizer(Optimizer::adam(0.01), Clip { max_norm: 1.0, value: 0.0 }).unwrap();
        (0..3).map(|_| m.train_step_stats(&batch, Start::Fresh).unwrap().loss).collect()
    };
    let (mine, theirs) = (losses(Device::Gpu(own)), losses(Device::Gpu(shared)));
    assert_tensor("losses on the application's device", &theirs, &mine);

    app_buffer.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert_eq!(
        &app_buffer.slice(..).get_mapped_range().unwrap()[..],
        &app_data[..],
        "the application's buffer"
    );
}

/// PyTorch's `batch_first` layout: a batch given `[B, T, I]` (or ids `[B, T]`) runs as the same
/// batch given time-major, outputs convert back, and a wrong length is refused.
#[test]
fn batch_first_batches_and_outputs_convert_both_ways() {
    use rnn_gpu::model::batch::time_major_to_batch_first;
    let (b, t, i, h) = (3, 5, 2, 4);
    let spec = ModelSpec::new(Cell::Gru, InputKind::Dense(i), h);
    let mut rng = Rng::seed_from_u64(41);
    let first = rng.uniform_vec(b * t * i, -1.0, 1.0);
    let mut major = Vec::new();
    for s in 0..t {
        for r in 0..b {
            major.extend_from_slice(&first[(r * t + s) * i..][..i]);
        }
    }
    let mut m = Model::new(spec, &Device::Cpu, 5).unwrap();
    let a = m.forward(&Batch::dense(t, b, major), Start::Fresh).unwrap().output;
    let z = m.forward(&Batch::dense_batch_first(b, t, i, &first).unwrap(), Start::Fresh).unwrap().output;
    assert_eq!(a, z);
    let back = time_major_to_batch_first(&a, t, b, h).unwrap();
    assert_eq!(back[(t + 2) * h..][..h], a[(2 * b + 1) * h..][..h], "sequence 1, step 2");
    let ids: Vec<u32> = (0..(b * t) as u32).collect();
    let tokens = Batch::tokens_batch_first(b, t, &ids).unwrap();
    assert_eq!(
        tokens.input,
        rnn_gpu::Input::Tokens((0..t).flat_map(|s| (0..b).map(move |r| (r * t + s) as u32)).collect())
    );
    let e = Batch::dense_batch_first(b, t, i, &first[1..]).unwrap_err().to_string();
    assert!(e.contains(&(b * t * i - 1).to_string()), "{e}");
}

/// Gradient accumulation and the caller's own loss: two batches accumulated then one update
/// equal one SGD update by the sum of their gradients; an update from a given output gradient
/// equals one by `gradients` of it; a non-finite loss is refused by the guard with the weights
/// untouched; and calls that would lose the accumulated gradients are refused.
#[test]
fn accumulated_and_custom_gradients_update_as_one_step() {
    let spec = ModelSpec {
        layers: 2,
        head: Some(Head { outputs: 5, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
        ..ModelSpec::new(Cell::Lstm, InputKind::Dense(3), 6)
    };
    let mut rng = Rng::seed_from_u64(51);
    let (b1, b2) = (batch_for(&spec, 4, 3, &mut rng), batch_for(&spec, 6, 2, &mut rng));
    let lr = 0.1;
    let sgd = (Optimizer::sgd(lr, 0.0), Clip { max_norm: 0.0, value: 0.0 });
    for device in std::iter::once(Device::Reference).chain(devices()) {
        let what = device.describe();
        let fresh = || {
            let mut m = Model::new(spec.clone(), &device, 9).unwrap();
            m.set_optimizer(sgd.0, sgd.1).unwrap();
            m
        };
        let p0 = fresh().flat_params().unwrap();
        let stepped = |grads: &[Vec<f32>]| -> Vec<f32> {
            p0.iter().enumerate().map(|(i, p)| p - lr * grads.iter().map(|g| g[i]).sum::<f32>()).collect()
        };
        let flat = |g: rnn_gpu::Gradients, m: &Model| {
            let mut v = vec![0.0; m.layout().total()];
            for (e, (_, grad)) in m.layout().entries().iter().zip(g.params) {
                v[e.range()].copy_from_slice(&grad);
            }
            v
        };

        let mut m = fresh();
        m.accumulate(&b1, Start::Fresh).unwrap();
        m.accumulate(&b2, Start::Fresh).unwrap();
        m.apply_update().unwrap();
        let mut r = fresh();
        let g1 = r.loss_gradients(&b1, Start::Fresh).unwrap().1;
        let g1 = flat(g1, &r);
        let g2 = r.loss_gradients(&b2, Start::Fresh).unwrap().1;
        let g2 = flat(g2, &r);
        assert_tensor(&format!("{what}: accumulated"), &m.flat_params().unwrap(), &stepped(&[g1, g2]));
        assert_eq!(m.stats().unwrap().step, 1, "{what}: one update");

        let d_out = rng.uniform_vec(4 * 3 * 6, -1.0, 1.0);
        let mut m = fresh();
        m.accumulate_output_gradient(&b1, Start::Fresh, 0.5, &d_out).unwrap();
        m.apply_update().unwrap();
        assert_eq!(m.stats().unwrap().loss, 0.5, "{what}: the caller's loss");
        let mut r = fresh();
        let g = r.gradients(&b1, Start::Fresh, &d_out, None, None).unwrap();
        let g = flat(g, &r);
        assert_tensor(&format!("{what}: custom loss"), &m.flat_params().unwrap(), &stepped(&[g]));

        let mut m = fresh();
        m.accumulate_output_gradient(&b1, Start::Fresh, f32::NAN, &d_out).unwrap();
        m.apply_update().unwrap();
        assert!(matches!(m.stats(), Err(rnn_gpu::Error::NonFiniteStep { .. })), "{what}: NaN loss refused");
        assert_eq!(m.flat_params().unwrap(), p0, "{what}: weights untouched");

        let mut m = fresh();
        assert!(m.apply_update().is_err(), "{what}: nothing accumulated");
        m.accumulate(&b1, Start::Fresh).unwrap();
        for e in [m.train_step(&b1, Start::Fresh).err(), m.loss_gradients(&b1, Start::Fresh).err()] {
            let e = e.expect("refused while accumulating").to_string();
            assert!(e.contains("apply_update"), "{what}: {e}");
        }
        assert!(m.accumulate_output_gradient(&b1, Start::Fresh, 0.1, &d_out[1..]).is_err(), "{what}: shape");
    }
}

/// Serving sessions: streams stepped one input at a time give the outputs a forward pass over
/// the whole sequences gives; a stream reset mid-way continues as a fresh run from there while
/// the others carry on (zeros, or the learned initial state); bad requests are refused by name.
#[test]
fn session_streams_step_reset_and_match_whole_sequences() {
    let (t, b) = (6, 3);
    for (learn, proj) in [(false, 0), (true, 0), (false, 3)] {
        let spec = ModelSpec {
            layers: 2,
            learn_initial_state: learn,
            proj,
            head: Some(Head { outputs: 4, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
            ..ModelSpec::new(Cell::Lstm, InputKind::Tokens(4), 5)
        };
        let h = spec.output_size();
        let mut rng = Rng::seed_from_u64(61);
        let ids: Vec<u32> = (0..t * b).map(|_| rng.below(4) as u32).collect();
        for device in devices() {
            let what = format!("{} (learned state: {learn}, projection: {proj})", device.describe());
            let mut m = Model::new(spec.clone(), &device, 4).unwrap();
            if learn {
                // A learned initial state that is not zero, so that a reset to zeros would show.
                let mut p = m.flat_params().unwrap();
                for e in m.layout().entries().iter().filter(|e| e.name == "rnn.h0" || e.name == "rnn.c0") {
                    p[e.range()].iter_mut().enumerate().for_each(|(i, v)| *v = 0.1 * (i % 7) as f32 - 0.3);
                }
                m.set_flat_params(&p).unwrap();
            }
            let whole = m.forward(&Batch::tokens(t, b, ids.clone()), Start::Fresh).unwrap().output;
            // Stream 1 restarts at step 3: from there it is a fresh run over its last 3 inputs.
            let tail: Vec<u32> = (3..t).map(|s| ids[s * b + 1]).collect();
            let fresh_tail = m.forward(&Batch::tokens(t - 3, 1, tail), Start::Fresh).unwrap().output;
            let mut session = m.session(b, None).unwrap();
            for s in 0..t {
                let reset: &[usize] = if s == 3 { &[1] } else { &[] };
                let out = session.step(rnn_gpu::Input::Tokens(ids[s * b..][..b].to_vec()), reset).unwrap();
                for stream in 0..b {
                    let got = &out.output[stream * h..][..h];
                    let want = if stream == 1 && s >= 3 {
                        &fresh_tail[(s - 3) * h..][..h]
                    } else {
                        &whole[(s * b + stream) * h..][..h]
                    };
                    assert_tensor(&format!("{what}: stream {stream} step {s}"), got, want);
                }
            }
            let e = session.step(rnn_gpu::Input::Tokens(vec![0; b]), &[b]).unwrap_err().to_string();
            assert!(e.contains("stream to reset"), "{what}: {e}");
        }
    }
    let bidir = ModelSpec { bidirectional: true, ..ModelSpec::char_model(Cell::Gru, 4, 3, 1) };
    let mut m = Model::new(bidir, &Device::Cpu, 1).unwrap();
    assert!(m.session(2, None).err().unwrap().to_string().contains("bidirectional"));
}

/// A conditioned model generates from the state its condition vector makes: two conditions give
/// two continuations, and `generate` without one is refused by name.
#[test]
fn conditioned_models_generate_from_their_condition() {
    let spec = ModelSpec { condition: Some(2), ..ModelSpec::char_model(Cell::Lstm, 6, 8, 1) };
    let mut m = Model::new(spec, &Device::Cpu, 2).unwrap();
    let greedy = rnn_gpu::Sampling { temperature: 0.0, top_k: 0, seed: 1 };
    let a = m.generate_conditioned(&[3.0, -3.0], &[1, 2], 12, greedy).unwrap();
    let b = m.generate_conditioned(&[-3.0, 3.0], &[1, 2], 12, greedy).unwrap();
    assert_eq!(a, m.generate_conditioned(&[3.0, -3.0], &[1, 2], 12, greedy).unwrap());
    assert_ne!(a, b, "the condition changes what is generated");
    let e = m.generate(&[1, 2], 3, greedy).unwrap_err().to_string();
    assert!(e.contains("conditioned"), "{e}");
    let e = m.generate_conditioned(&[1.0], &[1, 2], 3, greedy).unwrap_err().to_string();
    assert!(e.contains("condition"), "{e}");
}
