//! Prints the measured error of every integer kernel against its float function
//! (`cargo bench --bench kernels`). The same measurement is bounded by the test
//! `kernels::kernel_errors_stay_within_their_bounds`.

fn main() {
    println!("| kernel | setting | measured over | max abs error | mean abs error |");
    println!("|---|---|---|---|---|");
    for e in intone::quant::kernels::measure_errors() {
        println!(
            "| {} | {} | {} | {:.5} | {:.6} |",
            e.kernel, e.setting, e.domain, e.max_abs, e.mean_abs
        );
    }
}
