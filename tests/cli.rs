//! The `rnn-gpu` command end to end: forward and gradients from files against PyTorch's numbers,
//! training that resumes, sampling, and clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, tmp};

use rnn_gpu::io::{self, Metadata, TensorData};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnn-gpu"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A command line's words.
fn split_args(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "command failed: {text}");
    text
}

fn floats(f: &io::TensorFile, name: &str) -> Vec<f32> {
    match &f.tensors.get(name).unwrap_or_else(|| panic!("no tensor {name}")).1 {
        TensorData::F32(v) => v.clone(),
        TensorData::Int(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

/// `forward` on a bare PyTorch LSTM state_dict reproduces what PyTorch computed, gradients
/// included, on the CPU device (the GPU is covered by tests/io.rs): a bidirectional LSTM, and one
/// with projections whose loss reaches its final states too.
#[test]
fn forward_with_gradients_matches_pytorch() {
    for (case, grads) in [
        ("lstm_bidir", &["grad.weight_ih_l1_reverse", "grad.bias_hh_l0"][..]),
        ("lstm_proj_bidir", &["grad.weight_hr_l1_reverse", "grad.weight_hh_l0", "grad.weight_hr_l0"][..]),
    ] {
        let exp = io::read_tensors(&fixture(&format!("{case}.expected.safetensors"))).unwrap();
        let pick = |names: &[(&str, &str)]| -> Vec<(String, Vec<usize>, TensorData)> {
            names
                .iter()
                .filter(|(from, _)| exp.tensors.contains_key(*from))
                .map(|(from, to)| {
                    (to.to_string(), exp.tensors[*from].0.clone(), exp.tensors[*from].1.clone())
                })
                .collect()
        };
        let input = tmp(&format!("{case}-in.safetensors"));
        let inputs = [("input", "input"), ("lengths", "lengths"), ("h0", "h0"), ("c0", "c0")];
        io::write_tensors(&input, &pick(&inputs), &Metadata::new()).unwrap();
        let grad = tmp(&format!("{case}-grad.safetensors"));
        let grads_in = [("grad_output", "output"), ("grad_h_n", "h_n"), ("grad_c_n", "c_n")];
        io::write_tensors(&grad, &pick(&grads_in), &Metadata::new()).unwrap();
        let out = tmp(&format!("{case}-out.safetensors"));
        run(bin()
            .args(["forward", "--cell", "lstm", "--device", "cpu", "--model"])
            .arg(fixture(&format!("{case}.model.safetensors")))
            .arg("--input")
            .arg(&input)
            .arg("--grad-output")
            .arg(&grad)
            .arg("--out")
            .arg(&out));
        let got = io::read_tensors(&out).unwrap();
        for name in ["output", "h_n", "c_n", "grad.input", "grad.h0", "grad.c0"].iter().chain(grads) {
            let (g, e) = (floats(&got, name), floats(&exp, name));
            assert_eq!(g.len(), e.len(), "{case} {name}");
            for (i, (a, b)) in g.iter().zip(&e).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                    "{case} {name}[{i}]: rnn-gpu {a} PyTorch {b}"
                );
            }
        }
    }
}

#[test]
fn train_resumes_and_samples() {
    let text = tmp("tiny.txt");
    std::fs::write(&text, "the quick brown fox jumps over the lazy dog. ".repeat(200)).unwrap();
    let train = |out: &std::path::Path, steps: &str, resume: bool| {
        let mut c = bin();
        c.args([
            "train",
            "--device",
            "cpu",
            "--hidden",
            "16",
            "--layers",
            "1",
            "--seq-len",
            "16",
            "--batch",
            "4",
            "--warmup",
            "3",
            "--decay",
            "step:10:0.5",
        ])
        .args(["--eval-every", "10", "--eval-batches", "2", "--steps", steps, "--text"])
        .arg(&text)
        .arg("--out")
        .arg(out);
        if resume {
            c.arg("--resume");
        }
        run(&mut c)
    };
    let out = tmp("run");
    let first = train(&out, "20", false);
    assert!(first.contains("done: 20 steps"), "{first}");
    let second = train(&out, "30", true);
    assert!(second.contains("done: 30 steps"), "{second}");
    for f in ["checkpoint.safetensors", "best.safetensors", "loss.csv", "loss.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // A run stopped and resumed follows the same curve (learning-rate schedule included) as one
    // that was not: the step, training and validation columns agree.
    let curve = |out: &std::path::Path| -> Vec<String> {
        let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
        csv.lines().map(|l| l.split(',').take(3).collect::<Vec<_>>().join(",")).collect()
    };
    let straight = tmp("run-straight");
    train(&straight, "30", false);
    assert_eq!(curve(&out).len(), 4, "header and evaluations at steps 10, 20, 30");
    assert_eq!(curve(&out), curve(&straight));
    let s = run(bin()
        .args(["sample", "--device", "cpu", "--len", "50", "--prime", "the "])
        .arg("--model")
        .arg(out.join("best.safetensors")));
    assert!(s.starts_with("the "), "{s}");
    assert!(s.trim_end().chars().count() >= 50);

    // `eval`: the loss over the text in streams, as training's validation measures it.
    let model = out.join("best.safetensors");
    let e = run(bin()
        .args(["eval", "--device", "cpu", "--seq-len", "16", "--batch", "4", "--text"])
        .arg(&text)
        .arg("--model")
        .arg(&model));
    let nats: f32 =
        e.split(": ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    // Below the uniform guess over the text's 28 characters: the model learned something.
    assert!(nats.is_finite() && nats > 0.0 && nats < 28f32.ln(), "{e}");
    assert!(e.contains("perplexity") && e.contains("bits/char"), "{e}");
    for (content, says) in [("the quick brown fox Z", "Z"), ("the", "fewer than one chunk")] {
        let bad = tmp("eval-bad.txt");
        std::fs::write(&bad, content).unwrap();
        let res = bin()
            .args(["eval", "--device", "cpu", "--seq-len", "16", "--batch", "4", "--text"])
            .arg(&bad)
            .arg("--model")
            .arg(&model)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{says:?} not in {err}");
    }
}

#[test]
fn bad_arguments_give_one_clear_error() {
    let out = bin().args(["train", "--cell", "transformer", "--device", "cpu"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown cell \"transformer\""), "{err}");
    let out =
        bin().args(["sample", "--device", "cpu", "--model", "/no/such/model.safetensors"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
    // Without the mpi feature (this build), --distributed says how to get it.
    #[cfg(not(feature = "mpi"))]
    {
        let out = bin().args(["train", "--distributed", "--device", "cpu"]).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built without MPI") && err.contains("--features mpi"), "{err}");
    }
}

#[test]
fn seq2seq_trains_from_pairs_and_translates_stdin() {
    use std::io::Write;
    let pairs = tmp("pairs.tsv");
    let words = ["abc", "ba", "cab", "bca", "aab", "ccb", "acb", "bb", "ca", "abcab"];
    let mut text = String::new();
    for _ in 0..20 {
        for w in words {
            text.push_str(&format!("{w}\t{}\n", w.chars().rev().collect::<String>()));
        }
    }
    std::fs::write(&pairs, text).unwrap();
    let out = tmp("s2s");
    let log = run(bin()
        .args(split_args(
            "seq2seq train --device cpu --hidden 16 --embed 8 --steps 20 --eval-every 10 --batch 8",
        ))
        .arg("--pairs")
        .arg(&pairs)
        .arg("--out")
        .arg(&out));
    assert!(log.contains("held-out exact match"), "{log}");
    let model = out.join("seq2seq.safetensors");
    let mut child = bin()
        .args(["seq2seq", "translate", "--device", "cpu", "--beam", "2", "--model"])
        .arg(&model)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\nxyz\nba\n").unwrap();
    let res = child.wait_with_output().unwrap();
    assert!(res.status.success());
    let stdout = String::from_utf8_lossy(&res.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one output line per input line: {stdout}");
    assert_eq!(lines[1], "", "an untranslatable line gives an empty line: {stdout}");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("line 2") && err.contains("'x' is not in the model's source vocabulary"), "{err}");

    // Counts a decoder cannot honour, and a beam of width 0, are refused by name.
    for args in [
        ["--beam", "0", "width = 0"],
        ["--beam", "4611686018427387904", "width"],
        ["--max-len", "18446744073709551615", "max_len"],
    ] {
        let [flag, value, expected] = args;
        let beam = if flag == "--beam" { value } else { "3" };
        let res = bin()
            .args(["seq2seq", "translate", "--device", "cpu", "--beam", beam])
            .args((flag != "--beam").then_some([flag, value]).into_iter().flatten())
            .arg("--model")
            .arg(&model)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && err.contains(expected), "{flag} {value}: {err}");
    }
    for (flag, value, expected) in
        [("--batch", "4611686018427387904", "batch"), ("--clip", "NaN", "clip"), ("--steps", "0", "steps")]
    {
        let res = bin()
            .args([
                "seq2seq", "train", "--device", "cpu", "--hidden", "8", "--embed", "4", flag, value,
                "--pairs",
            ])
            .arg(&pairs)
            .arg("--out")
            .arg(tmp("s2s-refused"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && err.contains(expected), "{flag} {value}: {err}");
    }
}

fn tiny_text(name: &str) -> PathBuf {
    let text = tmp(name);
    std::fs::write(&text, "the quick brown fox jumps over the lazy dog. ".repeat(300)).unwrap();
    text
}

/// A small CPU training run into `out`, without the model's flags.
fn run_flags(text: &Path, out: &Path, steps: &str) -> Command {
    let mut c = bin();
    c.args(["train", "--device", "cpu", "--seq-len", "32", "--batch", "8"])
        .args(["--eval-every", "40", "--eval-batches", "2", "--steps", steps])
        .arg("--text")
        .arg(text)
        .arg("--out")
        .arg(out);
    c
}

/// The arguments of a small CPU training run into `out`.
fn small_run(text: &Path, out: &Path, steps: &str) -> Command {
    let mut c = run_flags(text, out, steps);
    c.args(["--hidden", "48", "--layers", "2", "--dropout", "0.2"]);
    c
}

/// Ctrl-C during training saves a checkpoint between evaluations; resumed, the run follows the
/// same curve to the same weights as a run that was never stopped (dropout, optimizer state and
/// the carried state of the streams all restored).
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_weights() {
    use std::io::BufRead;
    let text = tiny_text("ctrlc.txt");
    let out = tmp("ctrlc-run");
    let mut child = small_run(&text, &out, "100000").stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("step") {
            break;
        }
    }
    // SAFETY: kill(2) on the pid of a child we own, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{log}");
    // Stopped long before its 100000 steps, the run resumes to 400, as the unbroken one runs.
    let stopped: usize = log
        .split("interrupted at step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the run was not interrupted: {log}"));
    assert!(stopped < 400, "{log}");
    let resumed = run(small_run(&text, &out, "400").arg("--resume"));
    assert!(resumed.contains("done: 400 steps"), "{resumed}");
    let straight = tmp("ctrlc-straight");
    run(&mut small_run(&text, &straight, "400"));

    let curve = |out: &Path| std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let columns = |csv: String| -> Vec<String> {
        csv.lines().map(|l| l.split(',').take(3).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(columns(curve(&out)), columns(curve(&straight)), "stopped at step {stopped}");
    let a = io::read_tensors(&out.join("checkpoint.safetensors")).unwrap();
    let b = io::read_tensors(&straight.join("checkpoint.safetensors")).unwrap();
    for (name, (_, data)) in &b.tensors {
        assert_eq!(Some(data), a.tensors.get(name).map(|t| &t.1), "{name} after stopping at step {stopped}");
    }
}

/// `--resume` continues the checkpoint's model and optimizer: flags that say otherwise are
/// refused, each named with both values.
#[test]
fn resume_refuses_flags_that_contradict_the_checkpoint() {
    let text = tiny_text("resume-flags.txt");
    let out = tmp("resume-flags");
    run(&mut small_run(&text, &out, "5"));
    let res = run_flags(&text, &out, "10")
        .args(["--resume", "--hidden", "64", "--cell", "gru", "--lr", "0.1", "--decay", "cosine:10:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{err}");
    for part in [
        "--hidden 64 (the checkpoint's: 48)",
        "--cell gru (the checkpoint's: lstm)",
        "--lr 0.1",
        "--decay cosine:10:0 (the checkpoint's: constant)",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    // The same values as the checkpoint's are no conflict.
    let res = run_flags(&text, &out, "10").args(["--resume", "--weight-drop", "0.3"]).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("--weight-drop 0.3 (the checkpoint's: 0)"), "{err}");
    let ok = run(run_flags(&text, &out, "10").args(["--resume", "--hidden", "48", "--layers", "2"]));
    assert!(ok.contains("training a 2-layer lstm of 48 units") && ok.contains("done: 10 steps"), "{ok}");
}

/// A corrupt number in a checkpoint's metadata is refused by name when resuming.
#[test]
fn corrupt_checkpoint_numbers_are_refused() {
    let text = tiny_text("corrupt.txt");
    for (key, value, expected) in [
        ("train.best_val", "NaN", "train.best_val"),
        ("train.step", "3.7", "train.step"),
        ("train.step", "-5", "train.step"),
        ("train.step", "inf", "train.step"),
        ("optimizer.beta1", "1.5", "beta1"),
        ("optimizer.eps", "-1", "eps"),
        ("optimizer.lr", "NaN", "learning rate"),
    ] {
        let out = tmp(&format!("corrupt-{key}-{value}"));
        run(&mut small_run(&text, &out, "3"));
        let path = out.join("checkpoint.safetensors");
        let mut f = io::read_tensors(&path).unwrap();
        f.metadata.insert(key.into(), value.into());
        let tensors: Vec<_> = f.tensors.into_iter().map(|(n, (s, d))| (n, s, d)).collect();
        io::write_tensors(&path, &tensors, &f.metadata).unwrap();
        let res = small_run(&text, &out, "6").arg("--resume").output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && err.contains(expected), "{key} = {value}: {err}");
        assert!(
            !err.contains("lower the learning rate"),
            "{key} = {value} blamed on the learning rate: {err}"
        );
    }
}

/// Counts too large to honour are refused by name, never a panic or an endless run; and a
/// closed stdout ends a command quietly.
#[test]
fn absurd_counts_are_refused_and_a_closed_pipe_ends_quietly() {
    let text = tiny_text("absurd.txt");
    let out = tmp("absurd");
    run(&mut small_run(&text, &out, "2"));
    let model = out.join("best.safetensors");
    for (args, expected) in [
        (vec!["sample", "--len", "18446744073709551615"], "length"),
        (vec!["sample", "--len", "1099511627776"], "length"),
        (vec!["train", "--hidden", "18446744073709551615"], "hidden"),
        (vec!["train", "--hidden", "4294967296"], "hidden"),
        (vec!["train", "--layers", "1000000000"], "layers"),
        (vec!["train", "--steps", "0"], "steps"),
        (vec!["train", "--decay", "linear"], "not a decay"),
        (vec!["train", "--decay", "step:0:0.5"], "every"),
        (vec!["train", "--decay", "cosine:100:1.5"], "floor"),
        (vec!["train", "--optimizer", "adam", "--momentum", "0.9"], "adam has no momentum"),
        (vec!["train", "--optimizer", "sgd", "--nesterov"], "nesterov needs a momentum"),
        (vec!["train", "--optimizer", "sgd", "--momentum", "1.5"], "momentum"),
        (vec!["train", "--weight-decay=-1"], "weight"),
        (vec!["train", "--weight-drop", "1"], "weight drop"),
    ] {
        let mut c = bin();
        c.args(&args).args(["--device", "cpu"]);
        if args[0] == "sample" {
            c.args(["--prime", "the "]).arg("--model").arg(&model);
        } else {
            c.arg("--text").arg(&text).arg("--out").arg(tmp("absurd-train"));
        }
        let res = c.output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
    }
    let mut child = bin()
        .args(["sample", "--device", "cpu", "--len", "100000", "--prime", "the ", "--model"])
        .arg(&model)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let res = child.wait_with_output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(res.stderr.is_empty(), "{}", String::from_utf8_lossy(&res.stderr));
}

/// `info`, `verify` and `bench` run on both CPU devices too; a bad thread count is an error.
#[test]
fn info_verify_and_bench_take_the_cpu_devices() {
    let info = run(bin().args(["info", "--device", "cpu"]));
    assert!(info.contains("native CPU") && info.contains("CPU reference"), "{info}");
    let verify = run(bin().args(["verify", "--device", "reference"]));
    assert!(verify.contains("8 checks, 8 passed, 0 failed"), "{verify}");
    assert!(verify.contains("finite differences"), "{verify}");
    let verify = run(bin().args(["verify", "--device", "cpu"]));
    assert!(verify.contains("passed, 0 failed") && verify.contains("lstm_step_backward.dg"), "{verify}");
    let bench = run(bin().args([
        "bench",
        "--device",
        "cpu",
        "--reference",
        "--quick",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--only",
        "lstm",
    ]));
    assert!(bench.lines().any(|l| l.contains("cpu") && l.contains("lstm")), "{bench}");
    assert!(bench.lines().any(|l| l.contains("reference")), "{bench}");
    assert!(bench.lines().any(|l| l.contains("cpu/reference") && l.contains('x')), "{bench}");
    let bad = bin().args(["verify", "--device", "cpu"]).env("RNN_GPU_THREADS", "0").output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("RNN_GPU_THREADS=\"0\" is not a thread count"), "{err}");
}

/// `forward` checks every tensor it is given by name, shape and type, and refuses the ones it
/// would not read.
#[test]
fn forward_refuses_misshapen_misnamed_and_mistyped_tensors() {
    let exp = io::read_tensors(&fixture("lstm_bidir.expected.safetensors")).unwrap();
    let t = |n: &str| (n.to_string(), exp.tensors[n].0.clone(), exp.tensors[n].1.clone());
    let (shape_h0, h0) = (exp.tensors["h0"].0.clone(), exp.tensors["h0"].1.clone());
    let batch_first = vec![shape_h0[1], shape_h0[0], shape_h0[2]];
    let run_forward = |name: &str,
                       input: Vec<(String, Vec<usize>, TensorData)>,
                       grad: Option<Vec<(String, Vec<usize>, TensorData)>>| {
        let in_path = tmp(&format!("fwd-{name}-in.safetensors"));
        io::write_tensors(&in_path, &input, &Metadata::new()).unwrap();
        let mut c = bin();
        c.args(["forward", "--cell", "lstm", "--device", "cpu", "--model"])
            .arg(fixture("lstm_bidir.model.safetensors"))
            .arg("--input")
            .arg(&in_path)
            .arg("--out")
            .arg(tmp(&format!("fwd-{name}-out.safetensors")));
        if let Some(g) = grad {
            let g_path = tmp(&format!("fwd-{name}-grad.safetensors"));
            io::write_tensors(&g_path, &g, &Metadata::new()).unwrap();
            c.arg("--grad-output").arg(g_path);
        }
        let res = c.output().unwrap();
        assert!(!res.status.success(), "{name} was accepted");
        String::from_utf8_lossy(&res.stderr).to_string()
    };
    let cases = [
        (
            "batch-first",
            vec![t("input"), ("h0".into(), batch_first, h0.clone()), t("c0")],
            None,
            "tensor h0 has shape",
        ),
        (
            "flat",
            vec![t("input"), ("h0".into(), vec![shape_h0.iter().product()], h0.clone()), t("c0")],
            None,
            "tensor h0 has shape",
        ),
        ("c0-alone", vec![t("input"), t("c0")], None, "c0 is given without h0"),
        (
            "pytorch-names",
            vec![t("input"), ("h_0".into(), shape_h0.clone(), h0.clone())],
            None,
            "tensor h_0 is not one forward reads",
        ),
        (
            "negative",
            vec![
                t("input"),
                (
                    "lengths".into(),
                    vec![exp.tensors["lengths"].0[0]],
                    TensorData::Int(vec![-1; exp.tensors["lengths"].0[0]]),
                ),
            ],
            None,
            "length -1 is negative",
        ),
        (
            "int-grad",
            vec![t("input")],
            Some(vec![
                t("grad_output"),
                ("h_n".into(), shape_h0.clone(), TensorData::Int(vec![0; shape_h0.iter().product()])),
            ]),
            "holds integers",
        ),
        (
            "grad-shape",
            vec![t("input")],
            Some(vec![(
                "output".into(),
                vec![exp.tensors["grad_output"].0.iter().product()],
                exp.tensors["grad_output"].1.clone(),
            )]),
            "tensor output has shape",
        ),
    ];
    for (name, input, grad, expected) in cases {
        let input = input
            .into_iter()
            .map(|(n, s, d)| if n == "grad_output" { ("output".to_string(), s, d) } else { (n, s, d) })
            .collect();
        let grad = grad.map(|g: Vec<(String, Vec<usize>, TensorData)>| {
            g.into_iter()
                .map(|(n, s, d)| if n == "grad_output" { ("output".to_string(), s, d) } else { (n, s, d) })
                .collect()
        });
        let err = run_forward(name, input, grad);
        assert!(err.contains(expected), "{name}: {err}");
    }
}

/// `classify train` learns a labeled text file (here words that decide the label among noise),
/// reports held-out accuracy past the majority label's share, and `classify predict` answers line
/// for line; malformed files and labels are refused by name.
#[test]
fn classify_trains_and_predicts_line_for_line() {
    let data = tmp("labels.tsv");
    let mut rng = rnn_gpu::rng::Rng::seed_from_u64(3);
    let noise = ["the", "a", "film", "phone", "food", "was", "it", "so", "very", "place"];
    let mut lines = String::new();
    for i in 0..400 {
        let good = i % 2 == 0;
        let mut words: Vec<&str> = (0..6).map(|_| noise[rng.below(noise.len())]).collect();
        words.insert(rng.below(6), if good { "great" } else { "awful" });
        lines.push_str(&format!("{}\t{}\n", words.join(" "), if good { "pos" } else { "neg" }));
    }
    std::fs::write(&data, lines).unwrap();
    let out = tmp("classify");
    let log = run(bin()
        .args(split_args("classify train --device cpu --steps 150 --eval-every 50 --hidden 16 --embed 8"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out));
    let best: f32 = log
        .split("best held-out accuracy ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(best >= 95.0, "{log}");
    for f in ["best.safetensors", "loss.csv", "loss.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let mut child = bin()
        .args(["classify", "predict", "--device", "cpu", "--model"])
        .arg(out.join("best.safetensors"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"so great a film\n\nthe food was awful\nunseen words only\n")
        .unwrap();
    let res = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&res.stdout);
    let labels: Vec<&str> = text.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(labels.len(), 4, "{text}");
    assert_eq!(&labels[..3], ["pos", "", "neg"], "{text}");
    let test = |data: &Path| {
        bin()
            .args(["classify", "test", "--device", "cpu", "--model"])
            .arg(out.join("best.safetensors"))
            .arg("--data")
            .arg(data)
            .output()
            .unwrap()
    };
    let res = test(&data);
    let said = String::from_utf8_lossy(&res.stdout);
    assert!(said.contains("400 texts") && said.contains("accuracy"), "{said}");
    let unknown = tmp("unknown-label.tsv");
    std::fs::write(&unknown, "great film\tneutral\n").unwrap();
    let res = test(&unknown);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && err.contains("\"neutral\""), "{err}");
    for (content, says) in
        [("no tab here\n", "no TAB"), ("a\tx\nb\tx\n", "one label"), ("\tpos\n", "text is empty")]
    {
        let bad = tmp("bad-labels.tsv");
        std::fs::write(&bad, content).unwrap();
        let res = bin().args(["classify", "train", "--device", "cpu", "--data"]).arg(&bad).output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{says:?} not in {err}");
    }
}

/// `forecast` beats the seasonal-naive forecast on the bundled airline series (held-out RMSE),
/// writes its curve, and refuses a ragged CSV, an unknown column, a value that is not a number
/// and `--log` of a series that is not positive, each by name.
#[test]
fn forecast_beats_seasonal_naive_and_refuses_bad_csv() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/airline-passengers.csv");
    let out = tmp("forecast");
    let log =
        run(bin().args(["forecast", "--device", "cpu", "--log", "--data"]).arg(&data).arg("--out").arg(&out));
    let numbers: Vec<f64> = log
        .split("values: lstm ")
        .nth(1)
        .map(|r| r.split(|c: char| c == ',' || c == ' ').filter_map(|v| v.parse().ok()).take(2).collect())
        .unwrap_or_default();
    assert_eq!(numbers.len(), 2, "{log}");
    assert!(numbers[0] < 0.6 * numbers[1], "the LSTM's RMSE against the naive one: {log}");
    assert!(out.join("loss.csv").exists() && out.join("loss.png").exists());
    for (content, args, says) in [
        ("a,b\n1,2\n3\n", vec!["--column", "a"], "line 3 has 1 fields"),
        ("a,b\n1,2\n3,4\n", vec!["--column", "c"], "no column \"c\""),
        ("a,b\n1,x\n3,4\n", vec!["--column", "b"], "\"x\" in column b is not a number"),
        ("a,b\n1,0\n3,4\n", vec!["--column", "b", "--log"], "--log needs positive values"),
        ("a,b\n1,2\n3,4\n", vec!["--column", "b"], "too few"),
    ] {
        let bad = tmp("bad.csv");
        std::fs::write(&bad, content).unwrap();
        let res = bin()
            .args(["forecast", "--device", "cpu"])
            .args(&args)
            .arg("--data")
            .arg(&bad)
            .arg("--out")
            .arg(tmp("forecast-bad"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{says:?} not in {err}");
    }
}
