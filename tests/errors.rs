//! Bad input gets a clear error naming the value and what was expected, never a panic, and the
//! model is left as it was.

mod common;

use common::{devices, gpu};
use rnn_gpu::gpu::Program;
use rnn_gpu::gpu::kernels as gk;
use rnn_gpu::ops::Matmul;
use rnn_gpu::{
    Batch, Cell, Clip, Device, Error, Head, InputKind, Loss, Model, ModelSpec, Optimizer, OutputMode, Start,
};

fn char_model(device: &Device) -> Model {
    Model::new(ModelSpec::char_model(Cell::Lstm, 5, 4, 1), device, 1).unwrap()
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn invalid_specs_are_refused() {
    for spec in [
        ModelSpec::new(Cell::Lstm, InputKind::Dense(3), 0),
        ModelSpec { layers: 0, ..ModelSpec::new(Cell::Gru, InputKind::Dense(3), 4) },
        ModelSpec::new(Cell::Gru, InputKind::Tokens(0), 4),
        ModelSpec { dropout: 1.0, ..ModelSpec::new(Cell::Gru, InputKind::Dense(3), 4) },
        ModelSpec::new(Cell::Lstm, InputKind::Dense(1 << 20), 1 << 14),
    ] {
        let e = Model::new(spec.clone(), &Device::Cpu, 0).err().expect("refused");
        assert!(!message(e).is_empty());
    }
    for (spec, expected) in [
        (ModelSpec { output_dropout: -0.1, ..ModelSpec::char_model(Cell::Gru, 5, 4, 1) }, "output dropout"),
        (
            ModelSpec { output_dropout: f32::NAN, ..ModelSpec::char_model(Cell::Gru, 5, 4, 1) },
            "output dropout",
        ),
        (ModelSpec { output_dropout: 0.5, ..ModelSpec::new(Cell::Gru, InputKind::Dense(3), 4) }, "no head"),
        (ModelSpec { weight_drop: 1.0, ..ModelSpec::char_model(Cell::Lstm, 5, 4, 1) }, "weight drop"),
        (ModelSpec { proj: 2, ..ModelSpec::char_model(Cell::Gru, 5, 4, 1) }, "LSTM only"),
        (ModelSpec { proj: 4, ..ModelSpec::char_model(Cell::Lstm, 5, 4, 1) }, "below hidden = 4"),
        (
            ModelSpec { proj: 2, learn_initial_state: true, ..ModelSpec::char_model(Cell::Lstm, 5, 4, 1) },
            "not supported with a projection",
        ),
    ] {
        let e = Model::new(spec, &Device::Cpu, 0).err().expect("refused");
        assert!(message(e).contains(expected), "expected {expected}");
    }
}

/// Sizes past every bound are refused by name before any product of them is taken, so none can
/// overflow; the parameter count that bounds the whole model is the layout's.
#[test]
fn absurd_sizes_are_refused_by_name_without_overflow() {
    for (spec, expected) in [
        (ModelSpec::char_model(Cell::Lstm, 65, usize::MAX, 1), "hidden"),
        (ModelSpec::char_model(Cell::Lstm, 65, 1 << 32, 1), "hidden"),
        (ModelSpec::char_model(Cell::Gru, 65, 128, 1_000_000_000), "layers"),
        (ModelSpec::char_model(Cell::Lstm, usize::MAX, 16, 1), "input size"),
        (ModelSpec::char_model(Cell::Lstm, 65, 16000, 40), "parameter count"),
    ] {
        let e = Model::new(spec, &Device::Cpu, 0).err().expect("refused");
        assert!(message(e).contains(expected), "expected {expected}");
    }
    for spec in [
        ModelSpec::char_model(Cell::Lstm, 65, 16, 3),
        ModelSpec {
            bidirectional: true,
            learn_initial_state: true,
            ..ModelSpec::char_model(Cell::Gru, 7, 5, 2)
        },
        ModelSpec { condition: Some(3), ..ModelSpec::new(Cell::Lstm, InputKind::Dense(4), 6) },
        ModelSpec { proj: 3, bidirectional: true, ..ModelSpec::char_model(Cell::Lstm, 7, 5, 2) },
        ModelSpec {
            condition: Some(2),
            bidirectional: true,
            ..ModelSpec::new(Cell::Rnn { relu: true }, InputKind::Dense(1), 3)
        },
    ] {
        let layout = rnn_gpu::model::params::ParamLayout::new(&spec);
        assert_eq!(spec.param_count(), layout.count() as u64, "{spec:?}");
    }
}

#[test]
fn malformed_batches_are_refused_with_the_value_named() {
    for device in devices() {
        let mut m = char_model(&device);
        let cases: Vec<(Batch, &str)> = vec![
            (Batch::tokens(0, 2, vec![]), "batch [steps, batch]"),
            (Batch::tokens(2, 2, vec![0, 1, 2]), "token input"),
            (Batch::tokens(2, 1, vec![0, 5]), "token id at position 1"),
            (Batch::dense(2, 1, vec![0.0; 10]), "dense features"),
            (Batch::tokens(2, 2, vec![0; 4]).with_lengths(vec![1]), "lengths"),
            (Batch::tokens(2, 2, vec![0; 4]).with_lengths(vec![1, 3]), "length of sequence 1"),
            (Batch::tokens(2, 2, vec![0; 4]).with_lengths(vec![0, 2]), "length of sequence 0"),
            (Batch::tokens(2, 1, vec![0; 2]).with_classes(vec![0, 9]), "class target at row 1"),
            (Batch::tokens(2, 1, vec![0; 2]).with_classes(vec![0]), "class targets"),
            (Batch::tokens(2, 1, vec![0; 2]).with_values(vec![0.0; 10]), "needs class targets"),
        ];
        for (batch, expected) in cases {
            let e = m.train_step(&batch, Start::Fresh).err().expect("refused");
            let text = message(e);
            assert!(text.contains(expected), "expected {expected:?} in {text:?}");
        }
        let e = m.train_step(&Batch::tokens(2, 1, vec![0; 2]), Start::Fresh).err().unwrap();
        assert!(message(e).contains("training needs targets"));
    }
}

/// A small many-to-one regression model: 2 inputs, 4 units, one output.
fn regression(cell: Cell, device: &Device) -> Model {
    let spec = ModelSpec {
        head: Some(Head { outputs: 1, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(cell, InputKind::Dense(2), 4)
    };
    Model::new(spec, device, 1).unwrap()
}

#[test]
fn non_finite_inputs_are_refused() {
    for device in devices() {
        let mut m = regression(Cell::Gru, &device);
        let e = m.forward(&Batch::dense(1, 1, vec![0.0, f32::NAN]), Start::Fresh).err().unwrap();
        assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e}");
        let e = m
            .train_step(&Batch::dense(1, 1, vec![0.0, 1.0]).with_values(vec![f32::INFINITY]), Start::Fresh)
            .err()
            .unwrap();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
        let h0 = vec![f32::NAN; 4];
        let e =
            m.forward(&Batch::dense(1, 1, vec![0.0, 1.0]), Start::Given { h0: &h0, c0: None }).err().unwrap();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
        let e = m
            .forward(&Batch::dense(1, 1, vec![0.0, 1.0]), Start::Given { h0: &[0.0; 3], c0: None })
            .err()
            .unwrap();
        assert!(message(e).contains("h0"));
        assert!(m.set_optimizer(Optimizer::adam(f32::NAN), Clip::default()).is_err());
        assert!(m.set_optimizer(Optimizer::adam(1e-3), Clip { max_norm: -1.0, value: 0.0 }).is_err());
    }
}

/// A step whose loss overflows is refused on the device before it touches the weights, and
/// reported by the next `stats`; training then goes on.
#[test]
fn a_non_finite_step_is_refused_and_reported_with_weights_untouched() {
    for device in devices() {
        let mut m = regression(Cell::Lstm, &device);
        m.set_optimizer(Optimizer::adam(1e-2), Clip::default()).unwrap();
        let good = Batch::dense(2, 1, vec![0.5; 4]).with_values(vec![1.0]);
        m.train_step_stats(&good, Start::Fresh).unwrap();
        let before = m.flat_params().unwrap();
        // (pred - 1e30)^2 overflows f32: the loss is infinite.
        let bad = Batch::dense(2, 1, vec![0.5; 4]).with_values(vec![1e30]);
        m.train_step(&bad, Start::Fresh).unwrap();
        let e = m.stats().err().expect("the step is reported");
        assert!(matches!(e, Error::NonFiniteStep { skipped: 1, .. }), "{e}");
        assert!(message(e).contains("weights are unchanged"));
        assert_eq!(m.flat_params().unwrap(), before, "the refused step changed the weights");
        let s = m.train_step_stats(&good, Start::Fresh).unwrap();
        assert_eq!(s.step, 2, "one applied step before, one after");
        assert_ne!(m.flat_params().unwrap(), before);
    }
}

#[test]
fn kernel_launchers_refuse_mismatched_shapes_zero_sizes_and_huge_buffers() {
    let Some(ctx) = gpu() else { return };
    let a = ctx.upload("a", &[6], &[0.0; 6]).unwrap();
    let b = ctx.upload("b", &[6], &[0.0; 6]).unwrap();
    let c = ctx.alloc("c", &[4]).unwrap();
    let mut prog = Program::new(&ctx);
    let e = gk::matmul(&mut prog, &c, &a, &b, Matmul::new(2, 2, 2)).err().unwrap();
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e}");
    let e = gk::matmul(&mut prog, &c, &a, &b, Matmul::new(0, 2, 3)).err().unwrap();
    assert!(matches!(e, Error::OutOfRange { .. }), "{e}");
    let e = gk::matmul_bias(&mut prog, &c, &a, &b, Some(&a), Matmul::new(2, 2, 3)).err().unwrap();
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e}");
    assert!(gk::softmax_rows(&mut prog, &a, &b, 4, 2).is_err());
    let e = ctx.alloc("zero", &[0]).err().unwrap();
    assert!(message(e).contains("at least one element"));
    let e = ctx.alloc("huge", &[1 << 40]).err().unwrap();
    assert!(matches!(e, Error::BufferTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("bytes exceeds"));
    // A view off the 256-byte grid cannot be bound.
    let odd = a.view(1, &[4]).unwrap();
    assert!(gk::tanh_forward(&mut prog, &odd, &odd).is_err());
    // Nothing recorded above may have poisoned the context.
    assert_eq!(prog.dispatch_count(), 0);
}

#[test]
fn wgsl_errors_come_back_as_err() {
    let Some(ctx) = gpu() else { return };
    let e =
        ctx.compile("broken", "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }").err().unwrap();
    assert!(matches!(e, Error::Gpu { .. }), "{e}");
}

/// Every device refuses the same malformed ops with the same error (`Op::check`, written once):
/// the reference is no laxer than the GPU.
#[test]
fn every_device_refuses_the_same_malformed_ops() {
    use rnn_gpu::backend::Backend;
    use rnn_gpu::ops::{Attention, CopyCols, Dropout, Op, Reduce};
    fn refusals<B: Backend>(be: &mut B) -> Vec<String> {
        let f = |be: &mut B, n: usize| be.alloc("t", n).unwrap();
        let (a6, b6, c4, one) = (f(be, 6), f(be, 6), f(be, 4), f(be, 1));
        let i2 = be.alloc_u32("i", 2).unwrap();
        let p = CopyCols {
            rows: 3,
            width: 2,
            y_stride: 2,
            y_offset: 0,
            x_stride: 2,
            x_offset: 0,
            accumulate: false,
        };
        let a = Attention { tgt: 1, batch: 2, src: 3, width: 1 };
        let ops: Vec<Op<'_, B::Buf, B::IBuf>> = vec![
            Op::Matmul { c: &c4, a: &a6, b: &b6, bias: None, p: Matmul::new(2, 2, 2) },
            Op::Matmul { c: &c4, a: &a6, b: &b6, bias: None, p: Matmul::new(0, 2, 3) },
            Op::Matmul { c: &c4, a: &a6, b: &b6, bias: Some(&a6), p: Matmul::new(2, 2, 3) },
            Op::SoftmaxRows { y: &a6, x: &b6, rows: 4, cols: 2 },
            Op::TanhForward { y: &a6, x: &c4 },
            Op::Copy { dst: &a6, src: &c4 },
            Op::CopyCols { y: &c4, x: &a6, p },
            Op::Reduce { out: &one, x: &a6, p: Reduce { index: 1, square: false, accumulate: false } },
            Op::Dropout { out: &a6, x: &b6, seeds: &i2, p: Dropout { prob: 1.0, salt: 0 }, backward: false },
            Op::ClipByValue { grad: &a6, lo: 1.0, hi: -1.0 },
            Op::FinalizeStep { state: &one, grads: &a6, max_norm: 1.0 },
            Op::AttentionMix { out: &a6, w: &b6, x: &c4, a, accumulate: false, transposed: false },
        ];
        ops.into_iter().map(|op| be.run(op).expect_err("a malformed op runs").to_string()).collect()
    }
    let reference = refusals(&mut rnn_gpu::reference::ReferenceBackend::<f32>::new());
    let native = refusals(&mut rnn_gpu::native::NativeBackend::new().unwrap());
    assert_eq!(native, reference);
    if let Some(ctx) = gpu() {
        let mut be = rnn_gpu::gpu::GpuBackend::new(&ctx).unwrap();
        let mut gpu = Vec::new();
        let key = rnn_gpu::backend::ProgramKey {
            kind: "test",
            steps: 1,
            tgt_steps: 0,
            batch: 1,
            variant: Default::default(),
        };
        be.execute(key, &mut |be| {
            gpu = refusals(be);
            Ok(())
        })
        .unwrap();
        assert_eq!(gpu, reference);
    }
    assert!(reference.iter().all(|e| !e.is_empty()));
}

/// A step that reads its input projection from a table (`StepBufs::xw_rows`): the native device
/// refuses a row past the table by name; the devices whose steps read a gathered projection
/// refuse the table itself.
#[test]
fn a_step_reading_a_table_refuses_rows_past_it() {
    use rnn_gpu::backend::Backend;
    use rnn_gpu::ops::{Op, Step, StepBufs};
    fn run_step<B: Backend>(be: &mut B, rows: &[u32]) -> rnn_gpu::Result<()> {
        let (h, batch) = (4, 2);
        let f = |be: &mut B, n: usize| be.alloc("t", n).unwrap();
        let (states, y, table, w_hh, bias) =
            (f(be, 3 * batch * h), f(be, batch * h), f(be, 2 * h), f(be, h * h), f(be, 2 * h));
        let (lengths, xw_rows) =
            (be.alloc_u32("lengths", batch).unwrap(), be.alloc_u32("rows", batch).unwrap());
        be.write_u32(&lengths, &[1, 1]).unwrap();
        be.write_u32(&xw_rows, rows).unwrap();
        let bufs = StepBufs {
            states: &states,
            cells: None,
            gates: None,
            y: &y,
            xw: &table,
            xw_rows: Some(&xw_rows),
            w_hh: &w_hh,
            factors: None,
            bias: &bias,
            lengths: &lengths,
            dy: None,
            dg: None,
            dgh: None,
            carry: None,
        };
        be.run(Op::Step {
            cell: Cell::Rnn { relu: false },
            bufs,
            s: Step::first(batch, h, 1),
            backward: false,
        })
    }
    let mut native = rnn_gpu::native::NativeBackend::new().unwrap();
    run_step(&mut native, &[1, 0]).unwrap();
    let e = message(run_step(&mut native, &[1, 2]).unwrap_err());
    assert!(e.contains("xw_rows") && e.contains("below 2"), "{e}");
    let e = message(run_step(&mut rnn_gpu::reference::ReferenceBackend::<f32>::new(), &[1, 0]).unwrap_err());
    assert!(e.contains("table"), "{e}");
}
