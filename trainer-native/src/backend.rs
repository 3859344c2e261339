//! Backend selection: one generic code path, instantiated for the backend named on the
//! command line. CUDA is the training target on GPUs; on the CPU, LibTorch's kernels through
//! burn-tch (the `tch` feature) train ~2.5x faster than the pure-Rust burn-flex
//! (docs/benchmarks.md), which stays for builds without LibTorch; wgpu (Vulkan/Metal/DX12, or
//! Mesa lavapipe headless) makes the GPU code path testable without a GPU.

use anyhow::Context;
use burn::tensor::backend::Backend;
use clap::ValueEnum;

/// The backends this build can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Pure-Rust multi-threaded CPU backend (burn-flex).
    Cpu,
    /// LibTorch's CPU kernels (oneDNN, MKL) through burn-tch (the `tch` feature: built against
    /// the PyPI torch wheel of the project's venv, tests/pytorch/setup-venv.sh).
    Tch,
    /// wgpu: Vulkan, Metal or DX12; headless Mesa lavapipe works too.
    Wgpu,
    /// NVIDIA CUDA (the default `cuda` feature).
    Cuda,
}

impl BackendKind {
    /// The default `--backend` of every command: the fastest CPU backend this build has
    /// (LibTorch when built with `tch`, else burn-flex). A clap default, hence a name.
    pub const DEFAULT_CPU: &'static str = if cfg!(feature = "tch") { "tch" } else { "cpu" };

    /// The name `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Tch => "tch",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// Code generic over the backend, run by [`dispatch`] on the chosen one.
pub trait BackendTask {
    type Output;
    /// Whether the task trains (autodiff): it picks the convolution algorithm
    /// ([`conv_algorithm_for`]).
    const TRAINS: bool = false;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

pub type CpuBackend = burn::backend::Flex;
pub type WgpuBackend = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
#[cfg(feature = "tch")]
pub type TchBackend = burn::backend::LibTorch<f32>;

/// Runs `task` on `kind` (device 0).
///
/// # Errors
/// When the backend is not compiled in, or the task fails.
pub fn dispatch<T: BackendTask>(kind: BackendKind, task: T) -> anyhow::Result<T::Output> {
    model::conv::set_conv_algorithm(conv_algorithm_for(kind, T::TRAINS)?);
    match kind {
        BackendKind::Cpu => task.run::<CpuBackend>(Default::default()),
        BackendKind::Wgpu => task.run::<WgpuBackend>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => task.run::<CudaBackend>(Default::default()),
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => {
            anyhow::bail!("this build has no CUDA backend: rebuild with `--features cuda`")
        }
        #[cfg(feature = "tch")]
        BackendKind::Tch => task.run::<TchBackend>(burn::backend::libtorch::LibTorchDevice::Cpu),
        #[cfg(not(feature = "tch"))]
        BackendKind::Tch => anyhow::bail!(
            "this build has no LibTorch backend: run tests/pytorch/setup-venv.sh, then rebuild \
             with `--features tch` (or use `--backend cpu`)"
        ),
    }
}

/// Environment variable that overrides [`conv_algorithm_for`]: `native` or `im2col`.
pub const CONV_ALGORITHM_VAR: &str = "GDPO_SR_CONV";

/// The convolution algorithm of the model's layers (`model::conv`) on `kind`, for a task that
/// trains or only infers. Measured on an H100 (docs/benchmarks.md, "GPU"): burn 0.21's CUDA
/// `conv2d` (f32) is a direct kernel, and im2col + matrix product runs the forward 1.6-3.7x
/// faster (inference 1.3-1.6x), but its backward, derived by autodiff from the patch slices,
/// is slower than burn's (a NAOSD training step 0.27 -> 0.44 s). So: im2col for inference on
/// CUDA; the backend's own convolution for training, and everywhere on the CPU (burn-flex
/// already convolves by im2col + GEMM; the generic version is slower there) and on wgpu (no
/// real GPU to measure on here). `GDPO_SR_CONV=native|im2col` overrides, for benchmarks.
///
/// # Errors
/// When the variable holds anything else.
pub fn conv_algorithm_for(
    kind: BackendKind,
    trains: bool,
) -> anyhow::Result<model::conv::ConvAlgorithm> {
    use model::conv::ConvAlgorithm;
    match std::env::var(CONV_ALGORITHM_VAR).ok().as_deref() {
        None | Some("") => Ok(match kind {
            BackendKind::Cuda if !trains => ConvAlgorithm::Im2col,
            BackendKind::Cuda | BackendKind::Cpu | BackendKind::Tch | BackendKind::Wgpu => {
                ConvAlgorithm::Native
            }
        }),
        Some(name) => ConvAlgorithm::from_name(name)
            .with_context(|| format!("{CONV_ALGORITHM_VAR}={name}: expected `native` or `im2col`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::conv::ConvAlgorithm;

    /// The defaults the measurements chose (docs/benchmarks.md, "GPU"); skipped when the
    /// override variable is set in the environment of the test run.
    #[test]
    fn im2col_only_for_inference_on_cuda() {
        if std::env::var_os(CONV_ALGORITHM_VAR).is_some() {
            return;
        }
        let pick = |kind, trains| conv_algorithm_for(kind, trains).unwrap();
        assert_eq!(pick(BackendKind::Cuda, false), ConvAlgorithm::Im2col);
        assert_eq!(pick(BackendKind::Cuda, true), ConvAlgorithm::Native);
        for kind in [BackendKind::Cpu, BackendKind::Tch, BackendKind::Wgpu] {
            assert_eq!(pick(kind, false), ConvAlgorithm::Native);
            assert_eq!(pick(kind, true), ConvAlgorithm::Native);
        }
    }
}
