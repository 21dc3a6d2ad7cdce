//! `azflow-traffic`: the traffic generator the test bed runs inside its hosts.
//! See [`azflow_tests::tool`] for the commands and [`azflow_tests::protocol`] for the output.

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(azflow_tests::tool::main(&argv));
}
