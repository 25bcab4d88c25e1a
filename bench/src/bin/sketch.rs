//! Sketch decoding benchmark: what validating a sketch costs on top of decoding it.
//!
//! Every sketch a query merges (`hll_merge`, `hll_distinct`, `hll_estimate`) or a
//! rollup reads back from a segment is decoded by `Sketch::from_bytes`, which
//! first checks the bytes against what `Sketch::to_bytes` can write
//! (`weir_storage::sketch::validate`: sizes, sparse codes, dense registers), then
//! builds the sketch. For sketches of a range of sizes (sparse to dense) this
//! times both, per sketch, and reports validation's share.
//!
//! `cargo run --release -p weir-bench --bin sketch -- --precision 14 --iterations 20000`

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use weir_bench::machine;
use weir_storage::sketch::{Sketch, hash_bytes, validate};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 14)]
    precision: u8,
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
}

/// Nanoseconds per call of `f`, the best of three rounds.
fn time(iterations: u32, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iterations {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let p = args.precision;
    println!("machine: {}", machine());
    println!("precision {p}, {} iterations, best of 3\n", args.iterations);
    println!("| distinct values | form | bytes | decode (validate + build) | validate alone | validate share |");
    println!("|---:|---|---:|---:|---:|---:|");
    for n in [20u64, 300, 3_000, 100_000] {
        let mut s = Sketch::new(p)?;
        for i in 0..n {
            s.insert_hash(hash_bytes(&i.to_le_bytes()));
        }
        let bytes = s.to_bytes();
        let dense = bytes.len() as u64 > (4u64 << p) / 5;
        let decode = time(args.iterations, || {
            black_box(Sketch::from_bytes(black_box(&bytes)).expect("valid"));
        });
        let check = time(args.iterations, || {
            validate(p, black_box(&bytes[2..])).expect("valid");
        });
        println!(
            "| {n} | {} | {} | {:.2} us | {:.2} us | {:.0}% |",
            if dense { "dense" } else { "sparse" },
            bytes.len(),
            decode / 1000.0,
            check / 1000.0,
            100.0 * check / decode
        );
    }
    Ok(())
}
