//! Writes the CRD YAML (`crds/generated/`) and `docs/crds.md` from the Rust
//! types. Run from the workspace root (`make crds` does).
//!
//! `crdgen` writes the files; `crdgen --print` prints the CRDs as one YAML
//! stream instead (for `kubectl apply -f -`).

use std::path::Path;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let files = skiff_crds::generate()?;
    if std::env::args().nth(1).as_deref() == Some("--print") {
        for f in files.iter().filter(|f| f.path.ends_with(".yaml")) {
            print!("---\n{}", f.contents);
        }
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("crds/ has no parent directory")?;
    for f in files {
        let path = root.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", f.path);
    }
    Ok(())
}
