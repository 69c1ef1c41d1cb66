//! Whose key is it: the caller scope hashed into every record key, so that
//! one caller's `Idempotency-Key` can never replay another caller's
//! response.
//!
//! [`CallerScope`] is the pluggable part; [`ApiGatewayScope`] is the
//! default, reading every identity API Gateway can deliver, in a
//! configurable order. Whichever is used, a request in a Lambda tenant
//! (tenant isolation mode) is scoped within its tenant ([`caller_scope`]).
//!
//! The sources of [`ApiGatewayScope`]:
//!
//! | source | where it is read | scope |
//! |---|---|---|
//! | `jwt` | HTTP API JWT authorizer claims; REST Cognito authorizer `claims` | issuer and `sub` |
//! | `authorizer` | REST Lambda authorizer `principalId`; HTTP API Lambda authorizer context (`authorizer.lambda`) | the principal, or the whole context (sorted) |
//! | `authorizer:<field>` | the same, one named context field | that field |
//! | `iam` | the caller's IAM ARN (v1 `identity.userArn`, v2 `authorizer.iam.userArn`), and the Cognito identity id when the credentials came from an identity pool | the full ARN (session name included), plus that identity id |
//! | `iam-role` | the same ARN | for an assumed role, the role alone, without its session name |
//! | `api-key` | REST API key id | the key id |
//! | `anonymous` | always matches | one shared scope |
//!
//! A source whose container is missing, `null`, empty or holds nothing but
//! `null`s (`"authorizer": {"claims": null, "scopes": null}`, as HTTP API
//! payload 1.0 events carry for a route without an authorizer) gives no
//! identity, and the next source is tried; a missing or `null` value (a
//! `principalId`, a `userArn`, an `apiKeyId`) is no identity either. A
//! source that is present but yields nothing usable (JWT claims without
//! `sub`, an empty principal or ARN) refuses the request rather than
//! falling through to a weaker identity. A request that no source matches
//! is refused with `403`: anonymous callers share one key space, so they
//! are accepted only when `anonymous` is listed.
//!
//! Every shape the layer reads is covered: REST (v1) and HTTP API payload
//! 1.0 events (the same shape: the whole `authorizer` object, Cognito or
//! JWT `claims` included, and `identity`), HTTP API payload 2.0 and
//! function URL events (`authorizer.jwt`, `authorizer.lambda`,
//! `authorizer.iam`).
//!
//! Different people often reach an API through one IAM role (IAM Identity
//! Center permission sets, Cognito identity pools, web identity), told apart
//! only by the session name or the Cognito identity. So `iam` keeps both: a
//! retry keeps its scope as long as its session name does, which is the
//! case for Identity Center (the user's name), Cognito (the identity id)
//! and the roles of EC2, ECS and Lambda (the instance, task or function). A
//! caller whose session names change with every credential refresh, and
//! which trusts everyone in its role, can use `iam-role` instead.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizer;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::Value;

/// Decides which caller a request belongs to.
///
/// Implemented for closures `Fn(&Request) -> Option<String>`.
pub trait CallerScope: Send + Sync + 'static {
    /// The caller's scope, or `None` to refuse the request with `403`.
    fn scope(&self, req: &Request) -> Option<String>;
}

impl<F> CallerScope for F
where
    F: Fn(&Request) -> Option<String> + Send + Sync + 'static,
{
    fn scope(&self, req: &Request) -> Option<String> {
        self(req)
    }
}

/// The scope `req`'s records live under, whatever [`CallerScope`] is in
/// use: its answer, within the request's Lambda tenant when it has one.
///
/// Under Lambda's tenant isolation mode every invocation carries its
/// tenant's id (`Context::tenant_id`, from `Lambda-Runtime-Aws-Tenant-Id`),
/// and one caller scope (the anonymous one, or the same JWT subject) can
/// occur in many tenants; the tenant is made part of the scope here, so
/// that no tenant reaches another's records. Whatever a function keys by
/// caller (say, who owns what a request created) should be keyed by this
/// too. `None`: the caller is refused (`403`).
pub fn caller_scope<S: CallerScope + ?Sized>(scope: &S, req: &Request) -> Option<String> {
    let caller = scope.scope(req)?;
    match req
        .lambda_context_ref()
        .and_then(|c| c.tenant_id.as_deref())
    {
        // Length-prefixed, so that no tenant and caller pair can imitate
        // another.
        Some(tenant) => Some(format!("tenant:{}:{tenant}{caller}", tenant.len())),
        None => Some(caller),
    }
}

/// One identity source of [`ApiGatewayScope`] (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeSource {
    /// JWT issuer and subject.
    Jwt,
    /// A Lambda authorizer's principal or context, or one named field.
    Authorizer(Option<String>),
    /// The IAM caller: its full ARN, and its Cognito identity if any.
    Iam,
    /// The IAM role, without the session name (opt in: it merges everyone
    /// who assumes the role).
    IamRole,
    /// The REST API key id.
    ApiKey,
    /// Any request: one shared, anonymous scope.
    Anonymous,
}

/// The default scope: API Gateway identities, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiGatewayScope {
    sources: Vec<ScopeSource>,
}

impl Default for ApiGatewayScope {
    /// `jwt,authorizer,iam,api-key`: every identity, no anonymous callers.
    fn default() -> Self {
        Self::new(vec![
            ScopeSource::Jwt,
            ScopeSource::Authorizer(None),
            ScopeSource::Iam,
            ScopeSource::ApiKey,
        ])
    }
}

impl ApiGatewayScope {
    /// A scope trying `sources` in order.
    pub fn new(sources: Vec<ScopeSource>) -> Self {
        Self { sources }
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[ScopeSource] {
        &self.sources
    }

    /// Whether requests without an identity are accepted (in one shared
    /// scope). Worth a warning at start-up.
    pub fn allows_anonymous(&self) -> bool {
        self.sources.contains(&ScopeSource::Anonymous)
    }
}

/// Why a scope list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a scope source (jwt, authorizer, authorizer:<field>, iam, api-key, anonymous)"
)]
pub struct ScopeParseError(String);

impl FromStr for ApiGatewayScope {
    type Err = ScopeParseError;

    /// Parses a comma-separated list such as `jwt,authorizer:userId,anonymous`.
    fn from_str(list: &str) -> Result<Self, ScopeParseError> {
        let sources = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "jwt" => Ok(ScopeSource::Jwt),
                "authorizer" => Ok(ScopeSource::Authorizer(None)),
                "iam" => Ok(ScopeSource::Iam),
                "iam-role" => Ok(ScopeSource::IamRole),
                "api-key" => Ok(ScopeSource::ApiKey),
                "anonymous" => Ok(ScopeSource::Anonymous),
                other => match other.strip_prefix("authorizer:") {
                    Some(field) if !field.is_empty() => {
                        Ok(ScopeSource::Authorizer(Some(field.to_owned())))
                    }
                    _ => Err(ScopeParseError(other.to_owned())),
                },
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sources.is_empty() {
            return Err(ScopeParseError(list.to_owned()));
        }
        Ok(Self::new(sources))
    }
}

impl fmt::Display for ApiGatewayScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                ScopeSource::Jwt => "jwt".to_owned(),
                ScopeSource::Authorizer(None) => "authorizer".to_owned(),
                ScopeSource::Authorizer(Some(field)) => format!("authorizer:{field}"),
                ScopeSource::Iam => "iam".to_owned(),
                ScopeSource::IamRole => "iam-role".to_owned(),
                ScopeSource::ApiKey => "api-key".to_owned(),
                ScopeSource::Anonymous => "anonymous".to_owned(),
            })
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What one source found.
enum Found {
    Scope(String),
    Absent,
    /// Present but unusable: refuse, do not fall through.
    Invalid,
}

impl CallerScope for ApiGatewayScope {
    fn scope(&self, req: &Request) -> Option<String> {
        let ctx = req.request_context_ref();
        for source in &self.sources {
            match read(source, ctx) {
                Found::Scope(scope) => return Some(scope),
                Found::Invalid => return None,
                Found::Absent => {}
            }
        }
        None
    }
}

fn read(source: &ScopeSource, ctx: Option<&RequestContext>) -> Found {
    if *source == ScopeSource::Anonymous {
        return Found::Scope("anonymous".to_owned());
    }
    let Some(ctx) = ctx else {
        return Found::Absent;
    };
    match source {
        ScopeSource::Jwt => jwt(ctx),
        ScopeSource::Authorizer(field) => lambda_authorizer(ctx, field.as_deref()),
        ScopeSource::Iam => iam(ctx, false),
        ScopeSource::IamRole => iam(ctx, true),
        ScopeSource::ApiKey => match ctx {
            RequestContext::ApiGatewayV1(v1) => tagged("apikey", v1.identity.api_key_id.as_deref()),
            _ => Found::Absent,
        },
        ScopeSource::Anonymous => Found::Absent,
    }
}

/// `tag:<value>`, or `Invalid` for an empty value, `Absent` for none.
fn tagged(tag: &str, value: Option<&str>) -> Found {
    match value {
        None => Found::Absent,
        Some("") => Found::Invalid,
        Some(v) => Found::Scope(format!("{tag}:{v}")),
    }
}

fn authorizer(ctx: &RequestContext) -> Option<&ApiGatewayRequestAuthorizer> {
    ctx.authorizer()
}

/// Whether an identity container says nothing: `null`, or an object or
/// array with no member other than `null`.
fn says_nothing(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(members) => members.values().all(Value::is_null),
        Value::Array(items) => items.iter().all(Value::is_null),
        _ => false,
    }
}

fn jwt(ctx: &RequestContext) -> Found {
    let Some(auth) = authorizer(ctx) else {
        return Found::Absent;
    };
    // HTTP API 2.0: `authorizer.jwt.claims`; REST Cognito and HTTP API
    // 1.0 JWT authorizers: `authorizer.claims`.
    let v1_claims = auth.fields.get("claims").filter(|c| !says_nothing(c));
    let (iss, sub) = match (&auth.jwt, v1_claims) {
        (Some(jwt), _) if !jwt.claims.is_empty() => (
            jwt.claims.get("iss").map(String::as_str),
            jwt.claims.get("sub").map(String::as_str),
        ),
        (_, Some(claims)) => (
            claims.get("iss").and_then(Value::as_str),
            claims.get("sub").and_then(Value::as_str),
        ),
        _ => return Found::Absent,
    };
    match sub {
        None | Some("") => Found::Invalid,
        // Length-prefixed so no (issuer, subject) pair can imitate another.
        Some(sub) => {
            let iss = iss.unwrap_or("");
            Found::Scope(format!("jwt:{}:{iss}{sub}", iss.len()))
        }
    }
}

fn lambda_authorizer(ctx: &RequestContext, field: Option<&str>) -> Found {
    let Some(auth) = authorizer(ctx) else {
        return Found::Absent;
    };
    let fields = &auth.fields;
    let is_v1 = matches!(ctx, RequestContext::ApiGatewayV1(_));
    // A REST Cognito (or HTTP API 1.0 JWT) authorizer also lands in
    // `fields`, as `claims`: that is the `jwt` source's.
    let cognito = is_v1 && fields.get("claims").is_some_and(|c| !says_nothing(c));
    if fields.values().all(Value::is_null) || (cognito && field.is_none()) {
        return Found::Absent;
    }
    // A `null` member is no member.
    let member = |name: &str| fields.get(name).filter(|v| !v.is_null());
    match field {
        Some(name) => match member(name) {
            None => Found::Absent,
            Some(value) => tagged(&format!("lambda.{name}"), Some(&scalar(value))),
        },
        None if is_v1 => match member("principalId") {
            None => Found::Absent,
            Some(value) => tagged("lambda", Some(&scalar(value))),
        },
        // HTTP API simple responses carry no principal: the whole context,
        // sorted, is the identity (pin one field with `authorizer:<field>`
        // if the context holds anything that changes between requests).
        None => match member("principalId") {
            Some(value) => tagged("lambda", Some(&scalar(value))),
            None => {
                let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
                Found::Scope(format!(
                    "lambda-context:{}",
                    serde_json::to_string(&sorted).unwrap_or_default()
                ))
            }
        },
    }
}

/// A context value as text: strings as they are, anything else as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn iam(ctx: &RequestContext, role_only: bool) -> Found {
    let (arn, cognito) = match ctx {
        RequestContext::ApiGatewayV1(v1) => (
            v1.identity.user_arn.as_deref(),
            v1.identity.cognito_identity_id.as_deref(),
        ),
        _ => {
            let iam = authorizer(ctx).and_then(|a| a.iam.as_ref());
            (
                iam.and_then(|iam| iam.user_arn.as_deref()),
                iam.and_then(|iam| iam.cognito_identity.as_ref())
                    .and_then(|c| c.identity_id.as_deref()),
            )
        }
    };
    match (arn, role_only) {
        (None, _) => Found::Absent,
        (Some(""), _) => Found::Invalid,
        (Some(arn), true) => Found::Scope(format!("iam-role:{}", without_session_name(arn))),
        // Length-prefixed, so an ARN can never imitate an ARN plus identity.
        (Some(arn), false) => {
            Found::Scope(format!("iam:{}:{arn}{}", arn.len(), cognito.unwrap_or("")))
        }
    }
}

/// `arn:aws:sts::1:assumed-role/Role/session` → `arn:aws:sts::1:assumed-role/Role`.
fn without_session_name(arn: &str) -> &str {
    match arn.split_once(":assumed-role/") {
        Some((_, role_and_session)) => match role_and_session.find('/') {
            Some(slash) => &arn[..arn.len() - role_and_session.len() + slash],
            None => arn,
        },
        None => arn,
    }
}

#[cfg(test)]
mod tests;
