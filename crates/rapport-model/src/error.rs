//! What a model function can fail with. A fit that does not converge is not an error
//! (its result says `converged: false`); these are the cases where there is nothing to
//! fit, or the call breaks the function's contract.

/// Why a model could not be fitted or evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The data are too few or too thin for this model: a finding to report (the rest
    /// of an analysis goes on), not a fault.
    TooLittleData(String),
    /// The arguments break the function's contract (shapes, non-finite values,
    /// parameters out of range): a fault of the caller.
    InvalidInput(String),
}

impl ModelError {
    pub fn message(&self) -> &str {
        match self {
            ModelError::TooLittleData(m) | ModelError::InvalidInput(m) => m,
        }
    }
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ModelError {}

/// A likelihood that is not finite from any starting point: these data do not fit the
/// model.
pub(crate) fn no_finite_likelihood() -> ModelError {
    ModelError::TooLittleData("the likelihood is not finite from any starting point".into())
}
