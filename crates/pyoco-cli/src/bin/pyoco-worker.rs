fn main() -> std::process::ExitCode {
    pyoco_cli::worker::main()
}
