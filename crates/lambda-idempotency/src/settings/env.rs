//! Typed reads of environment variables for [`super::Settings`] and the
//! stores' options: whole numbers, durations, sizes, booleans and method
//! lists, each refused with a [`ConfigError`] that names its variable.

use std::time::Duration;

use lambda_http::http::{HeaderName, Method};

use super::ConfigError;
use crate::pointer::JsonPointer;
use crate::scope::ApiGatewayScope;

/// Typed reads of environment variables; empty values count as unset.
pub(crate) struct Env<'a>(pub(crate) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub(crate) fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn error(&self, var: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            var,
            reason: reason.into(),
        }
    }

    fn whole(&self, var: &'static str) -> Result<Option<u64>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(None);
        };
        raw.trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| self.error(var, format!("expected a whole number, got {raw:?}")))
    }

    pub(crate) fn positive(&self, var: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.whole(var)? {
            Some(0) => Err(self.error(var, "must be greater than zero")),
            other => Ok(other),
        }
    }

    pub(crate) fn count(&self, var: &'static str, default: u32) -> Result<u32, ConfigError> {
        match self.whole(var)? {
            None => Ok(default),
            Some(n) => u32::try_from(n).map_err(|_| self.error(var, "is too large")),
        }
    }

    pub(crate) fn secs(
        &self,
        var: &'static str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.positive(var)?.map_or(default, Duration::from_secs);
        if value > max {
            return Err(self.error(var, format!("must be at most {} seconds", max.as_secs())));
        }
        Ok(value)
    }

    pub(crate) fn millis(
        &self,
        var: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self.positive(var)?.map_or(default, Duration::from_millis))
    }

    pub(crate) fn size(&self, var: &'static str, default: usize) -> Result<usize, ConfigError> {
        Ok(self
            .positive(var)?
            .map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    pub(crate) fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .get(var)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(self.error(var, format!("expected true or false, got {other:?}"))),
        }
    }

    /// A header name (a token), stored lower case.
    pub(crate) fn header(
        &self,
        var: &'static str,
        default: HeaderName,
    ) -> Result<HeaderName, ConfigError> {
        // Set but empty is a mistake here, not "unset": no header would
        // carry the key.
        match (self.0)(var) {
            None => Ok(default),
            Some(name) if name.trim().is_empty() => Err(self.error(var, "is empty")),
            Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| self.error(var, format!("{:?} is not a header name", name.trim()))),
        }
    }

    /// A comma-separated list of JSON Pointers; unset or empty: none. An
    /// empty entry (`","`, `"/a,"`) is refused, not skipped.
    pub(crate) fn pointers(&self, var: &'static str) -> Result<Vec<JsonPointer>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .map(|p| {
                if p.is_empty() {
                    return Err(self.error(var, format!("{raw:?} has an empty entry")));
                }
                p.parse().map_err(|e| self.error(var, format!("{e}")))
            })
            .collect()
    }

    /// A size in bytes, zero allowed; unset: zero.
    pub(crate) fn bytes(&self, var: &'static str) -> Result<usize, ConfigError> {
        Ok(self
            .whole(var)?
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    /// A caller scope list; unset: the default scope.
    pub(crate) fn scope(&self, var: &'static str) -> Result<ApiGatewayScope, ConfigError> {
        match self.get(var) {
            None => Ok(ApiGatewayScope::default()),
            Some(list) => list.parse().map_err(|e| self.error(var, format!("{e}"))),
        }
    }

    pub(crate) fn methods(
        &self,
        var: &'static str,
        default: Vec<Method>,
    ) -> Result<Vec<Method>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let parsed = raw
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| self.error(var, format!("{m:?} is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(self.error(var, "lists no method"));
        }
        Ok(parsed)
    }
}
