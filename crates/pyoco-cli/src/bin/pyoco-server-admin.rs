fn main() -> std::process::ExitCode {
    pyoco_cli::admin::main()
}
