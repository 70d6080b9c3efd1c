//! `sluice`: the broker binary. The Kafka front end is not built yet (issue 3);
//! for now the binary only reports that.

fn main() {
    eprintln!("sluice: the Kafka broker is not implemented yet; see README.md");
    std::process::exit(2);
}
