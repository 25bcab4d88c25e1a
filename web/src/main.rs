use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = weir_web::cli::Cli::parse();
    match weir_web::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
