//! A floor below `forward`: bare forwarding on hyper alone, the upstream's headers dropped
//! (see `sluice_bench::hyper_floor`; `forward-pass` passes them).
//!
//!   forward-hyper LISTEN UPSTREAM_BASE    prints "forward listening on http://ADDR/v1"

fn main() {
    sluice_bench::hyper_floor::run("forward-hyper", sluice_bench::hyper_floor::Headers::Dropped);
}
