//! With the `tch` feature, the binaries and test executables load LibTorch's shared libraries
//! (libtorch_cpu.so, ...) from the project's venv at run time. torch-sys only puts that folder
//! on the link search path, so record it as the executables' rpath: they then run without
//! LD_LIBRARY_PATH. The `tests` crate runs this same file (its Cargo.toml `build` key).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    // Set by .cargo/config.toml ([env]) to the venv's torch package folder.
    let libtorch = std::env::var("LIBTORCH").unwrap_or_default();
    let lib = std::path::Path::new(&libtorch).join("lib");
    if !lib.join("libtorch_cpu.so").exists() {
        panic!(
            "the `tch` feature links LibTorch from {} (LIBTORCH, set in .cargo/config.toml), \
             which has no libtorch_cpu.so: run tests/pytorch/setup-venv.sh first, or build \
             without `--features tch`",
            lib.display()
        );
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
