//! The `qupid` binary: everything is in the library's [`qupid_cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    qupid_cli::run(std::env::args_os())
}
