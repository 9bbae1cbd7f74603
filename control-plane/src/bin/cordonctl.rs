fn main() -> std::process::ExitCode {
    cordon_control_plane::cli::main()
}
