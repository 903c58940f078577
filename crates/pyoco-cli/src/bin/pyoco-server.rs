fn main() -> std::process::ExitCode {
    pyoco_cli::server::main()
}
