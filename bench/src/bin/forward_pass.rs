//! The hyper floor made transparent: the caller's headers go up and the upstream's come back,
//! less the hop-by-hop ones, as through the gateway (see `sluice_bench::hyper_floor`).
//!
//!   forward-pass LISTEN UPSTREAM_BASE     prints "forward listening on http://ADDR/v1"

fn main() {
    sluice_bench::hyper_floor::run("forward-pass", sluice_bench::hyper_floor::Headers::Passed);
}
