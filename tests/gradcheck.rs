//! Finite-difference gradient checks of the CPU reference in f64: every parameter, the dense
//! input and the initial states, through stacked, bidirectional, variable-length sequences, for
//! every cell, head and loss, with dropout. Central differences against backpropagation through
//! time (see `assert_close` for the tolerance).

mod common;

use rnn_gpu::model::exec::Exec;
use rnn_gpu::model::params::ParamLayout;
use rnn_gpu::reference::ReferenceBackend;
use rnn_gpu::rng::Rng;
use rnn_gpu::{Batch, Cell, Head, InputKind, Loss, ModelSpec, OutputMode, Start};

const STEPS: usize = 4;
const BATCH: usize = 3;

/// Inputs on a grid of 2^-8 so that x +- 2^-10 is exact in f32, the type batches carry.
fn grid(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.uniform_in(-1.0, 1.0) * 256.0).round() as f32 / 256.0).collect()
}

struct Case {
    spec: ModelSpec,
    batch: Batch,
    h0: Option<(Vec<f32>, Option<Vec<f32>>)>,
    dropout_seed: Option<u32>,
}

fn batch_for(spec: &ModelSpec, rng: &mut Rng) -> Batch {
    let (t, b) = (STEPS, BATCH);
    let mut batch = match spec.input {
        InputKind::Dense(i) => Batch::dense(t, b, grid(rng, t * b * i)),
        InputKind::Tokens(v) | InputKind::Embedding { vocab: v, .. } => {
            Batch::tokens(t, b, (0..t * b).map(|_| rng.below(v) as u32).collect())
        }
    };
    batch = batch.with_lengths(vec![STEPS, 2, 1]);
    if let Some(c) = spec.condition {
        batch = batch.with_condition(grid(rng, BATCH * c));
    }
    let head = spec.head.expect("a head");
    let rows = if head.mode == OutputMode::ManyToMany { t * b } else { b };
    match head.loss {
        Loss::CrossEntropy => batch.with_classes((0..rows).map(|_| rng.below(head.outputs) as u32).collect()),
        Loss::Mse => batch.with_values(grid(rng, rows * head.outputs)),
    }
}

fn loss(exec: &mut Exec<ReferenceBackend<f64>>, case: &Case, layout: &ParamLayout, start: Start<'_>) -> f64 {
    exec.loss(&case.spec, layout, &case.batch, start, case.dropout_seed, false).unwrap();
    exec.be_read_state_loss()
}

trait ReadLoss {
    fn be_read_state_loss(&mut self) -> f64;
}

impl ReadLoss for Exec<ReferenceBackend<f64>> {
    fn be_read_state_loss(&mut self) -> f64 {
        use rnn_gpu::backend::Backend;
        let s = self.net.step_state.clone();
        rnn_gpu::wait::block_on("test", self.be.read(&s)).unwrap()[rnn_gpu::ops::step_state::LOSS]
    }
}

/// |backprop - finite difference| <= 1e-6 relative + 1e-9 absolute: the absolute term covers
/// the rounding of a loss of order 1 divided by 2 eps (about 1e-10 in f64 with eps 1e-6).
fn assert_close(what: &str, analytic: f64, numeric: f64) {
    let err = (analytic - numeric).abs();
    let allowed = 1e-6 * analytic.abs().max(numeric.abs()) + 1e-9;
    assert!(
        err <= allowed,
        "{what}: backprop {analytic:.10e} vs finite difference {numeric:.10e} (|diff| {err:.2e} > {allowed:.2e})"
    );
}

fn check(case: Case) {
    use rnn_gpu::backend::Backend;
    let spec = &case.spec;
    let layout = ParamLayout::new(spec);
    let init: Vec<f64> = layout.init(7).iter().map(|&v| v as f64).collect();
    let mut exec = Exec::new(ReferenceBackend::<f64>::new(), &layout, &init).unwrap();
    let (h0, c0) = match &case.h0 {
        Some((h, c)) => (Some(h.clone()), c.clone()),
        None => (None, None),
    };
    let start = |h0: &Option<Vec<f32>>, c0: &Option<Vec<f32>>| -> Start<'static> {
        match h0 {
            // Leaked: a handful of small vectors in a test.
            Some(h) => Start::Given {
                h0: Box::leak(h.clone().into_boxed_slice()),
                c0: c0.as_ref().map(|c| &*Box::leak(c.clone().into_boxed_slice())),
            },
            None => Start::Fresh,
        }
    };
    exec.loss(spec, &layout, &case.batch, start(&h0, &c0), case.dropout_seed, true).unwrap();
    let grads_buf = exec.net.grads.clone();
    let grads = rnn_gpu::wait::block_on("test", exec.be.read(&grads_buf)).unwrap();
    let ws = exec.workspace_of(&case.batch).unwrap();
    let (d_input, dh0, dc0) = (ws.d_input.clone(), ws.dh0.clone(), ws.dc0.clone());
    let d_input = d_input.map(|d| rnn_gpu::wait::block_on("test", exec.be.read(&d)).unwrap());
    let dh0 = rnn_gpu::wait::block_on("test", exec.be.read(&dh0)).unwrap();
    let dc0 = dc0.map(|d| rnn_gpu::wait::block_on("test", exec.be.read(&d)).unwrap());

    // Every parameter.
    let eps = 1e-6;
    let params_buf = exec.net.params.clone();
    let mut checked = 0;
    for e in layout.entries() {
        for i in e.range() {
            let mut p = init.clone();
            p[i] += eps;
            exec.be.write(&params_buf, &p).unwrap();
            let up = loss(&mut exec, &case, &layout, start(&h0, &c0));
            p[i] -= 2.0 * eps;
            exec.be.write(&params_buf, &p).unwrap();
            let down = loss(&mut exec, &case, &layout, start(&h0, &c0));
            assert_close(
                &format!("{} {}[{}]", spec.cell.name(), e.name, i - e.offset),
                grads[i],
                (up - down) / (2.0 * eps),
            );
            checked += 1;
        }
    }
    exec.be.write(&params_buf, &init).unwrap();
    assert_eq!(checked, layout.count());

    // The dense input and the initial states, perturbed on their exact grid: k/256 + 2^-16 is
    // exact in f32.
    let eps32 = 1.0 / 65536.0;
    let eps_f = eps32 as f64;
    if let (Some(d_input), rnn_gpu::Input::Dense(x)) = (&d_input, &case.batch.input) {
        for i in 0..x.len() {
            let mut shifted = |delta: f32| {
                let mut xs = x.clone();
                xs[i] += delta;
                let b = Batch { input: rnn_gpu::Input::Dense(xs), ..case.batch.clone() };
                exec.loss(spec, &layout, &b, start(&h0, &c0), case.dropout_seed, false).unwrap();
                exec.be_read_state_loss()
            };
            let num = (shifted(eps32) - shifted(-eps32)) / (2.0 * eps_f);
            assert_close(&format!("{} input[{i}]", spec.cell.name()), d_input[i], num);
        }
    }
    if let Some(h) = &h0 {
        for i in 0..h.len() {
            let mut shifted = |delta: f32| {
                let mut hs = h.clone();
                hs[i] += delta;
                loss(&mut exec, &case, &layout, start(&Some(hs), &c0))
            };
            let num = (shifted(eps32) - shifted(-eps32)) / (2.0 * eps_f);
            assert_close(&format!("{} h0[{i}]", spec.cell.name()), dh0[i], num);
        }
        if let (Some(c), Some(dc0)) = (&c0, &dc0) {
            for i in 0..c.len() {
                let mut shifted = |delta: f32| {
                    let mut cs = c.clone();
                    cs[i] += delta;
                    loss(&mut exec, &case, &layout, start(&h0, &Some(cs)))
                };
                let num = (shifted(eps32) - shifted(-eps32)) / (2.0 * eps_f);
                assert_close(&format!("{} c0[{i}]", spec.cell.name()), dc0[i], num);
            }
        }
    }
}

fn stacked(cell: Cell, bidirectional: bool) -> ModelSpec {
    ModelSpec {
        layers: 2,
        bidirectional,
        head: Some(Head { outputs: 3, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
        ..ModelSpec::new(cell, InputKind::Dense(2), 3)
    }
}

fn given_state(spec: &ModelSpec, rng: &mut Rng) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
    let n = |width: usize| spec.state_rows() * BATCH * width;
    let c = spec.cell.has_cell_state().then(|| grid(rng, n(spec.hidden)));
    Some((grid(rng, n(spec.state_size())), c))
}

fn run(cell: Cell, bidirectional: bool) {
    let mut rng = Rng::seed_from_u64(11);
    let spec = stacked(cell, bidirectional);
    let batch = batch_for(&spec, &mut rng);
    let h0 = given_state(&spec, &mut rng);
    check(Case { spec, batch, h0, dropout_seed: None });
}

/// One test a cell and direction count: two stacked layers, each on its own thread.
macro_rules! stacked_tests {
    ($($name:ident: $cell:expr, $bidirectional:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run($cell, $bidirectional);
            }
        )*
    };
}

stacked_tests! {
    rnn_tanh_two_layers: Cell::Rnn { relu: false }, false;
    rnn_relu_two_layers_bidirectional: Cell::Rnn { relu: true }, true;
    lstm_two_layers: Cell::Lstm, false;
    lstm_two_layers_bidirectional: Cell::Lstm, true;
    gru_two_layers: Cell::Gru, false;
    gru_two_layers_bidirectional: Cell::Gru, true;
}

/// PyTorch's proj_size: W_hr's gradient and, through the product W_hh · W_hr the steps run
/// with, W_hh's; the initial hidden state of P values.
#[test]
fn lstm_with_projection() {
    for bidirectional in [false, true] {
        let mut rng = Rng::seed_from_u64(17);
        let spec = ModelSpec { hidden: 4, proj: 2, ..stacked(Cell::Lstm, bidirectional) };
        let batch = batch_for(&spec, &mut rng);
        let h0 = given_state(&spec, &mut rng);
        check(Case { spec, batch, h0, dropout_seed: None });
    }
}

#[test]
fn lstm_with_projection_tokens_many_to_one_with_dropout() {
    let mut rng = Rng::seed_from_u64(18);
    let spec = ModelSpec {
        layers: 2,
        bidirectional: true,
        proj: 3,
        dropout: 0.3,
        output_dropout: 0.4,
        head: Some(Head { outputs: 2, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(Cell::Lstm, InputKind::Tokens(5), 4)
    };
    let batch = batch_for(&spec, &mut rng);
    check(Case { spec, batch, h0: None, dropout_seed: Some(5) });
}

#[test]
fn tokens_many_to_one_mse_with_learned_initial_state() {
    for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn { relu: false }] {
        let mut rng = Rng::seed_from_u64(12);
        let spec = common::regressor(cell, InputKind::Tokens(5), 3, 2);
        let batch = batch_for(&spec, &mut rng);
        check(Case { spec, batch, h0: None, dropout_seed: None });
    }
}

#[test]
fn dropout_between_layers() {
    for cell in [Cell::Lstm, Cell::Gru] {
        let mut rng = Rng::seed_from_u64(13);
        let spec = ModelSpec { layers: 3, dropout: 0.4, ..stacked(cell, true) };
        let batch = batch_for(&spec, &mut rng);
        check(Case { spec, batch, h0: None, dropout_seed: Some(99) });
    }
}

#[test]
fn dropout_on_the_head_input() {
    for (cell, mode) in [(Cell::Lstm, OutputMode::ManyToMany), (Cell::Gru, OutputMode::ManyToOne)] {
        let mut rng = Rng::seed_from_u64(15);
        let base = stacked(cell, true);
        let head = base.head.map(|h| Head { mode, ..h });
        let spec = ModelSpec { dropout: 0.3, output_dropout: 0.5, head, ..base };
        let batch = batch_for(&spec, &mut rng);
        // The mask is applied: the head's input dropout alone changes the loss.
        let layout = ParamLayout::new(&spec);
        let init: Vec<f64> = layout.init(7).iter().map(|&v| v as f64).collect();
        let case = |spec: ModelSpec| Case { spec, batch: batch.clone(), h0: None, dropout_seed: Some(77) };
        let only_between = case(ModelSpec { output_dropout: 0.0, ..spec.clone() });
        let both = case(spec);
        let loss_of = |c: &Case| {
            let mut exec = Exec::new(ReferenceBackend::<f64>::new(), &layout, &init).unwrap();
            loss(&mut exec, c, &layout, Start::Fresh)
        };
        let (a, b) = (loss_of(&only_between), loss_of(&both));
        assert!((a - b).abs() > 1e-6, "{}: output dropout left the loss at {a}", cell.name());
        check(both);
    }
}

/// DropConnect on W_hh: one mask for every step of the pass, its gradient masked the same way,
/// through a projection's W_eff too.
#[test]
fn weight_drop_on_the_recurrent_weights() {
    let specs = [
        ModelSpec { weight_drop: 0.4, ..stacked(Cell::Lstm, true) },
        ModelSpec { weight_drop: 0.3, dropout: 0.2, ..stacked(Cell::Gru, false) },
        ModelSpec { weight_drop: 0.5, ..stacked(Cell::Rnn { relu: false }, true) },
        ModelSpec { weight_drop: 0.3, hidden: 4, proj: 2, ..stacked(Cell::Lstm, true) },
    ];
    for spec in specs {
        let mut rng = Rng::seed_from_u64(19);
        let batch = batch_for(&spec, &mut rng);
        let h0 = given_state(&spec, &mut rng);
        // The mask is applied: weight drop alone changes the loss.
        let layout = ParamLayout::new(&spec);
        let init: Vec<f64> = layout.init(7).iter().map(|&v| v as f64).collect();
        let case =
            |spec: ModelSpec| Case { spec, batch: batch.clone(), h0: h0.clone(), dropout_seed: Some(41) };
        let loss_of = |c: &Case| {
            let mut exec = Exec::new(ReferenceBackend::<f64>::new(), &layout, &init).unwrap();
            loss(&mut exec, c, &layout, Start::Fresh)
        };
        let without = case(ModelSpec { weight_drop: 0.0, ..spec.clone() });
        let with = case(spec.clone());
        let (a, b) = (loss_of(&without), loss_of(&with));
        assert!((a - b).abs() > 1e-6, "{}: weight drop left the loss at {a}", spec.cell.name());
        check(with);
    }
}

#[test]
fn embedding_input() {
    for cell in [Cell::Lstm, Cell::Rnn { relu: false }] {
        let mut rng = Rng::seed_from_u64(16);
        let spec = ModelSpec {
            input: InputKind::Embedding { vocab: 4, dim: 3 },
            head: Some(Head { outputs: 4, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
            ..stacked(cell, true)
        };
        let batch = batch_for(&spec, &mut rng);
        check(Case { spec, batch, h0: None, dropout_seed: None });
    }
}

#[test]
fn conditioned_initial_state() {
    for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn { relu: false }] {
        let mut rng = Rng::seed_from_u64(14);
        let spec = ModelSpec { condition: Some(3), ..stacked(cell, true) };
        let batch = batch_for(&spec, &mut rng);
        check(Case { spec, batch, h0: None, dropout_seed: None });
    }
}
