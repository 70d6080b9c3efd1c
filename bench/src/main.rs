//! `sluice-bench`: load harness (see README.md).

fn main() {
    eprintln!("sluice-bench: no workload yet");
    std::process::exit(2);
}
