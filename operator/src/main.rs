//! `skiff-operator`: the Kubernetes operator. Not written yet (see the
//! README's feature table); the crate exists so the workspace has the layout
//! the architecture fixes.

fn main() -> std::process::ExitCode {
    eprintln!("skiff-operator: not implemented yet; see README.md for what Skiff ships today");
    std::process::ExitCode::from(2)
}
