//! Backend selection: one generic code path, instantiated for the backend named on the
//! command line. CUDA is the training target; wgpu (Vulkan/Metal/DX12, or Mesa lavapipe
//! headless) and the pure-Rust CPU backend (burn-flex) make everything testable without a GPU.

use burn::tensor::backend::Backend;
use clap::ValueEnum;

/// The backends this build can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Pure-Rust multi-threaded CPU backend (burn-flex).
    Cpu,
    /// wgpu: Vulkan, Metal or DX12; headless Mesa lavapipe works too.
    Wgpu,
    /// NVIDIA CUDA (the default `cuda` feature).
    Cuda,
}

/// Code generic over the backend, run by [`dispatch`] on the chosen one.
pub trait BackendTask {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

pub type CpuBackend = burn::backend::Flex;
pub type WgpuBackend = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// Runs `task` on `kind` (device 0).
///
/// # Errors
/// When the backend is not compiled in, or the task fails.
pub fn dispatch<T: BackendTask>(kind: BackendKind, task: T) -> anyhow::Result<T::Output> {
    match kind {
        BackendKind::Cpu => task.run::<CpuBackend>(Default::default()),
        BackendKind::Wgpu => task.run::<WgpuBackend>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => task.run::<CudaBackend>(Default::default()),
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => {
            anyhow::bail!("this build has no CUDA backend: rebuild with `--features cuda`")
        }
    }
}
