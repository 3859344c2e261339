//! Test helpers: the CPU test backend and utilities shared by the unit tests.

use burn::{
    module::{Module, ModuleMapper, Param},
    tensor::{Distribution, Tensor},
};

pub type TestBackend = burn::backend::Flex;

pub fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

pub fn max_abs_diff<const D: usize>(a: Tensor<TestBackend, D>, b: Tensor<TestBackend, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// Replaces the parameters whose dotted path passes `filter` with N(0, std^2) values, to
/// stand in for a trained network (fresh residual branches are zero, i.e. identities).
pub fn randomise<M: Module<TestBackend>>(module: M, filter: impl Fn(&str) -> bool, std: f64) -> M {
    struct Randomise<F> {
        path: Vec<String>,
        filter: F,
        std: f64,
    }
    impl<F: Fn(&str) -> bool> ModuleMapper<TestBackend> for Randomise<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<TestBackend, D>>,
        ) -> Param<Tensor<TestBackend, D>> {
            let (id, t, mapper) = param.consume();
            let t = if (self.filter)(&self.path.join(".")) {
                Tensor::random(t.shape(), Distribution::Normal(0.0, self.std), &t.device())
            } else {
                t
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    module.map(&mut Randomise {
        path: Vec::new(),
        filter,
        std,
    })
}
