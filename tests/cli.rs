//! The `rnn-gpu` command end to end: forward and gradients from files against PyTorch's numbers,
//! training that resumes, sampling, and clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_gpu::io::{self, Metadata, TensorData};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnn-gpu"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rnn-gpu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
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
/// included, on the CPU device (the GPU is covered by tests/io.rs).
#[test]
fn forward_with_gradients_matches_pytorch() {
    let exp = io::read_tensors(&fixture("lstm_bidir.expected.safetensors")).unwrap();
    let pick = |names: &[&str]| -> Vec<(String, Vec<usize>, TensorData)> {
        names.iter().map(|n| (n.to_string(), exp.tensors[*n].0.clone(), exp.tensors[*n].1.clone())).collect()
    };
    let input = tmp("in.safetensors");
    io::write_tensors(&input, &pick(&["input", "lengths", "h0", "c0"]), &Metadata::new()).unwrap();
    let grad = tmp("grad.safetensors");
    let g = vec![(
        "output".to_string(),
        exp.tensors["grad_output"].0.clone(),
        exp.tensors["grad_output"].1.clone(),
    )];
    io::write_tensors(&grad, &g, &Metadata::new()).unwrap();
    let out = tmp("out.safetensors");
    run(bin()
        .args(["forward", "--cell", "lstm", "--device", "cpu", "--model"])
        .arg(fixture("lstm_bidir.model.safetensors"))
        .arg("--input")
        .arg(&input)
        .arg("--grad-output")
        .arg(&grad)
        .arg("--out")
        .arg(&out));
    let got = io::read_tensors(&out).unwrap();
    for name in [
        "output",
        "h_n",
        "c_n",
        "grad.input",
        "grad.h0",
        "grad.c0",
        "grad.weight_ih_l1_reverse",
        "grad.bias_hh_l0",
    ] {
        let (g, e) = (floats(&got, name), floats(&exp, name));
        assert_eq!(g.len(), e.len(), "{name}");
        for (i, (a, b)) in g.iter().zip(&e).enumerate() {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{name}[{i}]: rnn-gpu {a} PyTorch {b}");
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
            "--lr-decay",
            "0.5",
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
        .args([
            "seq2seq",
            "train",
            "--device",
            "cpu",
            "--hidden",
            "16",
            "--embed",
            "8",
            "--steps",
            "20",
            "--eval-every",
            "10",
            "--batch",
            "8",
            "--pairs",
        ])
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
    assert_eq!(stdout.lines().count(), 2, "one line per translatable input: {stdout}");
    assert!(String::from_utf8_lossy(&res.stderr).contains("'x' is not in the model's source vocabulary"));
}
