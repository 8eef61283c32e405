//! The corecache server: command line -> validated config -> runtime.

use std::io::Write;

use corecache::config::Config;

fn main() {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(Ok(help_or_version)) => {
            // A closed stdout (`corecache --help | head`) is not an error worth reporting.
            let _ = write!(std::io::stdout(), "{help_or_version}");
            std::process::exit(0);
        }
        Err(Err(reason)) => {
            eprintln!("corecache: {reason}");
            std::process::exit(64);
        }
    };
    for notice in &config.notices {
        eprintln!("corecache: {notice}");
    }
    if let Err(failure) = corecache::runtime::run(config) {
        eprintln!("corecache: {}", failure.message);
        std::process::exit(failure.exit_code);
    }
}
