//! Named fault points for the reliability tests (docs/reliability.md). In a build with the
//! `fault-injection` feature, `FAILPOINTS="name=3*off->1*return->off"` fires `name` on its
//! fourth evaluation; without the feature every point is a constant `false`.

/// A NaN multiplied into a micro-batch's training loss (every stage).
pub const LOSS_NAN: &str = "train-loss-nan";
/// A NaN written over the first GDPO reward of a step.
pub const REWARD_NAN: &str = "gdpo-reward-nan";
/// A checkpoint file write that runs out of space half-way (ENOSPC).
pub const DISK_FULL: &str = "checkpoint-disk-full";

/// Whether the named fault fires now.
#[must_use]
pub fn fires(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        fail::eval(name, |_| ()).is_some()
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = name;
        false
    }
}

/// Reads `FAILPOINTS` for the life of the returned guard (a no-op without the feature).
#[must_use]
pub fn from_env() -> impl Drop {
    #[cfg(feature = "fault-injection")]
    {
        fail::FailScenario::setup()
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        struct Nothing;
        impl Drop for Nothing {
            fn drop(&mut self) {}
        }
        Nothing
    }
}
