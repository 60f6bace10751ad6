//! The last stage of the pipeline, shared with callers that have no tenant service behind
//! them (`airlock invoke` on a component file): the runtime's refusals as [`CoreError`]s,
//! and what counts as "the guest ran".

use airlock_runtime::{
    ErrorKind, InvokeError, InvokeOutcome, InvokeRequest, LoadedComponent, Runtime,
};

use crate::CoreError;

/// A refusal before any guest ran, as the pipeline reports it.
pub(crate) fn refusal(error: InvokeError) -> CoreError {
    match error.kind {
        ErrorKind::UnknownAction => CoreError::UnknownAction(error.message),
        ErrorKind::InvalidInput => CoreError::InvalidInput {
            detail: error.message,
            pointer: error.pointer,
        },
        ErrorKind::Overloaded => CoreError::Overloaded { retry_after_s: 1 },
        _ => {
            tracing::error!(kind = %error.kind, message = %error.message, "the runtime failed an invocation");
            CoreError::Internal
        }
    }
}

/// An outcome whose guest ran (it succeeded or failed on its own terms), or the refusal or
/// host failure that kept it from running (the runtime's error, with its kind).
pub(crate) fn ran(outcome: InvokeOutcome) -> Result<InvokeOutcome, InvokeError> {
    match &outcome.result {
        Err(error)
            if matches!(
                error.kind,
                ErrorKind::Overloaded
                    | ErrorKind::UnknownAction
                    | ErrorKind::InvalidInput
                    | ErrorKind::Internal
            ) =>
        {
            Err(error.clone())
        }
        _ => Ok(outcome),
    }
}

/// One invocation of a loaded component with no tenant service: checks, then run, with the
/// same split as [`crate::Pipeline::invoke`]: `Err` is a refusal before any guest ran (or a
/// host failure), with the runtime's error kind. No quota or stored credential applies; the
/// caller's request carries its limits and credential.
pub async fn invoke(
    runtime: &Runtime,
    component: &LoadedComponent,
    request: InvokeRequest,
) -> Result<InvokeOutcome, InvokeError> {
    let prepared = runtime.prepare(component, request)?;
    ran(runtime.run(prepared).await)
}
