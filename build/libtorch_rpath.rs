//! Shared build script for every package whose binaries or tests link libtorch.
//!
//! Cargo does not pass a dependency's link arguments on to dependents, so each such package
//! runs this script itself. It records an rpath to the libtorch in the project's `.venv`, so
//! binaries run without `LD_LIBRARY_PATH`, and forces a `DT_NEEDED` entry for `torch_cuda`
//! where the wheel has it: the linker drops it under `--as-needed` otherwise, and CUDA then
//! silently reports as unavailable.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    // The rpath is the resolved directory (stable across clones that share one venv cache), so
    // LIBTORCH staying the same does not mean the rpath still holds: rerun if the library moves.
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("libtorch_cpu.so").display()
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
