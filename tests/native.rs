//! The native CPU device against the plain-loop reference: every kernel at the GPU checks' shapes
//! and past the native kernels' parallel thresholds, whole-model gradients against the f64
//! reference, a bad thread count refused, and determinism (a resumed run repeats an unbroken one
//! bit for bit, so the same step must give the same bits). Whole-model losses and gradients over
//! several steps of each optimizer are in tests/model.rs, with the GPU's.

mod common;

use common::assert_checks;
use rnn_gpu::rng::Rng;
use rnn_gpu::{Batch, Cell, Clip, Device, Model, ModelSpec, Optimizer, Start, verify};

#[test]
fn every_native_kernel_matches_its_twin() {
    let checks = verify::native_checks().unwrap();
    assert!(checks.len() > 500, "{} checks", checks.len());
    assert_checks(&checks);
}

#[test]
fn native_gradients_match_the_f64_reference() {
    assert_checks(&verify::gradient_checks(&Device::Cpu).unwrap());
}

#[test]
fn the_same_steps_give_the_same_bits() {
    let spec = ModelSpec::char_model(Cell::Lstm, 65, 96, 2);
    let mut rng = Rng::seed_from_u64(4);
    let (t, b) = (20, 24);
    let ids: Vec<u32> = (0..t * b).map(|_| rng.below(65) as u32).collect();
    let next: Vec<u32> = (0..t * b).map(|_| rng.below(65) as u32).collect();
    let batch = Batch::tokens(t, b, ids).with_classes(next);
    let run = || {
        let mut m = Model::new(spec.clone(), &Device::Cpu, 3).unwrap();
        m.set_optimizer(Optimizer::adam(1e-2), Clip { max_norm: 0.5, value: 0.0 }).unwrap();
        let losses: Vec<f32> =
            (0..4).map(|_| m.train_step_stats(&batch, Start::Fresh).unwrap().loss).collect();
        (losses, m.flat_params().unwrap())
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0, "losses");
    assert!(a.1 == b.1, "parameters differ between two identical runs");
}

#[test]
fn instruction_sets_are_parsed_or_refused_with_a_clear_error() {
    use rnn_gpu::native::sgemm::Isa;
    let best = Isa::available()[0];
    assert_eq!(Isa::parse(None).unwrap(), best);
    assert_eq!(Isa::parse(Some(" portable ")).unwrap(), Isa::Portable);
    for isa in Isa::ALL {
        let parsed = Isa::parse(Some(isa.name()));
        if isa.supported() {
            assert_eq!(parsed.unwrap(), isa);
        } else {
            let e = parsed.expect_err("refused").to_string();
            assert!(e.contains(&format!("this CPU does not run {}", isa.name())), "{e}");
        }
    }
    for bad in ["sse", "", "AVX2"] {
        let e = Isa::parse(Some(bad)).expect_err("refused").to_string();
        assert!(e.contains(&format!("RNN_GPU_CPU_ISA={bad:?} is not one of avx512, avx2, portable")), "{e}");
    }
}

#[test]
fn thread_counts_are_parsed_or_refused_with_a_clear_error() {
    use rnn_gpu::native::parse_threads;
    assert_eq!(parse_threads(None).unwrap(), None);
    assert_eq!(parse_threads(Some("3")).unwrap(), Some(3));
    assert_eq!(parse_threads(Some(" 1 ")).unwrap(), Some(1));
    for bad in ["0", "two", "-1", "100000", ""] {
        let e = parse_threads(Some(bad)).expect_err("refused").to_string();
        assert!(e.contains(&format!("RNN_GPU_THREADS={bad:?} is not a thread count from 1 to 1024")), "{e}");
    }
}

/// The polynomial exp, sigmoid and tanh the step kernels vectorize with, against f64 over their
/// whole range, at the ends, and on non-finite input.
#[test]
fn vectorized_functions_match_f64() {
    use rnn_gpu::native::kernels::{exp, sigmoid, tanh};
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for i in -200_000..=200_000 {
        let x = i as f32 * 4.3e-4;
        let xd = x as f64;
        let rel = |got: f32, want: f64| ((got as f64 - want) / want.abs().max(1e-300)).abs();
        worst.0 = worst.0.max(rel(exp(x), xd.exp()));
        worst.1 = worst.1.max((sigmoid(x) as f64 - 1.0 / (1.0 + (-xd).exp())).abs());
        worst.2 = worst.2.max((tanh(x) as f64 - xd.tanh()).abs().min(rel(tanh(x), xd.tanh())));
    }
    assert!(worst.0 < 3e-7, "exp: relative error {:e}", worst.0);
    assert!(worst.1 < 2e-7, "sigmoid: absolute error {:e}", worst.1);
    assert!(worst.2 < 3e-7, "tanh: error {:e}", worst.2);
    assert_eq!((tanh(1e4), tanh(-1e4), sigmoid(1e4)), (1.0, -1.0, 1.0));
    // exp saturates at e^88 rather than overflow, so sigmoid's far tail is tiny, not zero.
    assert!((0.0..1e-38).contains(&sigmoid(-1e4)), "{}", sigmoid(-1e4));
    assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY)), (1.0, -1.0));
    assert!(exp(f32::NAN).is_nan() && tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
    assert!(exp(-200.0) >= 0.0 && exp(-200.0) < 1e-37 && exp(100.0).is_finite());
}
