//! Builds the C++ shim over c10d (cpp/) against the same libtorch that torch-sys links,
//! the way torch-sys builds its own wrapper, and links libtorch_cpu / libc10 (plus
//! libtorch_cuda / libc10_cuda with the `nccl` feature) for the shim's symbols.
//!
//! Like `build/libtorch_rpath.rs` (which this package cannot use, having its own build
//! script), it also records an rpath to libtorch so this package's tests run without
//! `LD_LIBRARY_PATH`, and keeps `torch_cuda` as a needed library where the wheel has it.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    for var in [
        "LIBTORCH",
        "LIBTORCH_CXX11_ABI",
        "DEP_TCH_LIBTORCH_LIB",
        "CUDA_HOME",
        "VLA_DIST_CUDA_INCLUDE",
        "VLA_DIST_NCCL_INCLUDE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=cpp");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let libtorch = libtorch_dir(&manifest_dir);
    let lib = libtorch.join("lib");
    let include = libtorch.join("include");
    assert!(
        include
            .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
            .exists(),
        "vla-dist: {} has no c10d headers (torch/csrc/distributed/c10d); LIBTORCH must point \
         at a libtorch built with distributed support",
        include.display()
    );
    let cxx11_abi = match env::var("LIBTORCH_CXX11_ABI").as_deref() {
        Ok("0") => "0",
        _ => "1",
    };

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .include(manifest_dir.join("cpp"))
        // Declaration-only gloo headers: the wheel lacks gloo's (see cpp/gloo_decls/README.md).
        .include(manifest_dir.join("cpp/gloo_decls"))
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .file(manifest_dir.join("cpp/shim.cpp"))
        .file(manifest_dir.join("cpp/reducer.cpp"));

    let nccl = env::var_os("CARGO_FEATURE_NCCL").is_some();
    if nccl {
        let site_packages = libtorch
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let cuda = cuda_includes(site_packages.as_deref());
        let nccl_inc = nccl_include(site_packages.as_deref());
        build
            .includes(cuda)
            .include(nccl_inc)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .file(manifest_dir.join("cpp/nccl.cpp"));
    }
    build.compile("vla_dist_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }

    let lib = lib.canonicalize().unwrap_or(lib);
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("libtorch_cpu.so").display()
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// `$LIBTORCH` (relative values resolve against the workspace root, as `.cargo/config.toml`
/// means them), else the directory torch-sys reports through its `links` metadata.
fn libtorch_dir(manifest_dir: &Path) -> PathBuf {
    if let Some(value) = env::var_os("LIBTORCH") {
        let path = PathBuf::from(value);
        if path.is_absolute() {
            return path;
        }
        let workspace = manifest_dir.parent().unwrap_or(manifest_dir);
        return workspace.join(path);
    }
    if let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = PathBuf::from(lib);
        if let Some(root) = lib.parent() {
            return root.to_path_buf();
        }
    }
    panic!("vla-dist: LIBTORCH is not set (the workspace's .cargo/config.toml sets it)");
}

/// The CUDA headers ProcessGroupNCCL.hpp pulls in through ATen/cuda and c10/cuda. The
/// PyTorch wheel's `nvidia/cu13/include` has the runtime API headers only; `crt/` and
/// CCCL's `nv/target` come with a CUDA toolkit, or with the `nvidia-cuda-crt` and
/// `nvidia-cuda-cccl` wheels (same CUDA version as the runtime), which install into that
/// same directory. Each needed header may come from a different candidate directory;
/// `VLA_DIST_CUDA_INCLUDE` is a path list (`:`-separated) searched first.
fn cuda_includes(site_packages: Option<&Path>) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dirs) = env::var_os("VLA_DIST_CUDA_INCLUDE") {
        candidates.extend(env::split_paths(&dirs));
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    if let Some(sp) = site_packages {
        for sub in ["nvidia/cu13/include", "nvidia/cuda_runtime/include"] {
            candidates.push(sp.join(sub));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    let needed = [
        ("cuda_runtime_api.h", "nvidia-cuda-runtime"),
        ("crt/host_defines.h", "nvidia-cuda-crt"),
        ("nv/target", "nvidia-cuda-cccl"),
    ];
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut missing = Vec::new();
    for (header, wheel) in needed {
        match candidates.iter().find(|d| d.join(header).exists()) {
            Some(dir) if !dirs.contains(dir) => dirs.push(dir.clone()),
            Some(_) => {}
            None => missing.push(format!("{header} (wheel {wheel})")),
        }
    }
    if !missing.is_empty() {
        panic!(
            "vla-dist feature `nccl`: CUDA headers missing: {}; searched {candidates:?}. \
             Install those wheels, matching the CUDA version of PyTorch's runtime, into the \
             venv, or point CUDA_HOME / VLA_DIST_CUDA_INCLUDE at a CUDA toolkit's include",
            missing.join(", ")
        );
    }
    dirs
}

/// nccl.h, from the wheel's `nvidia/nccl/include` unless told otherwise.
fn nccl_include(site_packages: Option<&Path>) -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(dir) = env::var_os("VLA_DIST_NCCL_INCLUDE") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(sp) = site_packages {
        candidates.push(sp.join("nvidia/nccl/include"));
    }
    candidates.push(PathBuf::from("/usr/include"));
    match candidates.iter().find(|d| d.join("nccl.h").exists()) {
        Some(dir) => dir.clone(),
        None => panic!(
            "vla-dist feature `nccl`: nccl.h not found among {candidates:?}; set \
             VLA_DIST_NCCL_INCLUDE"
        ),
    }
}
