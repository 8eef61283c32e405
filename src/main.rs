//! The corecache server: command line -> validated config -> runtime.

use corecache::config::Config;

fn main() {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(msg) => {
            // clap's own help and version output arrive here too; print them as they are.
            let msg = msg.trim_end();
            if msg.starts_with("Usage:")
                || msg.starts_with("A thread-per-core")
                || msg.starts_with("corecache ")
            {
                println!("{msg}");
                std::process::exit(0);
            }
            eprintln!("corecache: {msg}");
            std::process::exit(64);
        }
    };
    if let Err(msg) = corecache::runtime::run(config) {
        eprintln!("corecache: {msg}");
        std::process::exit(1);
    }
}
