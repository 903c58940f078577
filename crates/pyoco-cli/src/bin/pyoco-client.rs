fn main() -> std::process::ExitCode {
    pyoco_cli::client::main()
}
