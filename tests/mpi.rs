//! Data-parallel training under `mpirun` (the `mpi` feature; scripts/test installs Open MPI and
//! runs this file with it): two ranks train as one rank with the whole batch does, resume, refuse
//! ranks that disagree, and end together when one of them dies.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rnn_gpu::Device;
use rnn_gpu::seq2seq::Seq2Seq;

const BIN: &str = env!("CARGO_BIN_EXE_rnn-gpu");

/// Nothing here may hang: a job still running after this long fails its test.
const LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to its end, or kills it at `LIMIT` and fails.
fn run(mut cmd: Command) -> Output {
    finish(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start"))
}

/// Waits for `child` to end, or kills it at `LIMIT` and fails.
fn finish(mut child: std::process::Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("still running after {LIMIT:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// `mpirun` with the settings a single machine (a container, as root) needs; `apps` are
/// `(ranks, arguments)` blocks of one job (MPMD: `-np 1 a : -np 1 b`).
fn mpirun(apps: &[(usize, Vec<String>)]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "--bind-to", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Shared memory between the ranks of one machine; no network transports to probe.
        .env("OMPI_MCA_btl", "self,vader")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("RNN_GPU_THREADS", "1");
    for (i, (np, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", &np.to_string()]).args(args);
    }
    cmd
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In a test's own folder, the text and the output folder to train into.
fn setup(test: &str) -> (PathBuf, PathBuf) {
    let dir = common::test_dir(test);
    (text_file(&dir), dir.join("out"))
}

/// Sets the value of `flag` in `args`.
fn set(args: &mut [String], flag: &str, value: &str) {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("no {flag}"));
    args[i + 1] = value.into();
}

fn text_file(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/tinyshakespeare.txt")).unwrap();
    let path = dir.join("text.txt");
    std::fs::write(&path, text.chars().take(30_000).collect::<String>()).unwrap();
    path
}

/// `rnn-gpu train` arguments for a small model on `text` into `out`.
fn train_args(text: &Path, out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        BIN,
        "train",
        "--device",
        "cpu",
        "--hidden",
        "32",
        "--layers",
        "2",
        "--batch",
        "8",
        "--seq-len",
        "16",
        "--eval-every",
        "10",
        "--eval-batches",
        "4",
        "--clip",
        "1",
        "--steps",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(steps.to_string());
    a.extend(["--text".into(), text.display().to_string(), "--out".into(), out.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The (train, validation) losses of loss.csv, row by row.
fn curve(out: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(out.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            (f[1], f[2])
        })
        .collect()
}

fn weights(path: &Path) -> Vec<f32> {
    rnn_gpu::io::load_checkpoint(path, &Device::Cpu).unwrap().model.flat_params().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn single(args: &[String]) -> Command {
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]).env("RNN_GPU_THREADS", "1");
    cmd
}

#[test]
fn two_ranks_train_as_one_rank_with_the_whole_batch_and_resume() {
    let dir = common::test_dir("mpi_two_ranks");
    let text = text_file(&dir);
    let (one, two, resumed) = (dir.join("one"), dir.join("two"), dir.join("resumed"));
    ok(&run(single(&train_args(&text, &one, 50, &[]))), "one rank");
    let out = run(mpirun(&[(2, train_args(&text, &two, 50, &["--distributed"]))]));
    ok(&out, "two ranks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("data-parallel over 2 ranks, 4 streams each"), "{stdout}");
    // Rank 0 alone reports.
    assert_eq!(stdout.matches("done: 50 steps").count(), 1, "{stdout}");

    let (c1, c2) = (curve(&one), curve(&two));
    assert_eq!(c1.len(), 5);
    assert_eq!(c1.len(), c2.len());
    for (a, b) in c1.iter().zip(&c2) {
        // loss.csv holds 5 decimals.
        assert!((a.0 - b.0).abs() <= 2e-5 && (a.1 - b.1).abs() <= 2e-5, "{c1:?}\n{c2:?}");
    }
    assert!(c1[4].0 < c1[0].0, "no learning: {c1:?}");
    let w1 = weights(&one.join("checkpoint.safetensors"));
    let d = max_diff(&w1, &weights(&two.join("checkpoint.safetensors")));
    assert!(d <= 1e-5, "two ranks' weights differ from one rank's by {d}");

    // Stopped at step 30 and resumed to 50: the same run.
    ok(&run(mpirun(&[(2, train_args(&text, &resumed, 30, &["--distributed"]))])), "first 30 steps");
    ok(&run(mpirun(&[(2, train_args(&text, &resumed, 50, &["--distributed", "--resume"]))])), "resumed");
    let d = max_diff(&w1, &weights(&resumed.join("checkpoint.safetensors")));
    assert!(d <= 1e-5, "the resumed two-rank run differs from one rank's by {d}");
}

#[test]
fn ranks_that_disagree_are_refused_at_start_naming_the_difference() {
    let (text, out) = setup("mpi_disagree");
    let mut other = train_args(&text, &out, 20, &["--distributed"]);
    set(&mut other, "--hidden", "48");
    let res = run(mpirun(&[(1, train_args(&text, &out, 20, &["--distributed"])), (1, other)]));
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("rank 1 has hidden = 48, rank 0 has 32"), "{stderr}");
}

#[test]
fn a_rank_that_dies_ends_the_job_and_leaves_whole_files() {
    let (text, out) = setup("mpi_killed");
    // Rank 1 is killed (SIGKILL) after 4 s, mid-run; rank 0 would train for a long time.
    let mut args = train_args(&text, &out, 1_000_000, &["--distributed"]);
    set(&mut args, "--eval-every", "5");
    let script = format!(
        "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (sleep 4; kill -9 $$) & fi; exec {}",
        args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
    );
    let start = Instant::now();
    let res = run(mpirun(&[(2, vec!["sh".into(), "-c".into(), script])]));
    assert!(!res.status.success(), "the job went on without rank 1");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("rank 1") && stderr.contains("signal 9"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(120), "the job took {:?} to end", start.elapsed());
    // Whatever rank 0 had written is whole: the checkpoint loads.
    let ck = out.join("checkpoint.safetensors");
    assert!(ck.exists(), "rank 0 wrote no checkpoint in 4 s");
    weights(&ck);
}

#[test]
fn ctrl_c_to_mpirun_stops_every_rank_at_one_step_with_a_checkpoint() {
    let (text, out) = setup("mpi_ctrl_c");
    let mut cmd = mpirun(&[(2, train_args(&text, &out, 1_000_000, &["--distributed"]))]);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let res = finish(child);
    assert!(start.elapsed() < Duration::from_secs(60), "the job took {:?} to stop", start.elapsed());
    let stdout = String::from_utf8_lossy(&res.stdout);
    let at: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("interrupted at step ")?.split(';').next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!("no interruption reported:\n{stdout}\n{}", String::from_utf8_lossy(&res.stderr))
        });
    let meta = rnn_gpu::io::read_metadata(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(meta["train.step"], at.to_string());
}

#[test]
fn two_ranks_train_seq2seq_as_one_rank_and_resume() {
    let dir = common::test_dir("mpi_seq2seq");
    let pairs = dir.join("pairs.tsv");
    let lines: String = (0..300)
        .map(|i| {
            let s: String = format!("{}", i * 7919 % 100_003).chars().collect();
            format!("{s}\t{}\n", s.chars().rev().collect::<String>())
        })
        .collect();
    std::fs::write(&pairs, lines).unwrap();
    let args = |out: &Path, steps: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> =
            [BIN, "seq2seq", "train", "--device", "cpu", "--hidden", "24", "--embed", "8"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(["--batch", "6", "--steps", steps, "--eval-every", "10"].map(String::from));
        a.extend(["--pairs".into(), pairs.display().to_string(), "--out".into(), out.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (one, two, resumed) = (dir.join("one"), dir.join("two"), dir.join("resumed"));
    ok(&run(single(&args(&one, "20", &[]))), "one rank");
    ok(&run(mpirun(&[(2, args(&two, "20", &["--distributed"]))])), "two ranks");
    ok(&run(mpirun(&[(2, args(&resumed, "10", &["--distributed"]))])), "first 10 steps");
    ok(&run(mpirun(&[(2, args(&resumed, "20", &["--distributed", "--resume"]))])), "resumed");
    let w = |d: &Path| {
        Seq2Seq::load_checkpoint(&d.join("checkpoint.safetensors"), &Device::Cpu)
            .unwrap()
            .0
            .flat_params()
            .unwrap()
    };
    let d = max_diff(&w(&one), &w(&two));
    assert!(d <= 1e-5, "two ranks' seq2seq weights differ from one rank's by {d}");
    let d = max_diff(&w(&one), &w(&resumed));
    assert!(d <= 1e-5, "the resumed two-rank seq2seq run differs from one rank's by {d}");
}
