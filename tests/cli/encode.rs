//! `bsa encode` writes a uint8 `.npy` of shape n x ceil(N/8) whose bits (numpy little bit order:
//! bit j in byte j/8 at position j%8) are the codes computed independently from the model file.

use crate::util::{TestDir, Weights, khot_code, normalised, read_npy_2d, sign_code};

fn encode_agrees(bits: usize, k: usize, method: &str) {
    let t = TestDir::new();
    t.write_f32("train.npy", &normalised(200, 12, 21));
    t.train("train.npy", "m.safetensors", bits, k, &["--method", method]);
    let w = Weights::load(&t.path("m.safetensors"));
    assert_eq!((w.bits, w.dim), (bits, 12));

    let x = normalised(77, 12, 22);
    t.write_f32("x.npy", &x);
    let out = t.bsa(&[
        "encode",
        "--model",
        "m.safetensors",
        "--data",
        "x.npy",
        "--out",
        "codes.npy",
    ]);
    out.ok();

    let (descr, rows, cols, data) = read_npy_2d(&t.read("codes.npy"));
    assert_eq!(descr, "|u1");
    assert_eq!((rows, cols), (x.n, bits.div_ceil(8)));
    assert_eq!(data.len(), rows * cols);
    let mut total = 0;
    for i in 0..x.n {
        let h = w.pre_activations(x.row(i));
        let want = if method == "topk" {
            khot_code(&h, k)
        } else {
            sign_code(&h)
        };
        let packed = &data[i * cols..(i + 1) * cols];
        for j in 0..cols * 8 {
            let bit = packed[j / 8] >> (j % 8) & 1 == 1;
            if j < bits {
                assert_eq!(bit, want[j], "{method} N={bits}: row {i} bit {j}");
            } else {
                assert!(!bit, "{method} N={bits}: row {i} padding bit {j} is set");
            }
        }
        total += want.iter().filter(|&&b| b).count();
    }
    // Not all zeros nor all ones, or the comparison would prove little.
    assert!(
        total > 0 && total < x.n * bits,
        "degenerate codes: {total} bits set"
    );
}

#[test]
fn encode_bsa_bits_multiple_of_8() {
    encode_agrees(32, 4, "bsa");
}

#[test]
fn encode_bsa_bits_not_multiple_of_8() {
    encode_agrees(30, 4, "bsa");
}

#[test]
fn encode_topk_bits_not_multiple_of_8() {
    encode_agrees(13, 3, "topk");
}

/// Codes of the same data twice are byte-identical, and the thread count does not change them.
#[test]
fn encode_is_deterministic() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(500, 12, 23));
    t.train("x.npy", "m.safetensors", 30, 4, &[]);
    let run = |out: &str, threads: &str| {
        t.bsa(&[
            "encode",
            "--model",
            "m.safetensors",
            "--data",
            "x.npy",
            "--out",
            out,
            "--threads",
            threads,
        ])
        .ok();
        t.read(out)
    };
    let a = run("a.npy", "1");
    assert_eq!(a, run("b.npy", "1"));
    assert_eq!(a, run("c.npy", "3"));
}

/// Rows that are not of unit length get one warning naming the file, the count and the norms
/// when the model's codes depend on a row's length (bsa, at `train`, `encode`, `build`, `add`
/// and a Hamming `search`), and none when they do not (sign bits) or when the rows are normalised;
/// the command still succeeds.
#[test]
fn warns_once_about_rows_not_of_unit_length() {
    let t = TestDir::new();
    let x = normalised(200, 12, 31);
    t.write_f32("unit.npy", &x);
    let mut scaled = x.clone();
    for i in [3, 50, 120] {
        scaled.row_mut(i).iter_mut().for_each(|v| *v *= 4.0);
    }
    scaled.row_mut(7).iter_mut().for_each(|v| *v *= 0.25);
    t.write_f32("scaled.npy", &scaled);
    fn warning(stderr: &str) -> Vec<&str> {
        stderr
            .lines()
            .filter(|l| l.starts_with("bsa: warning:") && l.contains("not of unit length"))
            .collect()
    }
    // Each command line as one string: its words are split at spaces.
    let run = |line: &str| t.bsa(&line.split(' ').collect::<Vec<_>>()).ok().stderr;
    let stderr = run("train --data scaled.npy --bits 32 --k 4 --epochs 1 --out m.safetensors -q");
    let lines = warning(&stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("4 of 200 rows of scaled.npy")
            && lines[0].contains("L2 norms 0.25 to 4")
            && lines[0].contains("bsa codes depend on a row's length"),
        "{}",
        lines[0]
    );
    let encode =
        |data: &str, model: &str| run(&format!("encode --model {model} --data {data} --out c.npy"));
    assert_eq!(warning(&encode("scaled.npy", "m.safetensors")).len(), 1);
    assert!(warning(&encode("unit.npy", "m.safetensors")).is_empty());
    run("train --method sign --data unit.npy --out sign.safetensors");
    assert!(warning(&encode("scaled.npy", "sign.safetensors")).is_empty());
    let build = run("build --model m.safetensors --data scaled.npy --out idx -q");
    assert_eq!(warning(&build).len(), 1);
    let search = |score: &str| {
        run(&format!(
            "search --index idx --queries scaled.npy --score {score}"
        ))
    };
    assert_eq!(warning(&search("hamming")).len(), 1);
    assert!(warning(&search("adc")).is_empty());
    let add = |data: &str| run(&format!("add --index idx --data {data}"));
    assert_eq!(warning(&add("scaled.npy")).len(), 1);
    assert!(warning(&add("unit.npy")).is_empty());
}
